#!/usr/bin/env bash
# Sets up .venv (torch 2.13.0 CPU build and splatfx) and runs the demo shot:
#   bash scripts/demo.sh [--out DIR] [--preset collapse|virtual] [--plates PATH] ...
# Offline after the install: the capture ships inside the package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/splatfx demo "$@"
