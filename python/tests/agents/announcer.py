"""A test agent on pinwheel's rings: every request it gets is published on
"alerts" as it is, then answered with a seed success."""

import pinwheel

DONE = b'{"status": "success", "message": "published", "data": null}'


def main() -> None:
    agent = pinwheel.Agent()
    for req in agent.requests():
        agent.publish("alerts", req.body)
        req.reply(DONE)


if __name__ == "__main__":
    main()
