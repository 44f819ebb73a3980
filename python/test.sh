#!/usr/bin/env bash
# The Python package's tests (a `suite` of .ci/test): builds the daemon,
# installs ./python (maturin, from PyPI) into a new venv of Debian's
# python3 and runs pytest there against real daemons. Fails, never skips,
# when a tool is missing: every step below must work.
#
#   python/test.sh [pytest args...]
#
# /usr/bin/python3, not one under /root (pyenv): the tests' agents run as
# `nobody`, who must be able to execute the venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TARGET_DIR="$root/target"

cargo build --release --all-features --bin pinwheel

venv=$(mktemp -d /tmp/pinwheel-python.XXXXXX)
trap 'rm -rf "$venv"' EXIT
chmod 755 "$venv"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "./python[test]"

export PINWHEEL_EXE="$root/target/release/pinwheel"
export PINWHEEL_ROOT="$root"
export PINWHEEL_PYTHON="$venv/bin/python3"
cd python
"$venv/bin/python3" -m pytest -p no:cacheprovider -q tests "$@"
