#!/usr/bin/env bash
# Install everything the tests need and run them: lint, types, then the three tiers
# (unit, service against the fake ComfyUI, end-to-end against a real ComfyUI).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

.venv/bin/ruff check .
.venv/bin/mypy .
exec .venv/bin/python -m pytest "$@"
