#!/usr/bin/env bash
# What a coordinator and a probe cost at rest, the figures behind the
# resource requests and limits in deploy/kubernetes/base: one coordinator and
# one probe on loopback with certificates from `meshctl certs init`/`certs
# issue` in a temp dir, left idle for SECONDS (default 60), then the probe's
# peak during a 5 s capture of the link's own traffic on `lo` (headers only).
#
# Prints per process: RSS and its peak (VmRSS, VmHWM in /proc/PID/status),
# threads, and CPU seconds used over the window (utime+stime, /proc/PID/stat).
#
# Usage (root, for the probe's raw sockets and capture):
#   tests/bench/idle.sh [SECONDS]                  (debug build)
#   PROFILE=release tests/bench/idle.sh [SECONDS]  (cargo build --release first)
set -euo pipefail

SECONDS_IDLE=${1:-60}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/target/${PROFILE:-debug}"
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

report() { # NAME PID TICKS_BEFORE TICKS_AFTER WINDOW
  local rss hwm threads
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$2/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$2/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$2/status")
  awk -v n="$1" -v rss="$rss" -v hwm="$hwm" -v t="$threads" -v d="$(($4 - $3))" -v tck="$TCK" -v w="$5" \
    'BEGIN { printf "%-12s RSS %5.1f MiB (peak %5.1f MiB), %s threads, %.2f s CPU in %s s (%.1f millicores)\n",
             n, rss / 1024, hwm / 1024, t, d / tck, w, d / tck / w * 1000 }' </dev/null
}

port=$(free_port)
metrics_c=$(free_port)
metrics_p=$(free_port)
url="https://127.0.0.1:$port"
"$BIN/meshctl" certs init --dir "$WORK/tls" >/dev/null
"$BIN/meshctl" certs issue --dir "$WORK/tls" --name node-1 --role probe >/dev/null
"$BIN/mesh-coordinator" --listen "127.0.0.1:$port" --tls-dir "$WORK/tls" --store "$WORK/store" \
  --metrics "127.0.0.1:$metrics_c" 2>"$WORK/coordinator.log" &
PIDS+=($!)
coordinator=$!
until curl -sf "http://127.0.0.1:$metrics_c/readyz" >/dev/null; do sleep 0.1; done
TMPDIR="$WORK" "$BIN/mesh-probe" --name node-1 --coordinator "$url" --tls-dir "$WORK/tls" \
  --metrics "127.0.0.1:$metrics_p" 2>"$WORK/probe.log" &
PIDS+=($!)
probe=$!
until curl -sf "http://127.0.0.1:$metrics_p/readyz" >/dev/null; do sleep 0.1; done
sleep 5

echo "idle for ${SECONDS_IDLE} s ($(basename "$BIN") build, $(nproc) cores):"
c0=$(ticks $coordinator)
p0=$(ticks $probe)
sleep "$SECONDS_IDLE"
c1=$(ticks $coordinator)
p1=$(ticks $probe)
report coordinator $coordinator "$c0" "$c1" "$SECONDS_IDLE"
report probe $probe "$p0" "$p1" "$SECONDS_IDLE"

echo "a 5 s capture on lo (tcp port $port, headers only):"
"$BIN/meshctl" --coordinator "$url" --tls-dir "$WORK/tls" capture --on node-1:lo \
  --filter "tcp port $port" --duration 5s --out "$WORK/captures" >/dev/null 2>&1
report probe $probe "$p1" "$(ticks $probe)" 5
