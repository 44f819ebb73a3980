"""A test agent on pinwheel's rings: for every request it calls the first
agent of its manifest's `calls` with the same method and body and answers
with that agent's reply body; a failed call is answered with the callee's
status and body (a timeout: 504 and a seed error)."""

import json

import pinwheel

STATUS_TIMEOUT = 504


def main() -> None:
    agent = pinwheel.Agent()
    callee = agent.calls[0]
    for req in agent.requests():
        try:
            reply = agent.call(callee, req.method, req.body, timeout=1.0)
            req.reply(reply.body)
        except pinwheel.CallError as err:
            req.reply(err.body, status=err.status)
        except pinwheel.Error as err:
            answer = {"status": "error", "message": f"timed out: {err}", "data": None}
            req.reply(json.dumps(answer).encode(), status=STATUS_TIMEOUT)


if __name__ == "__main__":
    main()
