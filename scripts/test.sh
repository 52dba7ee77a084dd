#!/usr/bin/env bash
# Sets up .venv with the test extras (and Debian's chromium for the browser tests when
# this machine can install it) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
