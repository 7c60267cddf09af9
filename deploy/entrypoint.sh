#!/usr/bin/env bash
# Entry point of the container (and of scripts/run.sh): settings with defaults, ComfyUI's
# model paths, then supervisord running ComfyUI and the worker (deploy/supervisord.conf).
#
# Usage: entrypoint.sh [COMMAND]
#
#   (none), supervisord  apply the defaults, write the model-path config, run supervisord in
#                        the foreground (it stops both programs cleanly on SIGTERM)
#   config               apply the defaults, write the model-path config, print the settings
#   comfyui              run COMFYUI_COMMAND in COMFYUI_DIR    (supervisord's `comfyui`)
#   worker               wait until ComfyUI answers, then run the worker (`worker`)
#   fatal-listener       supervisord event listener: a FATAL program stops supervisord
#   anything else        run it with the same environment (e.g. `bash`)
#
# Every setting is an environment variable; an unset one gets the default shown (the
# container layout: worker in /opt/worker, ComfyUI in /opt/ComfyUI, each with its .venv).
#
#   WORKER_DIR               /opt/worker (this file's parent folder)
#   WORKER_PYTHON            $WORKER_DIR/.venv/bin/python
#   WORKER_MODE              auto: `runpod` when RUNPOD_WEBHOOK_GET_JOB is set (a RunPod
#                            queue endpoint), else `http` (server.py)
#   COMFYUI_DIR              /opt/ComfyUI
#   COMFYUI_PYTHON           $COMFYUI_DIR/.venv/bin/python
#   COMFYUI_LISTEN           127.0.0.1 (0.0.0.0 to expose ComfyUI's own UI as well)
#   COMFYUI_PORT             8188
#   COMFYUI_ARGS             extra arguments of ComfyUI's main.py (--cpu is added when
#                            TORCH_VARIANT=cpu, the CPU image)
#   COMFYUI_COMMAND          the whole ComfyUI command line (default: main.py with the above)
#   COMFYUI_SERVER_ADDRESS   where the worker finds ComfyUI: 127.0.0.1:$COMFYUI_PORT
#   COMFYUI_WAIT_TIMEOUT     600: seconds the worker waits for ComfyUI before it starts
#                            anyway (its /ready stays 503 until ComfyUI answers)
#   MODELS_DIR               a model folder to add to ComfyUI's own, e.g. on a network
#                            volume (default /runpod-volume/models when that exists), with
#                            ComfyUI's usual subfolders (checkpoints, loras, vae, ...)
#   CUSTOM_NODES_DIR         a custom-node folder to add (their Python dependencies must
#                            already be installed in ComfyUI's venv)
#   EXTRA_MODEL_PATHS_CONFIG your own extra_model_paths.yaml (then the two above are unused)
#   SUPERVISOR_RUN_DIR       /tmp/supervisor: pid file, control socket, generated config
#   SUPERVISOR_CONF          deploy/supervisord.conf
#   SHUTDOWN_GRACE_S         30 (the worker's drain time; supervisord waits 10 s more)
set -euo pipefail

DEPLOY_DIR="${DEPLOY_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"

log() { printf 'entrypoint: %s\n' "$*" >&2; }

comfyui_url() {
  local address="$COMFYUI_SERVER_ADDRESS"
  [[ "$address" == *://* ]] || address="http://$address"
  printf '%s\n' "${address%/}"
}

write_model_paths() {
  # ComfyUI's extra_model_paths.yaml for MODELS_DIR / CUSTOM_NODES_DIR (both optional).
  local config="$SUPERVISOR_RUN_DIR/extra_model_paths.yaml" folder
  {
    printf '# Written by deploy/entrypoint.sh\n'
    if [[ -n "$MODELS_DIR" ]]; then
      printf 'models_dir:\n    base_path: %s\n' "$MODELS_DIR"
      for folder in checkpoints configs loras vae clip_vision style_models embeddings \
        diffusers vae_approx gligen upscale_models latent_upscale_models hypernetworks \
        photomaker classifiers model_patches audio_encoders; do
        printf '    %s: %s\n' "$folder" "$folder"
      done
      # Older folder names are read too.
      printf '    text_encoders: |\n        text_encoders\n        clip\n'
      printf '    diffusion_models: |\n        diffusion_models\n        unet\n'
      printf '    controlnet: |\n        controlnet\n        t2i_adapter\n'
    fi
    if [[ -n "$CUSTOM_NODES_DIR" ]]; then
      printf 'custom_nodes_dir:\n    custom_nodes: %s\n' "$CUSTOM_NODES_DIR"
    fi
  } >"$config"
  printf '%s\n' "$config"
}

apply_defaults() {
  : "${WORKER_DIR:=$(dirname "$DEPLOY_DIR")}"
  : "${WORKER_PYTHON:=$WORKER_DIR/.venv/bin/python}"
  : "${WORKER_MODE:=auto}"
  if [[ "$WORKER_MODE" == auto ]]; then
    if [[ -n "${RUNPOD_WEBHOOK_GET_JOB:-}" ]]; then WORKER_MODE=runpod; else WORKER_MODE=http; fi
  fi
  case "$WORKER_MODE" in
    http | runpod) ;;
    *) log "WORKER_MODE must be auto, http or runpod (not $WORKER_MODE)"; exit 2 ;;
  esac
  : "${COMFYUI_DIR:=/opt/ComfyUI}"
  : "${COMFYUI_PYTHON:=$COMFYUI_DIR/.venv/bin/python}"
  : "${COMFYUI_LISTEN:=127.0.0.1}"
  : "${COMFYUI_PORT:=8188}"
  : "${COMFYUI_ARGS:=}"
  if [[ -z "${COMFYUI_SERVER_ADDRESS:-}" ]]; then
    local host="$COMFYUI_LISTEN"
    [[ "$host" != 0.0.0.0 ]] || host=127.0.0.1
    COMFYUI_SERVER_ADDRESS="$host:$COMFYUI_PORT"
  fi
  : "${COMFYUI_WAIT_TIMEOUT:=600}"
  : "${COMFYUI_START_SECS:=5}"
  : "${COMFYUI_START_RETRIES:=3}"
  : "${WORKER_START_RETRIES:=3}"
  : "${SHUTDOWN_GRACE_S:=30}"
  : "${WORKER_STOP_WAIT:=$(awk -v g="$SHUTDOWN_GRACE_S" 'BEGIN { s = int(g); if (s < g) s++; print s + 10 }')}"
  : "${SUPERVISOR_RUN_DIR:=/tmp/supervisor}"
  : "${SUPERVISOR_CONF:=$DEPLOY_DIR/supervisord.conf}"
  : "${SUPERVISOR_LOG_LEVEL:=info}"
  if [[ -z "${MODELS_DIR+set}" ]]; then
    MODELS_DIR=""
    [[ ! -d /runpod-volume/models ]] || MODELS_DIR=/runpod-volume/models
  fi
  : "${CUSTOM_NODES_DIR:=}"
  : "${EXTRA_MODEL_PATHS_CONFIG:=}"
  mkdir -p "$SUPERVISOR_RUN_DIR"

  if [[ -z "${COMFYUI_COMMAND:-}" ]]; then
    local config="$EXTRA_MODEL_PATHS_CONFIG"
    if [[ -z "$config" && (-n "$MODELS_DIR" || -n "$CUSTOM_NODES_DIR") ]]; then
      config="$(write_model_paths)"
    fi
    if [[ "${TORCH_VARIANT:-}" == cpu && " $COMFYUI_ARGS " != *" --cpu "* ]]; then
      COMFYUI_ARGS="--cpu${COMFYUI_ARGS:+ $COMFYUI_ARGS}"
    fi
    COMFYUI_COMMAND="$(printf '%q ' "$COMFYUI_PYTHON" main.py --listen "$COMFYUI_LISTEN" \
      --port "$COMFYUI_PORT" --disable-auto-launch)"
    if [[ -n "$config" ]]; then
      COMFYUI_COMMAND+="$(printf '%q ' --extra-model-paths-config "$config")"
    fi
    COMFYUI_COMMAND+="$COMFYUI_ARGS"
    # The worker reads outputs from ComfyUI's disk rather than through /view.
    : "${COMFYUI_OUTPUT_DIR:=$COMFYUI_DIR/output}"
    : "${COMFYUI_TEMP_DIR:=$COMFYUI_DIR/temp}"
    export COMFYUI_OUTPUT_DIR COMFYUI_TEMP_DIR
  fi

  export DEPLOY_DIR WORKER_DIR WORKER_PYTHON WORKER_MODE COMFYUI_DIR COMFYUI_PYTHON \
    COMFYUI_LISTEN COMFYUI_PORT COMFYUI_ARGS COMFYUI_SERVER_ADDRESS COMFYUI_WAIT_TIMEOUT \
    COMFYUI_START_SECS COMFYUI_START_RETRIES WORKER_START_RETRIES SHUTDOWN_GRACE_S \
    WORKER_STOP_WAIT SUPERVISOR_RUN_DIR SUPERVISOR_CONF SUPERVISOR_LOG_LEVEL MODELS_DIR \
    CUSTOM_NODES_DIR EXTRA_MODEL_PATHS_CONFIG COMFYUI_COMMAND
}

print_config() {
  local name
  for name in WORKER_MODE WORKER_DIR WORKER_PYTHON COMFYUI_DIR COMFYUI_COMMAND \
    COMFYUI_SERVER_ADDRESS COMFYUI_OUTPUT_DIR COMFYUI_TEMP_DIR MODELS_DIR CUSTOM_NODES_DIR \
    SUPERVISOR_RUN_DIR SUPERVISOR_CONF WORKER_STOP_WAIT; do
    printf '%s=%s\n' "$name" "${!name:-}"
  done
}

wait_for_comfyui() {
  local url deadline
  url="$(comfyui_url)/system_stats"
  deadline=$((SECONDS + ${COMFYUI_WAIT_TIMEOUT%.*}))
  until "$WORKER_PYTHON" -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception:
    sys.exit(1)
' "$url"; do
    if ((SECONDS >= deadline)); then
      log "ComfyUI did not answer at $url within ${COMFYUI_WAIT_TIMEOUT} s; starting the worker anyway (it is not ready until ComfyUI answers)"
      return 0
    fi
    sleep 1
  done
  log "ComfyUI answers at $url"
}

run_worker() {
  wait_for_comfyui
  cd "$WORKER_DIR"
  case "$WORKER_MODE" in
    http) exec "$WORKER_PYTHON" server.py ;;
    runpod) exec "$WORKER_PYTHON" "$DEPLOY_DIR/runpod_handler.py" ;;
  esac
}

fatal_listener() {
  # supervisord's event-listener protocol on stdin/stdout; messages go to stderr.
  local header length payload
  while :; do
    printf 'READY\n'
    IFS= read -r header || exit 0
    length="$(sed -n 's/.*len:\([0-9][0-9]*\).*/\1/p' <<<"$header")"
    payload=""
    if [[ -n "$length" && "$length" -gt 0 ]]; then
      IFS= read -r -N "$length" payload || true
    fi
    log "a program went FATAL ($payload); stopping supervisord so that the container is restarted"
    printf 'RESULT 2\nOK'
    kill -TERM "$PPID"
  done
}

main() {
  local command="${1:-supervisord}"
  case "$command" in
    supervisord)
      apply_defaults
      log "starting ComfyUI ($COMFYUI_SERVER_ADDRESS) and the worker ($WORKER_MODE) under supervisord"
      exec "$WORKER_PYTHON" -m supervisor.supervisord -n -c "$SUPERVISOR_CONF"
      ;;
    config)
      apply_defaults
      print_config
      ;;
    comfyui)
      apply_defaults
      cd "$COMFYUI_DIR"
      eval "exec $COMFYUI_COMMAND"
      ;;
    worker)
      apply_defaults
      run_worker
      ;;
    fatal-listener) fatal_listener ;;
    *)
      apply_defaults
      exec "$@"
      ;;
  esac
}

main "$@"
