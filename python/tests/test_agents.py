"""The `pinwheel` package against real daemons: Python agents as
`process` agents (the venv's python3 running a script), pinned,
supervised and restarted like any other."""

import os
import signal
import subprocess
import sys
import time

import pytest

import pinwheel
from conftest import (
    EXAMPLES, HERE, assert_every_request_accounted_for, assert_every_request_answered,
    coordinator, python_agent,
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
    assert issubclass(pinwheel.Error, Exception)


def test_a_chain_of_two_python_echo_agents_answers_every_request(start_daemon):
    manifest = (coordinator("Front")
                + python_agent("Front", ECHO, 1, 'calls = ["Back"]')
                + python_agent("Back", ECHO, 0))
    daemon = start_daemon(manifest, ["--rate", "200", "--duration", "4"])
    report = daemon.wait()
    assert_every_request_answered(report)
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
    assert_every_request_answered(report)


def test_a_stopped_daemon_stops_a_python_child_without_sigkill(start_daemon):
    manifest = coordinator("Echo") + python_agent("Echo", ECHO, 0)
    daemon = start_daemon(manifest, ["--rate", "0"])
    daemon.wait_for("Echo running", lambda: daemon.running("Echo"))
    daemon.child.send_signal(signal.SIGTERM)
    report = daemon.wait()
    echo = next(p for p in report["processes"] if p["agent"] == "Echo")
    # SIGTERM ends python3 (its default action), before stop_timeout_ms.
    assert echo["last_exit"] == "killed by signal 15", echo
