"""A real pinwheel daemon for the package's tests: `pinwheel run` in a
subprocess with its manifest, run directory, report and log in a temporary
directory, its admin API on a free loopback port with a token for its
writes (`Daemon.fault`), stopped and reaped after each test (see
src/test_support/process_daemon.rs, its Rust twin).

Environment (python/test.sh sets it): PINWHEEL_EXE (the daemon),
PINWHEEL_ROOT (the repository: topology/vm-2cpu.toml), PINWHEEL_PYTHON
(the venv's interpreter the agents run under). A missing one fails the
tests: they never skip.
"""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import pinwheel

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
# Longest any wait of these tests may take before it fails with a reason.
HANG_GUARD_S = 60.0


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the Python tests with python/test.sh")
    return value


def python_agent(name: str, script: Path, cpu: int, extra: str = "") -> str:
    """A manifest entry: `script` run by the venv's python3 as `nobody`."""
    exe = required_env("PINWHEEL_PYTHON")
    return (
        f'[[agent]]\nname = "{name}"\nhost = "h"\nrole = "r"\nkind = "process"\n'
        f'cpu = {cpu}\ncommand = ["{exe}", "{script}"]\nuser = "nobody"\n{extra}\n\n'
    )


def prober(calls: str) -> str:
    """A manifest entry for this test process attached as an external agent."""
    return (
        '[[agent]]\nname = "Prober"\nhost = "h"\nrole = "r"\nkind = "external"\n'
        f'cpu = 0\nuser = "root"\ncalls = ["{calls}"]\n\n'
    )


def coordinator(calls: str) -> str:
    return (
        '[[agent]]\nname = "Coord"\nhost = "h"\nrole = "r"\nkind = "native"\n'
        f'native = "coordinator"\nconcurrency = 64\ncalls = ["{calls}"]\n\n'
    )


def free_port() -> int:
    """A loopback port free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daemon:
    """A running `pinwheel run`; `topology_extra` is appended to
    topology/vm-2cpu.toml (a `[legacy]` section, say)."""

    def __init__(self, manifest: str, args: list, topology_extra: str = ""):
        exe = required_env("PINWHEEL_EXE")
        root = required_env("PINWHEEL_ROOT")
        self.dir = Path(tempfile.mkdtemp(prefix="pinwheel-pytest."))
        os.chmod(self.dir, 0o755)
        (self.dir / "agents.toml").write_text("schema = 1\n\n" + manifest)
        self.token = "pytest-admin-token"
        token_file = self.dir / "admin.token"
        token_file.write_text(self.token + "\n")
        os.chmod(token_file, 0o600)
        topology = "topology/vm-2cpu.toml"
        if topology_extra:
            base = (Path(root) / topology).read_text()
            topology = str(self.dir / "topology.toml")
            Path(topology).write_text(base + "\n" + topology_extra)
        self.addr = "127.0.0.1:%d" % free_port()
        self.log_file = open(self.dir / "daemon.log", "wb")
        self.child = subprocess.Popen(
            [exe, "run", "--topology", topology,
             "--agents", str(self.dir / "agents.toml"),
             "--run-dir", str(self.dir / "run"),
             "--report", str(self.dir / "report.json"),
             "--admin-addr", self.addr,
             "--admin-token-file", str(token_file)] + args,
            cwd=root, stdout=subprocess.DEVNULL, stderr=self.log_file,
            env={"RUST_LOG": "info", "PATH": os.environ.get("PATH", "")},
        )
        self.wait_for("the admin API", lambda: self.agents() is not None)

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")

    def agents_response(self):
        """`/v1/agents` as it is, or None when the API does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v1/agents", timeout=2) as rsp:
                return json.load(rsp)
        except OSError:
            return None

    def agents(self):
        """`/v1/agents` by name, or None when the API does not answer."""
        body = self.agents_response()
        if body is None:
            return None
        return {a["name"]: a for a in body["agents"]}

    def agent(self, name: str) -> dict:
        return (self.agents() or {}).get(name, {})

    def running(self, name: str) -> bool:
        agent = self.agent(name)
        return agent.get("state") == "running" and agent.get("pid") is not None

    def fault(self, name: str, fault: str) -> dict:
        """Puts agent `name` under drill `fault` (`none` ends it) through
        `POST /v1/agents/{name}/fault`; the daemon's answer."""
        request = urllib.request.Request(
            f"http://{self.addr}/v1/agents/{name}/fault",
            data=json.dumps({"fault": fault}).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as rsp:
            return json.load(rsp)

    def attach(self, name: str, monkeypatch):
        """This test process attached as external agent `name` (its
        manifest's `user` must be root, the tests' user)."""
        monkeypatch.setenv("PINWHEEL_AGENT", name)
        monkeypatch.setenv("PINWHEEL_AGENT_SOCKET", str(self.dir / "run" / "agent.sock"))
        monkeypatch.delenv("PINWHEEL_AGENT_FD", raising=False)
        self.wait_for("the attach socket", (self.dir / "run" / "agent.sock").exists)
        return pinwheel.Agent()

    def wait_for(self, what: str, done) -> None:
        end = time.monotonic() + HANG_GUARD_S
        while not done():
            if self.child.poll() is not None:
                pytest.fail(f"the daemon exited waiting for {what}:\n{self.log()}")
            if time.monotonic() > end:
                pytest.fail(f"waited {HANG_GUARD_S} s for {what}:\n{self.log()}")
            time.sleep(0.05)

    def wait(self) -> dict:
        """Waits for the daemon to end on its own; its report."""
        try:
            code = self.child.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not end:\n{self.log()}")
        assert code == 0, self.log()
        return json.loads((self.dir / "report.json").read_text())

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.log_file.close()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


@pytest.fixture
def start_daemon():
    started = []

    def start(manifest: str, args: list, topology_extra: str = "") -> Daemon:
        daemon = Daemon(manifest, args, topology_extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def assert_every_request_answered(report: dict, daemon: Daemon) -> None:
    """Every request sent completed; a failure shows what the agents
    printed (their stdout and stderr are in the daemon's log)."""
    r = report["requests"]
    said = "\n".join(line for line in daemon.log().splitlines() if "agent output" in line)
    assert r["sent"] > 0, (r, said)
    assert r["completed"] == r["sent"], (r, said)
    assert r["failed"] == 0 and r["timed_out"] == 0 and r["lost"] == 0, (r, said)


def assert_every_request_accounted_for(report: dict) -> None:
    r = report["requests"]
    assert r["lost"] == 0, r
    assert r["sent"] == r["completed"] + r["failed"] + r["timed_out"], r
    assert r["completed"] > 0, r
