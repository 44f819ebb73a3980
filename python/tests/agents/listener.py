"""A test agent on pinwheel's rings: it keeps the events heard on "news"
(a thread iterates the subscription) and answers every request with them,
as a seed reply: {"status": "success", "data": {"heard": [...]}}."""

import json
import threading

import pinwheel


def main() -> None:
    agent = pinwheel.Agent()
    heard = []
    lock = threading.Lock()

    def listen() -> None:
        for event in agent.subscribe("news"):
            with lock:
                heard.append(event.body.decode(errors="replace"))

    threading.Thread(target=listen, daemon=True).start()
    for req in agent.requests():
        with lock:
            answer = {"status": "success", "message": "heard", "data": {"heard": list(heard)}}
        req.reply(json.dumps(answer).encode())


if __name__ == "__main__":
    main()
