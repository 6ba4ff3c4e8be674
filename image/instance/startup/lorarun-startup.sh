#!/bin/sh
# lorarun's instance start-up. Installed as /usr/local/bin/lorarun-startup and used on both provider start-up paths:
#
#   lorarun-startup [ARGS...]   the image's ENTRYPOINT: RunPod (it runs the image's entrypoint, handing the pod's
#                               variables, PUBLIC_KEY among them, to the container), `docker run`, Vast's `args`
#                               run type. Installs the SSH keys, saves the provider variables, starts the lease
#                               watchdog, runs ARGS (RunPod's `args`) in the background, then runs sshd in the
#                               foreground as the container's long-lived process.
#   lorarun-startup --onstart   from Vast's `onstart`. Vast's ssh/ssh_direct/jupyter run types REPLACE the image's
#                               ENTRYPOINT with Vast's own start-up (docs.vast.ai "Docker Execution Environment":
#                               "The image entrypoint is replaced"), which installs the keys and runs sshd itself,
#                               then runs `onstart`. So here: only the variables and the watchdog.
#
# Why Vast keeps its ssh_direct run type and calls us from onstart, rather than dstack's `runtype: args` with our
# own sshd: with `args` Vast sets up no SSH and no proxy fallback, and the per-instance key attached through
# POST /instances/{id}/ssh/ only reaches authorized_keys through Vast's own start-up; SkyPilot also keeps ssh
# (direct) and does its set-up from onstart. Vast's start-up never writes /etc/environment (its docs tell users to
# `env >> /etc/environment` in onstart), which is what --onstart does for the variables below.
#
# The engine's Python: sessions over SSH do not inherit the image's ENV (PATH=/opt/conda/bin:... in the PyTorch
# images), so a bare `python3` finds nothing or the wrong interpreter. The image therefore has fixed entry points
# on sshd's default PATH: /usr/local/bin/lorarun-python (and lorarun-engine, lorarun-agent); the controller uses
# that path and needs no environment from either start-up. PATH is deliberately not written to /etc/environment.
#
# Never fails the container: every step is best-effort and logged to /var/log/lorarun/startup.log.
set -u
LOG_DIR=/var/log/lorarun
mkdir -p "$LOG_DIR" 2>/dev/null
EVENTS="$LOG_DIR/startup.jsonl"

log() { printf '%s lorarun-startup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> "$LOG_DIR/startup.log" 2>/dev/null; }

# Start-up timing, one JSON line per milestone (unix seconds); the controller reads it for the estimate's
# calibration (container started -> sshd up -> engine importable; the engine's own events carry model loaded and
# first step).
event() { printf '{"event": "%s", "time": %s}\n' "$1" "$(date +%s.%N | cut -c1-14)" >> "$EVENTS" 2>/dev/null; }

mode=entrypoint
if [ "${1:-}" = "--onstart" ]; then mode=onstart; shift; fi
event container_started
log "start-up ($mode)"

# --- SSH keys (entrypoint only: on Vast's run types, Vast's own start-up installs them) ----------------------------
install_keys() {
  mkdir -p /root/.ssh && chmod 700 /root/.ssh
  touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
  # RunPod passes PUBLIC_KEY; Vast's SSH_PUBLIC_KEY is the account key when its own start-up is bypassed.
  for key in "${PUBLIC_KEY:-}" "${SSH_PUBLIC_KEY:-}"; do
    printf '%s\n' "$key" | while IFS= read -r line; do
      [ -n "$line" ] || continue
      grep -qxF "$line" /root/.ssh/authorized_keys || printf '%s\n' "$line" >> /root/.ssh/authorized_keys
    done
  done
}

# --- provider variables, for SSH sessions (pam_env reads /etc/environment) ------------------------------------
# Only the variables the agent needs (instance id and instance-scoped key for self-destroy, the lease deadline);
# the agent also reads /proc/1/environ, which holds them under both start-ups. Other lines of the file are kept.
save_environment() {
  vars="$(env | grep -E '^(CONTAINER_ID|CONTAINER_API_KEY|VAST_CONTAINERLABEL|RUNPOD_POD_ID|RUNPOD_API_KEY|LORARUN_DEADLINE|LORARUN_JOB_ID|LORARUN_SELF_DESTRUCT_[0-9]+|GPU_COUNT|RUNPOD_GPU_COUNT)=' || true)"
  [ -n "$vars" ] || return 0
  names="$(printf '%s\n' "$vars" | cut -d= -f1 | paste -sd'|' -)"
  tmp="$(mktemp /etc/environment.XXXXXX)" || return 0
  { grep -vE "^(${names})=" /etc/environment 2>/dev/null; printf '%s\n' "$vars"; } > "$tmp"
  chmod 600 "$tmp" && mv "$tmp" /etc/environment
}

start_watchdog() {
  # The lease from the first second: `lorarun-agent watchdog` destroys the instance past LORARUN_DEADLINE unless
  # the agent proper took over. Absent in older images / the stock path before install: then nothing to start.
  agent=/usr/local/bin/lorarun-agent
  if [ -x "$agent" ]; then
    nohup "$agent" watchdog >> "$LOG_DIR/watchdog.log" 2>&1 < /dev/null &
    log "watchdog started (pid $!)"
  else
    log "no $agent: watchdog not started"
  fi
}

# Waits for sshd to answer, then checks that the engine imports; both become timing events. In the background so
# that nothing here delays sshd.
probe_ready() {
  i=0
  while [ $i -lt 600 ]; do
    if sshd_listening; then event sshd_up; break; fi
    i=$((i + 1)); sleep 0.5
  done
  if [ -x /usr/local/bin/lorarun-python ] && /usr/local/bin/lorarun-python -c 'import lorarun.image.engine.train' \
      >> "$LOG_DIR/startup.log" 2>&1; then
    event engine_importable
  fi
}
# A socket in LISTEN state (0A) on port 22 (0016), read from the kernel: needs no ss/netstat in the image.
sshd_listening() { awk '$2 ~ /:0016$/ && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }

save_environment
[ "$mode" = entrypoint ] && install_keys
start_watchdog
probe_ready >/dev/null 2>&1 < /dev/null &
[ "$mode" = onstart ] && { touch /root/.no_auto_tmux 2>/dev/null; exit 0; }  # Vast's tmux on SSH login: off

if [ "$#" -gt 0 ]; then  # RunPod's `args`: run beside sshd, never instead of it (sshd keeps the pod reachable)
  log "running args: $*"
  nohup sh -c "$*" >> "$LOG_DIR/args.log" 2>&1 < /dev/null &
fi
[ -d /run/sshd ] || mkdir -p /run/sshd
ssh-keygen -A >/dev/null 2>&1 || log "ssh-keygen -A failed"
exec /usr/sbin/sshd -D -e
