#!/usr/bin/env bash
# Install the worker's dependencies into .venv and start it in the foreground.
# Settings come from the environment (see README, "Configuration"), e.g.
#   COMFYUI_SERVER_ADDRESS=127.0.0.1:8188 SERVER_PORT=18188 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python server.py
