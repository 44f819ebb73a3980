"""An unchanged seed agent for the legacy gateway's tests: CloudTranslation
Service's ZeroMQ REQ/REP loop as the seed runs it (pyzmq, JSON
`{"action": ...}` in, `{"status": ..., "message": ..., "data": ...}` out),
knowing nothing of pinwheel.

    python3 zmq_translation.py --port 5592 [--register 7220 --name Old]

With --register it first registers itself with the SystemDigitalTwin at
that port (`register_agent`), as the seed's BaseAgent does. It prints
"ready" once bound. The action "hang" never answers (a request the agent
dies in); "count" answers how many requests it served.
"""

import argparse
import sys
import time

import zmq


def translate(text: str) -> str:
    words = {"hello": "bonjour", "world": "monde"}
    return " ".join(words.get(word, word) for word in text.split())


def handle(request: dict, served: int) -> dict:
    action = request.get("action")
    if action == "translate":
        return {"status": "success", "message": "translated",
                "data": {"translated_text": translate(request.get("text", ""))}}
    if action == "count":
        return {"status": "success", "message": "served", "data": {"served": served}}
    if action == "hang":
        time.sleep(3600)
    return {"status": "error", "message": f"unknown action: {action}", "data": None}


def register(ctx: zmq.Context, twin_port: int, name: str, port: int) -> None:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 10_000)
    req.connect(f"tcp://127.0.0.1:{twin_port}")
    req.send_json({"action": "register_agent", "agent_name": name,
                   "registration_data": {"name": name, "host": "127.0.0.1", "port": port}})
    reply = req.recv_json()
    if reply.get("status") != "success":
        sys.exit(f"registration refused: {reply}")
    req.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--register", type=int, default=0)
    parser.add_argument("--name", default="Translation")
    args = parser.parse_args()
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(f"tcp://127.0.0.1:{args.port}")
    if args.register:
        register(ctx, args.register, args.name, args.port)
    print("ready", flush=True)
    served = 0
    while True:
        request = rep.recv_json()
        served += 1
        rep.send_json(handle(request, served))


if __name__ == "__main__":
    main()
