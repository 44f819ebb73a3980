"""The legacy ZeroMQ gateway against real daemons and pyzmq: unchanged
seed clients and agents (REQ/REP with the seed's JSON contract) beside
agents on pinwheel's rings, both ways."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zmq

from conftest import HANG_GUARD_S, HERE, free_port, python_agent, required_env

ZMQ_TRANSLATION = HERE / "agents" / "zmq_translation.py"
RELAY = HERE / "agents" / "relay.py"
LEGACY_BIND = ["--legacy-bind", "127.0.0.1"]


def agent(name: str, kind: str, extra: str) -> str:
    return (f'[[agent]]\nname = "{name}"\nhost = "h"\nrole = "r"\nkind = "{kind}"\n'
            f"{extra}\n\n")


def twin(port: int) -> str:
    return agent("SystemDigitalTwin", "native", f'native = "registry"\nlegacy_rep = {port}')


def client(port: int) -> zmq.Socket:
    """A REQ socket to a legacy port that fails, not hangs, without a reply."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(HANG_GUARD_S * 1000))
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def ask(port: int, request) -> dict:
    """One request on a fresh socket: a dict as JSON, bytes as they are,
    a list as a multipart message."""
    sock = client(port)
    try:
        if isinstance(request, bytes):
            sock.send(request)
        elif isinstance(request, list):
            sock.send_multipart(request)
        else:
            sock.send_json(request)
        return sock.recv_json()
    except zmq.Again:
        pytest.fail(f"no reply on port {port} within {HANG_GUARD_S} s to {request!r:.80}")
    finally:
        sock.close()


class LegacyAgent:
    """The unchanged seed agent (tests/agents/zmq_translation.py) run by
    the test's own Python, outside pinwheel."""

    def __init__(self, port: int, *args: str):
        self.child = subprocess.Popen(
            [sys.executable, str(ZMQ_TRANSLATION), "--port", str(port), *args],
            stdout=subprocess.PIPE)
        if self.child.stdout.readline().strip() != b"ready":
            pytest.fail(f"the legacy agent did not start (exit {self.child.poll()})")

    def kill(self) -> None:
        self.child.kill()
        self.child.wait()


@pytest.fixture
def legacy_agents():
    started = []

    def start(port: int, *args: str) -> LegacyAgent:
        legacy = LegacyAgent(port, *args)
        started.append(legacy)
        return legacy

    yield start
    for legacy in started:
        legacy.kill()


def stop(daemon) -> dict:
    daemon.child.send_signal(signal.SIGTERM)
    return daemon.wait()


def test_eight_pyzmq_clients_at_once_get_the_native_and_the_synthetic_agents_answers(
        start_daemon):
    twin_port, echo_port = free_port(), free_port()
    manifest = twin(twin_port) + agent("Echo", "synthetic", f"cpu = 1\nlegacy_rep = {echo_port}")
    daemon = start_daemon(manifest, ["--rate", "0"] + LEGACY_BIND)
    rounds = 50

    def one_client(i: int) -> int:
        to_twin, to_echo = client(twin_port), client(echo_port)
        answered = 0
        for n in range(rounds):
            to_twin.send_json({"action": "health_check"})
            health = to_twin.recv_json()
            assert health["status"] == "success" and health["message"] == "healthy", health
            assert health["data"]["agents"] >= 1, health
            to_echo.send_json({"action": "work", "client": i, "n": n})
            work = to_echo.recv_json()
            assert work == {"status": "success", "message": "ok", "data": None}, work
            answered += 2
        to_twin.close()
        to_echo.close()
        return answered

    with ThreadPoolExecutor(8) as pool:
        answered = sum(pool.map(one_client, range(8)))

    assert answered == 8 * rounds * 2
    report = stop(daemon)
    ports = {p["port"]: p for p in report["legacy"]["ports"]}
    for port in (twin_port, echo_port):
        assert ports[port]["messages"] == 8 * rounds, ports[port]
        assert ports[port]["errors"] == 0, ports[port]
        assert ports[port]["latency_ns"]["count"] == 8 * rounds, ports[port]


def test_the_mesh_calls_an_unchanged_pyzmq_rep_agent_and_gets_its_replies(
        start_daemon, legacy_agents):
    old_port, relay_port = free_port(), free_port()
    legacy_agents(old_port)
    manifest = (python_agent("Relay", RELAY, 1,
                             f'calls = ["CloudTranslationService"]\nlegacy_rep = {relay_port}')
                + agent("CloudTranslationService", "zmq",
                        f'endpoint = "tcp://127.0.0.1:{old_port}"'))
    daemon = start_daemon(manifest, ["--rate", "0"] + LEGACY_BIND)
    daemon.wait_for("Relay running", lambda: daemon.running("Relay"))

    for _ in range(20):
        reply = ask(relay_port, {"action": "translate", "text": "hello world"})
        assert reply == {"status": "success", "message": "translated",
                         "data": {"translated_text": "bonjour monde"}}, reply
    count = ask(relay_port, {"action": "count"})

    assert count["data"] == {"served": 21}, count
    zmq_agents = {a["name"]: a for a in daemon.agents_response()["legacy"]}
    assert zmq_agents["CloudTranslationService"]["kind"] == "zmq", zmq_agents
    report = stop(daemon)
    target = report["legacy"]["targets"][0]
    assert (target["agent"], target["calls"], target["errors"]) == (
        "CloudTranslationService", 21, 0), target
    routes = [r for r in report["routes"] if r["legacy"]]
    assert routes and routes[0]["to"] == "CloudTranslationService", report["routes"]


def test_a_legacy_agent_registers_with_the_twin_and_is_found_by_name(
        start_daemon, legacy_agents):
    twin_port, old_port = free_port(), free_port()
    daemon = start_daemon(twin(twin_port), ["--rate", "0"] + LEGACY_BIND)

    legacy_agents(old_port, "--register", str(twin_port), "--name", "OldTranslator")
    found = ask(twin_port, {"action": "get_agent_endpoint", "agent_name": "OldTranslator"})
    endpoint = found["data"]["endpoint"]
    translated = ask(int(endpoint.rsplit(":", 1)[1]),
                     {"action": "translate", "text": "hello"})
    twin_itself = ask(twin_port,
                      {"action": "get_agent_endpoint", "agent_name": "SystemDigitalTwin"})

    assert found["status"] == "success" and endpoint == f"tcp://127.0.0.1:{old_port}", found
    assert translated["data"]["translated_text"] == "bonjour", translated
    assert twin_itself["data"]["endpoint"] == f"tcp://127.0.0.1:{twin_port}", twin_itself
    legacy = {a["name"]: a for a in daemon.agents_response()["legacy"]}
    assert legacy["OldTranslator"]["kind"] == "legacy", legacy
    assert legacy["OldTranslator"]["endpoint"] == endpoint, legacy
    assert legacy["OldTranslator"]["registry"] == "SystemDigitalTwin", legacy


def test_bad_input_gets_an_error_reply_and_a_counter_and_nothing_else(start_daemon):
    twin_port, echo_port = free_port(), free_port()
    manifest = twin(twin_port) + agent("Echo", "synthetic", f"legacy_rep = {echo_port}")
    legacy = f'[legacy]\nbind = "127.0.0.1"\nmax_message_bytes = 4096\n'
    daemon = start_daemon(manifest, ["--rate", "0"], topology_extra=legacy)
    bad = [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"agent_name": "X"}, 'no "action"'),
        ({"action": "two words"}, "not a method name"),
        (b'{"action": "work", "pad": "' + b"x" * 8192 + b'"}', "over the limit of 4096"),
        ([b'{"action": "work"}', b"more"], "one JSON frame"),
    ]

    for request, why in bad:
        reply = ask(echo_port, request)
        assert reply["status"] == "error" and why in reply["message"], (why, reply)
    unknown = ask(twin_port, {"action": "dance"})
    good = ask(echo_port, {"action": "work"})

    assert unknown == {"status": "error", "message": 'unknown action "dance"', "data": None}
    assert good["status"] == "success", good
    ports = {p["port"]: p for p in daemon.agents_response()["legacy_ports"]}
    assert (ports[echo_port]["errors"], ports[echo_port]["refused"]) == (len(bad), len(bad))
    assert (ports[twin_port]["errors"], ports[twin_port]["refused"]) == (1, 0)
    with urllib.request.urlopen(f"http://{daemon.addr}/metrics", timeout=5) as rsp:
        metrics = rsp.read().decode()
    errors = re.search(
        r'^pinwheel_legacy_errors_total\{port="%d",agent="Echo",kind="rep"\} (\d+)$'
        % echo_port, metrics, re.M)
    assert errors and int(errors.group(1)) == len(bad), metrics
    assert daemon.child.poll() is None, daemon.log()
    assert all(a["state"] != "isolated" for a in daemon.agents().values()), daemon.agents()


def test_a_zmq_agent_killed_mid_call_is_answered_as_an_error_and_the_route_recovers(
        start_daemon, legacy_agents):
    old_port, relay_port = free_port(), free_port()
    old = legacy_agents(old_port)
    manifest = (python_agent("Relay", RELAY, 1,
                             f'calls = ["CloudTranslationService"]\nlegacy_rep = {relay_port}')
                + agent("CloudTranslationService", "zmq",
                        f'endpoint = "tcp://127.0.0.1:{old_port}"'))
    daemon = start_daemon(manifest, ["--rate", "0"] + LEGACY_BIND)
    daemon.wait_for("Relay running", lambda: daemon.running("Relay"))
    assert ask(relay_port, {"action": "translate", "text": "hello"})["status"] == "success"

    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(ask, relay_port, {"action": "hang"})
        # The agent takes the request and dies in it.
        time.sleep(0.3)
        old.kill()
        answer = hung.result(timeout=HANG_GUARD_S)
    assert answer["status"] == "error", answer

    legacy_agents(old_port)
    recovered = []

    def translated() -> bool:
        reply = ask(relay_port, {"action": "translate", "text": "world"})
        recovered.append(reply)
        return reply["status"] == "success"

    daemon.wait_for("the route to recover", translated)
    assert recovered[-1]["data"]["translated_text"] == "monde", recovered
    report = stop(daemon)
    target = report["legacy"]["targets"][0]
    assert target["timeouts"] >= 1 and target["reconnects"] >= 1, target


def test_a_zmq_agent_with_a_command_is_started_pinned_and_restarted_by_the_daemon(start_daemon):
    old_port, relay_port = free_port(), free_port()
    python = required_env("PINWHEEL_PYTHON")
    manifest = (python_agent("Relay", RELAY, 1,
                             f'calls = ["CloudTranslationService"]\nlegacy_rep = {relay_port}')
                + agent("CloudTranslationService", "zmq",
                        f'endpoint = "tcp://127.0.0.1:{old_port}"\ncpu = 0\nuser = "nobody"\n'
                        f'command = ["{python}", "{ZMQ_TRANSLATION}", "--port", "{old_port}"]'))
    daemon = start_daemon(manifest, ["--rate", "0"] + LEGACY_BIND)
    for name in ("Relay", "CloudTranslationService"):
        daemon.wait_for(f"{name} running", lambda name=name: daemon.running(name))

    def translated() -> bool:
        return ask(relay_port, {"action": "translate", "text": "hello"})["status"] == "success"

    daemon.wait_for("a first translation", translated)
    old = daemon.agent("CloudTranslationService")
    status = Path(f"/proc/{old['pid']}/status").read_text()
    allowed = next(line.split(":")[1].strip() for line in status.splitlines()
                   if line.startswith("Cpus_allowed_list:"))
    assert (allowed, old["user"]) == ("0", "nobody"), (allowed, old)
    os.kill(old["pid"], signal.SIGKILL)
    daemon.wait_for("the legacy agent restarted",
                    lambda: daemon.agent("CloudTranslationService").get("restarts", 0) >= 1
                    and daemon.running("CloudTranslationService"))
    daemon.wait_for("the route to recover", translated)

    assert daemon.agent("CloudTranslationService")["pid"] != old["pid"]
    report = stop(daemon)
    process = next(p for p in report["processes"] if p["agent"] == "CloudTranslationService")
    assert (process["kind"], process["restarts"], process["cpu_seen"]) == ("zmq", 1, 0), process


def test_topics_cross_the_edge_both_ways(start_daemon):
    alerts_port, announce_port = free_port(), free_port()
    news_port, listen_port = free_port(), free_port()
    manifest = (python_agent("Announcer", HERE / "agents" / "announcer.py", 1,
                             f'publishes = ["alerts"]\nlegacy_rep = {announce_port}\n'
                             f"legacy_pub = {alerts_port}")
                + python_agent("Listener", HERE / "agents" / "listener.py", 0,
                               f'subscribes = ["news"]\nlegacy_rep = {listen_port}')
                + agent("OldNews", "zmq",
                        f'endpoint = "tcp://127.0.0.1:{free_port()}"\nlegacy_pub = {news_port}\n'
                        'publishes = ["news"]'))
    news = zmq.Context.instance().socket(zmq.PUB)
    news.setsockopt(zmq.LINGER, 0)
    news.bind(f"tcp://127.0.0.1:{news_port}")
    daemon = start_daemon(manifest, ["--rate", "0"] + LEGACY_BIND)
    for name in ("Announcer", "Listener"):
        daemon.wait_for(f"{name} running", lambda name=name: daemon.running(name))
    alerts = zmq.Context.instance().socket(zmq.SUB)
    alerts.setsockopt(zmq.LINGER, 0)
    alerts.setsockopt(zmq.SUBSCRIBE, b"alerts")
    alerts.connect(f"tcp://127.0.0.1:{alerts_port}")
    out = []

    def announced() -> bool:
        # A SUB hears only what is published after it connected: ask again.
        ask(announce_port, {"action": "announce", "level": "high"})
        if alerts.poll(100):
            out.append(alerts.recv_multipart())
        return bool(out)

    def heard() -> bool:
        news.send_multipart([b"news", b'{"headline": "pinwheel ships"}'])
        return bool(ask(listen_port, {"action": "heard"})["data"]["heard"])

    daemon.wait_for("a legacy subscriber to hear the announcer", announced)
    daemon.wait_for("the listener to hear the legacy publisher", heard)

    topic, body = out[0]
    assert topic == b"alerts"
    assert json.loads(body) == {"action": "announce", "level": "high"}, body
    last = ask(listen_port, {"action": "heard"})["data"]["heard"][-1]
    assert json.loads(last) == {"headline": "pinwheel ships"}, last
    report = stop(daemon)
    ports = {p["port"]: p for p in report["legacy"]["ports"]}
    assert ports[alerts_port]["kind"] == "pub" and ports[alerts_port]["messages"] >= 1, ports
    assert report["legacy"]["events_in"] >= 1, report["legacy"]
    news.close()
    alerts.close()
