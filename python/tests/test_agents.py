"""The `pinwheel` package against real daemons: Python agents as
`process` agents (the venv's python3 running a script), pinned,
supervised and restarted like any other."""

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import pinwheel
from conftest import (
    EXAMPLES, HANG_GUARD_S, HERE, assert_every_request_accounted_for,
    assert_every_request_answered,
    coordinator, prober, python_agent,
)

ECHO = EXAMPLES / "echo.py"


def test_an_agent_outside_pinwheel_raises_pinwheel_error_naming_the_fix():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINWHEEL_AGENT")}
    env["PINWHEEL_AGENT_SOCKET"] = "/nonexistent/agent.sock"
    code = (
        "import pinwheel\n"
        "try:\n    pinwheel.Agent()\n"
        "except pinwheel.Error as err:\n    print('error:', err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("error:") and "manifest" in out.stdout, out.stdout


def test_the_exceptions_form_one_hierarchy():
    assert issubclass(pinwheel.CallError, pinwheel.Error)
    assert issubclass(pinwheel.Timeout, pinwheel.Error)
    assert issubclass(pinwheel.ModelDenied, pinwheel.Error)
    assert issubclass(pinwheel.Error, Exception)


def test_a_chain_of_two_python_echo_agents_answers_every_request(start_daemon):
    manifest = (coordinator("Front")
                + python_agent("Front", ECHO, 1, 'calls = ["Back"]')
                + python_agent("Back", ECHO, 0))
    daemon = start_daemon(manifest, ["--rate", "200", "--duration", "4"])
    report = daemon.wait()
    assert_every_request_answered(report, daemon)
    names = {p["agent"]: p for p in report["processes"]}
    assert set(names) >= {"Front", "Back"}, report["processes"]


def test_a_killed_python_child_is_restarted_and_every_request_is_accounted_for(start_daemon):
    manifest = (coordinator("Front")
                + python_agent("Front", ECHO, 1, 'calls = ["Back"]')
                + python_agent("Back", ECHO, 0))
    daemon = start_daemon(manifest, ["--rate", "500", "--duration", "8"])
    daemon.wait_for("Back running", lambda: daemon.running("Back"))
    time.sleep(2)
    pid = daemon.agent("Back")["pid"]
    os.kill(pid, signal.SIGKILL)
    daemon.wait_for("Back restarted", lambda: daemon.agent("Back").get("restarts", 0) >= 1
                    and daemon.running("Back"))
    assert daemon.agent("Back")["pid"] != pid
    report = daemon.wait()
    assert_every_request_accounted_for(report)
    back = next(p for p in report["processes"] if p["agent"] == "Back")
    assert back["restarts"] >= 1, back


def test_the_translation_port_answers_the_seed_contract_to_callers_on_four_threads(start_daemon):
    manifest = (coordinator("Checker")
                + python_agent("Checker", HERE / "agents" / "translation_checker.py", 1,
                               'calls = ["CloudTranslationService"]')
                + python_agent("CloudTranslationService",
                               EXAMPLES / "translation_service.py", 0))
    daemon = start_daemon(manifest, ["--rate", "50", "--duration", "3"])
    report = daemon.wait()
    # The checker answers 500 when any reply broke the contract.
    assert_every_request_answered(report, daemon)


def test_a_stopped_daemon_stops_a_python_child_without_sigkill(start_daemon):
    manifest = coordinator("Echo") + python_agent("Echo", ECHO, 0)
    daemon = start_daemon(manifest, ["--rate", "0"])
    daemon.wait_for("Echo running", lambda: daemon.running("Echo"))
    daemon.child.send_signal(signal.SIGTERM)
    report = daemon.wait()
    echo = next(p for p in report["processes"] if p["agent"] == "Echo")
    # SIGTERM ends python3 (its default action), before stop_timeout_ms.
    assert echo["last_exit"] == "killed by signal 15", echo


MODELS_AND_DRILLS = HERE / "agents" / "models_and_drills.py"
PY_MODELS = 'models = [{ name = "m", vram_mib = 1000 }, { name = "huge", vram_mib = 30000 }]'


def resident(daemon) -> list:
    with urllib.request.urlopen(f"http://{daemon.addr}/v1/gpus", timeout=2) as rsp:
        gpus = json.load(rsp)["gpus"]
    return [m["model"] for gpu in gpus for m in gpu["resident"]]


def test_a_with_block_holds_a_model_resident_and_a_denied_one_raises(start_daemon, monkeypatch):
    manifest = prober("Py") + python_agent("Py", MODELS_AND_DRILLS, 1, PY_MODELS)
    daemon = start_daemon(manifest, ["--rate", "0"])
    daemon.wait_for("Py running", lambda: daemon.running("Py"))
    agent = daemon.attach("Prober", monkeypatch)

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(agent.call, "Py", "use", {"model": "m", "hold_s": 3.0}, 30.0)
        daemon.wait_for("m resident while the block holds it", lambda: "m" in resident(daemon))
        assert held.result().json() == {"held": "m", "drill": "none"}

    with pytest.raises(pinwheel.CallError) as denied:
        agent.call("Py", "use", {"model": "huge"}, timeout=30.0)
    assert denied.value.status == 409
    assert "refused model" in json.loads(denied.value.body)["denied"]
    with pytest.raises(pinwheel.CallError) as unknown:
        agent.call("Py", "use", {"model": "elsewhere"}, timeout=30.0)
    assert "not one of this agent's `models`" in json.loads(unknown.value.body)["denied"]


def test_a_drill_reaches_a_python_agent_and_shapes_its_replies(start_daemon, monkeypatch):
    manifest = prober("Py") + python_agent("Py", MODELS_AND_DRILLS, 1, PY_MODELS)
    daemon = start_daemon(manifest, ["--rate", "0", "--fault", "Py:slow=2x"])
    daemon.wait_for("Py running", lambda: daemon.running("Py"))
    agent = daemon.attach("Prober", monkeypatch)

    def replies(want, timeout=1.0):
        def check():
            try:
                return want(agent.call("Py", "drill", b"", timeout=timeout).body)
            except pinwheel.CallError as err:
                return want(err)
        return check

    daemon.wait_for("the drill given at start", replies(lambda b: b == b"slow=2x"))
    assert daemon.fault("Py", "error=1")["fault"] == "error=1"
    daemon.wait_for("the injected error", replies(
        lambda r: isinstance(r, pinwheel.CallError) and r.status == 500))
    daemon.wait_for("/v1/agents showing it", lambda: daemon.agent("Py").get("fault") == "error=1")
    daemon.fault("Py", "none")
    daemon.wait_for("replies as usual", replies(lambda b: b == b"none"))
    assert daemon.agent("Py")["restarts"] == 0


INTERRUPTED_CALLER = """
import sys
import pinwheel
agent = pinwheel.Agent()
print("calling", flush=True)
try:
    agent.call("Py", "echo", b"first", timeout=600.0)
    print("returned", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()
# The drill's end reaches Py on its link, which it reads between requests:
# a call may still meet the stall, so the caller tries again.
for _ in range(30):
    try:
        print(agent.call("Py", "echo", b"second", timeout=1.0).body.decode(), flush=True)
        break
    except pinwheel.Timeout:
        pass
    except pinwheel.CallError as err:
        if err.status != 504:  # the daemon's answer when the deadline passed
            raise
"""


def line_from(child: subprocess.Popen) -> str:
    """The child's next stdout line, failing after HANG_GUARD_S."""
    ready, _, _ = select.select([child.stdout], [], [], HANG_GUARD_S)
    if not ready:
        child.kill()
        pytest.fail(f"no line from the caller in {HANG_GUARD_S} s: {child.stderr.read()}")
    return child.stdout.readline()


def test_ctrl_c_interrupts_a_call_and_the_agent_goes_on_calling(start_daemon):
    manifest = prober("Py") + python_agent("Py", ECHO, 1)
    daemon = start_daemon(manifest, ["--rate", "0", "--fault", "Py:stall"])
    daemon.wait_for("Py running", lambda: daemon.running("Py"))
    env = dict(os.environ, PINWHEEL_AGENT="Prober",
               PINWHEEL_AGENT_SOCKET=str(daemon.dir / "run" / "agent.sock"))
    env.pop("PINWHEEL_AGENT_FD", None)
    # A shell that ran this suite in the background left SIGINT ignored,
    # and Python installs no KeyboardInterrupt handler for an ignored
    # SIGINT: the caller starts with it at its default.
    caller = subprocess.Popen([sys.executable, "-c", INTERRUPTED_CALLER], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert line_from(caller) == "calling\n", caller.stderr.read()
        time.sleep(0.5)
        caller.send_signal(signal.SIGINT)
        # The stalled call would wait 600 s; the interrupt ends it first.
        assert line_from(caller) == "interrupted\n", caller.stderr.read()
        daemon.fault("Py", "none")
        caller.stdin.write("go\n")
        caller.stdin.flush()
        assert line_from(caller) == "second\n", caller.stderr.read()
        assert caller.wait(timeout=60) == 0
    finally:
        caller.kill()
        caller.wait()
