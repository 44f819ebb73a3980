"""A test agent: method `use` holds the GPU model its JSON body names
(`{"model": "m", "hold_s": 1.0}`) in a `with agent.model(...)` block for
`hold_s` seconds and answers `{"held": name, "drill": agent.drill}`, or
status 409 with the denial when the daemon refuses the model; method
`drill` answers the drill the agent is under, as text, through
`req.reply`, which applies it."""

import time

import pinwheel


def main() -> None:
    agent = pinwheel.Agent()
    for req in agent.requests():
        if req.method == "drill":
            req.reply(agent.drill.encode())
            continue
        ask = req.json()
        try:
            with agent.model(ask["model"], timeout=20.0) as use:
                assert use.held, use
                time.sleep(ask.get("hold_s", 0.0))
                answer = {"held": use.name, "drill": agent.drill}
            assert not use.held, use
        except pinwheel.ModelDenied as err:
            req.reply({"denied": str(err)}, status=409)
            continue
        req.reply(answer)


if __name__ == "__main__":
    main()
