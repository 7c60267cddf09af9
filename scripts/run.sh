#!/usr/bin/env bash
# Install the worker into .venv and start it, with a ComfyUI beside it if none is running.
#
#   COMFYUI_SERVER_ADDRESS=127.0.0.1:8188 SERVER_PORT=18188 scripts/run.sh
#
# A ComfyUI answers at COMFYUI_SERVER_ADDRESS (default 127.0.0.1:8188): the worker starts
# alone, in the foreground. None does: a local CPU ComfyUI (the registry-installed server of
# the end-to-end tests; installed on first use by scripts/comfyui-test-server.sh, ~1 min and
# 1.3 GB in .cache/) runs beside the worker under supervisord (deploy/supervisord.conf), as
# in the container. Either way the URL and a ready-to-paste curl are printed once the worker
# is ready. Ctrl-C stops everything. Other settings: README, "Configuration".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt

export COMFYUI_SERVER_ADDRESS="${COMFYUI_SERVER_ADDRESS:-127.0.0.1:8188}"
address="${COMFYUI_SERVER_ADDRESS#*://}"
address="${address%%/*}"
worker_host="${SERVER_HOST:-0.0.0.0}"
[[ "$worker_host" != 0.0.0.0 ]] || worker_host=127.0.0.1
WORKER_URL="http://$worker_host:${SERVER_PORT:-18188}"

answers() {
  .venv/bin/python - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

announce() {
  # In the background: once the worker is ready, tell how to use it.
  local main=$$ deadline=$((SECONDS + 1800)) graph
  graph='{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 16711680}}, "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sync"}}}'
  until answers "$WORKER_URL/ready"; do
    if ((SECONDS > deadline)) || ! kill -0 "$main" 2>/dev/null; then return 0; fi
    sleep 1
  done
  cat >&2 <<TEXT

  The worker is ready at $WORKER_URL (API docs: $WORKER_URL/docs), ComfyUI at $1.
  Run a workflow that needs no model weights:

curl -s -X POST '$WORKER_URL/prompt_sync?timeout=60' -H 'Content-Type: application/json'${API_KEYS:+ -H 'Authorization: Bearer <one of API_KEYS>'} -d '{"prompt": $graph, "return_image_base64": true}'

  or save outputs with the example client: .venv/bin/python client.py WORKFLOW.json --url $WORKER_URL --out outputs/

TEXT
}

if answers "http://$address/system_stats"; then
  announce "http://$address" &
  exec .venv/bin/python server.py
fi

host="${address%:*}" port="${address##*:}"
if [[ "$host" != 127.0.0.1 && "$host" != localhost ]] || [[ ! "$port" =~ ^[0-9]+$ ]]; then
  echo "run.sh: no ComfyUI answers at $COMFYUI_SERVER_ADDRESS, and a local one can only be started on 127.0.0.1:PORT" >&2
  exit 1
fi
echo "run.sh: no ComfyUI answers at $address; starting a local CPU ComfyUI beside the worker" >&2
export COMFYUI_TEST_PORT="$port"
server=scripts/comfyui-test-server.sh
bash "$server" prepare
COMFYUI_COMMAND="$(bash "$server" command)"
COMFYUI_DIR="$(bash "$server" path home)"
COMFYUI_OUTPUT_DIR="$(bash "$server" path output)"
COMFYUI_TEMP_DIR="$(bash "$server" path temp)"
export COMFYUI_COMMAND COMFYUI_DIR COMFYUI_OUTPUT_DIR COMFYUI_TEMP_DIR
export WORKER_DIR="$ROOT" WORKER_PYTHON="$ROOT/.venv/bin/python" WORKER_MODE=http
export SUPERVISOR_RUN_DIR="${SUPERVISOR_RUN_DIR:-$ROOT/.cache/supervisor}"
announce "http://$address" &
exec deploy/entrypoint.sh
