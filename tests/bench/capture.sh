#!/usr/bin/env bash
# Capture engine vs `tcpdump -w`, side by side, on the same kind of traffic:
# a bounded flood ping (`ping -f -c N`) across a veth between two throwaway
# namespaces (mesh-t5x-bench-<pid>-{a,b}, 198.18.56.0/30), captured on B's
# end, headers only (snap length 128), filter `icmp`, 32 MiB of ring each.
#
# Prints per tool: packets captured of those sent, kernel drops, CPU seconds
# (user+system of the capturing process over the flood, /proc/PID/stat) and
# CPU seconds per million packets, then the engine/tcpdump CPU ratio. CPU
# comes in 10 ms ticks: use N of a million or more for stable ratios.
#
# Usage (root): tests/bench/capture.sh [N]   (N pings, default 200000)
# The engine runs as `cargo test --release -p mesh-probe --test capture --
# --ignored bench`, which builds the release test binary first.
set -euo pipefail

N=${1:-200000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
A="mesh-t5x-bench-$$-a"
B="mesh-t5x-bench-$$-b"
ADDR_A=198.18.56.1
ADDR_B=198.18.56.2
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
TCPDUMP_PID=""

cleanup() {
  if [ -n "$TCPDUMP_PID" ] && kill -0 "$TCPDUMP_PID" 2>/dev/null; then
    kill "$TCPDUMP_PID" 2>/dev/null || true
  fi
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "capture.sh: needs root (namespaces, tcpdump)" >&2; exit 2; }

for ns in "$A" "$B"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$A" link add veth-a type veth peer name veth-b netns "$B"
ip -n "$A" addr add "$ADDR_A/30" dev veth-a
ip -n "$B" addr add "$ADDR_B/30" dev veth-b
ip netns exec "$A" sysctl -qw net.ipv6.conf.veth-a.disable_ipv6=1
ip netns exec "$B" sysctl -qw net.ipv6.conf.veth-b.disable_ipv6=1
ip -n "$A" link set veth-a up
ip -n "$B" link set veth-b up
ip netns exec "$A" ping -q -c 1 -W 2 "$ADDR_B" >/dev/null

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# --- tcpdump ---------------------------------------------------------------
# `ip netns exec` execs tcpdump, so $! is tcpdump's own PID.
ip netns exec "$B" tcpdump -i veth-b -n -s 128 -B 32768 -w "$WORK/tcpdump.pcap" icmp \
  2>"$WORK/tcpdump.err" &
TCPDUMP_PID=$!
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/tcpdump.err" && break
  sleep 0.1
done
grep -q "listening on" "$WORK/tcpdump.err" || { cat "$WORK/tcpdump.err" >&2; exit 1; }
before=$(cpu_ticks "$TCPDUMP_PID")
start=$(date +%s.%N)
ping_out=$(ip netns exec "$A" ping -q -f -c "$N" "$ADDR_B")
wall=$(echo "$(date +%s.%N) - $start" | bc -l)
# libpcap retires a ring block after its 1 s timeout: wait for the last one,
# or tcpdump exits on SIGINT with it unread.
sleep 1.5
after=$(cpu_ticks "$TCPDUMP_PID")
kill -INT "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
TCPDUMP_PID=""
t_sent=$(echo "$ping_out" | sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1/p')
t_recv=$(echo "$ping_out" | sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\2/p')
t_captured=$(sed -n 's/^\([0-9]*\) packets captured.*/\1/p' "$WORK/tcpdump.err")
t_drops=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$WORK/tcpdump.err")
t_cpu=$(echo "($after - $before) / $TCK" | bc -l)

# --- engine ----------------------------------------------------------------
engine_line=$(cd "$ROOT" && MESH_BENCH_PACKETS="$N" cargo test --release -q -p mesh-probe \
  --test capture -- --ignored bench --nocapture 2>"$WORK/engine.err" | grep '^engine ' || true)
[ -n "$engine_line" ] || { cat "$WORK/engine.err" >&2; echo "capture.sh: the engine bench printed nothing" >&2; exit 1; }
field() { echo "$engine_line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
e_captured=$(field packets)
e_expected=$(field expected)
e_drops=$(field drops)
e_cpu=$(field cpu_s)
e_wall=$(field wall_s)

per_m() { echo "scale=3; $1 * 1000000 / ($2 + ($2 == 0))" | bc -l; }
printf '\nflood: ping -f -c %s across a veth, captured on the far end, snaplen 128, filter icmp\n' "$N"
printf '%-9s %12s %12s %10s %9s %14s %8s\n' tool captured expected drops cpu_s cpu_s_per_Mpkt wall_s
printf '%-9s %12s %12s %10s %9.3f %14.3f %8.2f\n' tcpdump "$t_captured" "$((t_sent + t_recv))" \
  "$t_drops" "$t_cpu" "$(per_m "$t_cpu" "$t_captured")" "$wall"
printf '%-9s %12s %12s %10s %9.3f %14.3f %8.2f\n' engine "$e_captured" "$e_expected" \
  "$e_drops" "$e_cpu" "$(per_m "$e_cpu" "$e_captured")" "$e_wall"
t_per=$(per_m "$t_cpu" "$t_captured")
e_per=$(per_m "$e_cpu" "$e_captured")
printf 'engine/tcpdump CPU per million packets: %s\n' \
  "$(echo "scale=2; $e_per / ($t_per + ($t_per == 0))" | bc -l)"
