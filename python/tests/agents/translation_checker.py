"""A test agent: for every request, four threads call
CloudTranslationService at once with the seed's `translate` contract
(a dict body, so JSON) and check the answers; replies 0 when all four are
right, 500 otherwise."""

import sys
from concurrent.futures import ThreadPoolExecutor

import pinwheel

SERVICE = "CloudTranslationService"


def one(agent: pinwheel.Agent) -> bool:
    rep = agent.call(SERVICE, "translate", {"action": "translate", "text": "hello world",
                                            "source_lang": "en", "target_lang": "fr"},
                     timeout=1.0)
    answer = rep.json()
    if answer != {"status": "success", "data": {"translated_text": "bonjour monde",
                                                "source_lang": "en", "target_lang": "fr"}}:
        print(f"translate answered {answer}", file=sys.stderr)
        return False
    # The method stands in for a missing action; an unknown one is an error.
    by_method = agent.call(SERVICE, "translate", {"text": "hello"}, timeout=1.0).json()
    unknown = agent.call(SERVICE, "translate", {"action": "fly"}, timeout=1.0).json()
    if by_method["data"]["translated_text"] != "bonjour" or unknown["status"] != "error":
        print(f"by method {by_method}, unknown action {unknown}", file=sys.stderr)
        return False
    return True


def main() -> None:
    agent = pinwheel.Agent()
    with ThreadPoolExecutor(4) as pool:
        for req in agent.requests():
            try:
                good = all(pool.map(lambda _: one(agent), range(4)))
            except pinwheel.Error as err:
                print(f"a call raised {type(err).__name__}: {err}", file=sys.stderr)
                good = False
            req.reply(req.body, status=0 if good else 500)


if __name__ == "__main__":
    main()
