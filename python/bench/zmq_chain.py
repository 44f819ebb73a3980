"""The seed's way, for `pinwheel bench agent --python`: Python processes on
pyzmq REQ/REP over TCP with JSON bodies (`send_json`/`recv_json`).

    python3 zmq_chain.py --cpus 0,1 --hops 1 --size 64 --msgs 100000

hops 1: a client on CPU A calls a server on CPU B (one Python hop).
hops 2: the client on CPU A calls a forwarder on CPU B, which calls a
server on CPU A for every request before it answers (the chain of two
Python processes behind a caller).

    python3 zmq_chain.py --cpus 0,1 --connect 7220 --action health_check

connect: the client on CPU A calls a server already listening on that
loopback port (`pinwheel bench legacy`: the legacy gateway in front of a
native agent) with `{"action": ACTION, "data": ...}`; nothing is started
or stopped.

Prints one round trip time per line, nanoseconds (time.perf_counter_ns
around send_json + recv_json), after a warm-up of msgs / 10 calls; the
servers are stopped when the client is done.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import zmq


def serve(port: int, cpu: int, forward_port: int) -> None:
    os.sched_setaffinity(0, {cpu})
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(f"tcp://127.0.0.1:{port}")
    req = None
    if forward_port:
        req = ctx.socket(zmq.REQ)
        req.connect(f"tcp://127.0.0.1:{forward_port}")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        request = rep.recv_json()
        if request.get("stop"):
            if req is not None:
                req.send_json(request)
                req.recv_json()
            rep.send_json({"status": "success"})
            return
        if req is not None:
            req.send_json(request)
            answer = req.recv_json()
            if answer.get("status") != "success":
                rep.send_json(answer)
                continue
        rep.send_json({"status": "success", "data": request["data"]})


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, cpu: int, forward_port: int) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--cpu", str(cpu),
         "--forward", str(forward_port)], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"ready"
    return child


def client(cpus: list, hops: int, size: int, msgs: int, connect: int, action: str) -> None:
    a, b = cpus
    servers = []
    back = 0
    if hops == 2 and not connect:
        back = free_port()
        servers.append(start_server(back, a, 0))
    front = connect or free_port()
    if not connect:
        servers.append(start_server(front, b, back))
    os.sched_setaffinity(0, {a})
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{front}")
    # {"data": "xxx..."} is `size` bytes of JSON (the action's key and
    # value come on top when there is one).
    request = {"data": "x" * max(0, size - len('{"data": ""}'))}
    if action:
        request = {"action": action, **request}
    clock = time.perf_counter_ns
    out = []
    for i in range(msgs // 10 + msgs):
        began = clock()
        req.send_json(request)
        answer = req.recv_json()
        took = clock() - began
        if answer.get("status") != "success":
            raise SystemExit(f"bad answer: {answer}")
        if i >= msgs // 10:
            out.append(took)
    if not connect:
        req.send_json({"stop": True})
        req.recv_json()
    for server in servers:
        server.wait(timeout=10)
    sys.stdout.write("\n".join(map(str, out)))
    sys.stdout.write("\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cpus", default="0,1")
    p.add_argument("--hops", type=int, choices=[1, 2], default=1)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--msgs", type=int, default=100_000)
    p.add_argument("--serve", type=int, default=0)
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--forward", type=int, default=0)
    p.add_argument("--connect", type=int, default=0)
    p.add_argument("--action", default="")
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.cpu, args.forward)
    else:
        cpus = [int(c) for c in args.cpus.split(",")]
        client(cpus, args.hops, args.size, args.msgs, args.connect, args.action)


if __name__ == "__main__":
    main()
