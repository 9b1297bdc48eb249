#!/usr/bin/env bash
# The whole test suite, from nothing: a fresh virtual environment, the project installed with
# its dev extra, lint, format check, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "scripts/test.sh: efspurge needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 2
fi

# A real Prometheus Pushgateway for the metrics tests, and promtool (Debian package
# `prometheus`) to lint the metrics and run the documented alert rules' unit tests. The tests
# start the Pushgateway on a free loopback port themselves.
missing=()
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing ${missing[*]} (apt)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
        exit 2
    fi
fi

VENV=${EFSPURGE_TEST_VENV:-.venv-test}
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"

# Install-time preparation for the deployment tests, so that the tests need no network:
# - the Dockerfile's build step for the dependencies (the locked wheels, hashes checked);
# - the GitHub workflow linter from the npm registry, when npm is on this machine.
rm -rf .wheelhouse
"$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --require-hashes \
    --wheel-dir .wheelhouse -r requirements-image.txt
# ... and the build backend, so that tests/test_docs.py can run the README's `pip install .`
# offline (PIP_NO_INDEX, PIP_FIND_LINKS=.wheelhouse).
"$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir .wheelhouse \
    "setuptools>=77"
if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix .tools \
        @action-validator/cli @action-validator/core >/dev/null
fi

echo "== ruff check"
"$VENV/bin/ruff" check .
echo "== ruff format --check"
"$VENV/bin/ruff" format --check .
echo "== pytest"
PATH="$PWD/$VENV/bin:$PATH" "$VENV/bin/python" -m pytest "$@"
