#!/usr/bin/env bash
# The scale benchmark: one coordinator (release build) on 127.0.0.1 with a
# fresh CA from `meshctl certs init`, N simulated probes attached from
# processes of up to 8,000 each (tests/src/bin/scale.rs: real mTLS streams, a certificate per
# probe signed with the CA's key, real Hello, heartbeats, clock exchanges
# over the stream and UDP, an empty answer to each capture task).
#
# Prints: coordinator memory per probe (VmRSS delta / N), idle CPU per 1,000
# probes (utime+stime over the idle window, as a fraction of a core), the
# time for all N to attach, and p50/p99 of a capture fanned out to 1,000 of
# them (each answers at once), with the goals of issue 15 alongside.
#
# Usage:
#   tests/bench/scale.sh                     1,000 probes (quick)
#   tests/bench/scale.sh --probes 10000      the goal figures
#   Any argument is passed to the `scale` binary (--runs, --idle, --fanout,
#   --connect-rate); COORDINATOR_ARGS adds coordinator flags, e.g.
#   COORDINATOR_ARGS="--heartbeat 1s" for the old interval.
#   SKIP_BUILD=1 uses the release binaries as they are; PROFILE=debug (with
#   SKIP_BUILD=1) a smoke test on the debug build (figures not comparable).
#   COORDINATORS=3 starts a 3-member etcd (Debian's etcd, on loopback) and
#   three coordinators sharing it (--etcd); the probes are spread over them,
#   the fan-out goes through the first (relayed to the others), and memory
#   and CPU are summed over the three.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/target/${PROFILE:-release}"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cargo build --release --locked --manifest-path "$ROOT/Cargo.toml" \
    -p mesh-coordinator -p meshctl -p probemesh-tests --bin mesh-coordinator --bin meshctl --bin scale
fi

# Each probe holds a connection and a UDP socket on both sides; root may
# raise the hard limit, others get what it allows.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

"$BIN/meshctl" certs init --dir "$WORK/tls" >/dev/null

count=${COORDINATORS:-1}
etcd_flags=()
if ((count > 1)); then
  cluster=() clients=()
  for i in 0 1 2; do
    cluster+=("m$i=http://127.0.0.1:$(free_port)")
    clients+=("http://127.0.0.1:$(free_port)")
  done
  initial=$(IFS=,; echo "${cluster[*]}")
  for i in 0 1 2; do
    peer=${cluster[$i]#*=}
    etcd --name "m$i" --data-dir "$WORK/etcd-m$i" \
      --listen-client-urls "${clients[$i]}" --advertise-client-urls "${clients[$i]}" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --logger zap --log-level error 2>"$WORK/etcd-m$i.log" &
    PIDS+=($!)
  done
  for client in "${clients[@]}"; do
    for _ in $(seq 200); do
      curl -sf "$client/health" | grep -q '"health":"true"' && break
      sleep 0.1
    done
    curl -sf "$client/health" | grep -q '"health":"true"' \
      || { cat "$WORK"/etcd-m*.log >&2; echo "etcd at $client not healthy in 20 s" >&2; exit 1; }
  done
  etcd_flags=(--etcd "$(IFS=,; echo "${clients[*]}")")
fi

urls=() pids=()
for ((i = 0; i < count; i++)); do
  port=$(free_port)
  metrics=$(free_port)
  ids=()
  ((count > 1)) && ids=(--id "c$i")
  # shellcheck disable=SC2086 # COORDINATOR_ARGS is a list of flags
  "$BIN/mesh-coordinator" --listen "127.0.0.1:$port" --tls-dir "$WORK/tls" \
    --metrics "127.0.0.1:$metrics" "${etcd_flags[@]}" "${ids[@]}" ${COORDINATOR_ARGS:-} \
    2>"$WORK/coordinator-$i.log" &
  PIDS+=($!)
  coordinator=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break
    kill -0 "$coordinator" 2>/dev/null || { cat "$WORK/coordinator-$i.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null \
    || { echo "coordinator $i not ready in 30 s" >&2; exit 1; }
  urls+=("https://127.0.0.1:$port")
  pids+=("$coordinator")
done

echo "$count mesh-coordinator(s) ${COORDINATOR_ARGS:-(defaults)}${etcd_flags[*]:+ on a 3-member etcd}; $(nproc) cores; scale $*"
"$BIN/scale" --coordinator "$(IFS=,; echo "${urls[*]}")" --pid "$(IFS=,; echo "${pids[*]}")" \
  --tls-dir "$WORK/tls" "$@"
