"""The echo agent, in Python: the same behaviour as the Rust example
(crates/pinwheel-agent/examples/echo.rs).

For every request it calls each agent of its manifest's `calls`, in order,
with the same method and body, then replies status 0 with the request's
body; when a call fails it replies that call's status (504 on a timeout)
and no body. The loop ends, and the process exits 0, when the daemon stops
the agent.

    [[agent]]
    name = "EchoFront"
    kind = "process"
    command = ["/path/to/venv/bin/python3", "echo.py"]
    calls = ["EchoBack"]
"""

import pinwheel

CALL_TIMEOUT_S = 1.0
STATUS_TIMEOUT = 504


def main() -> None:
    agent = pinwheel.Agent()
    calls = agent.calls
    for req in agent.requests():
        status = 0
        for callee in calls:
            try:
                agent.call(callee, req.method, req.body, timeout=CALL_TIMEOUT_S)
            except pinwheel.CallError as err:
                status = err.status
            except pinwheel.Error:
                status = STATUS_TIMEOUT
            if status != 0:
                break
        req.reply(req.body if status == 0 else b"", status=status)


if __name__ == "__main__":
    main()
