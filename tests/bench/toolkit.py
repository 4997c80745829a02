#!/usr/bin/env python3
"""Probe toolkit benchmark, side by side with the reference tools, in the lab.

Prints, for the same namespace (mesh-cloudvm-1), target and schedule:
  1. ICMP RTT: meshctl ping vs iputils ping -- median and p99 of each and
     their difference (the probe's RTT error against ping).
  2. CPU time per 1,000 ICMP probes: the cloudvm-1 probe process (utime +
     stime from /proc/PID/stat, before/after) vs ping (rusage of the child).
  3. mtr-mode completion time: `meshctl mtr -c 10` vs `mtr -r -n -c 10`,
     median of ROUNDS runs each, alternated.

Usage (root; builds nothing):  sudo tests/bench/toolkit.py [--count 1000] [--rounds 5]
The lab is brought up if it is not, and taken down again only in that case.
Traffic stays inside the lab's namespaces (198.18.0.0/15).
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

from meshbench import meshctl

NS = "mesh-cloudvm-1"
PROBE = "cloudvm-1"
TARGET = "198.18.0.12"      # node-2's eth0, across the fabric
TRACE_TARGET = "198.19.2.10"  # web-0, through node-2


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, after the comm field


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=500, help="ICMP probes per tool (max 10000)")
    ap.add_argument("--rounds", type=int, default=5, help="mtr runs per tool")
    ap.add_argument("--interval-ms", type=int, default=20,
                    help="echo interval; below ~10 ms iputils ping busy-waits, which would compare its spin loop")
    args = ap.parse_args()
    count = max(10, min(args.count, 10_000))
    rounds = max(1, min(args.rounds, 20))

    status = json.loads(meshctl("lab", "status", "-o", "json").stdout)
    brought_up = status.get("state") != "up"
    if brought_up:
        meshctl("lab", "up")
        status = json.loads(meshctl("lab", "status", "-o", "json").stdout)
    try:
        probe_pid = next(p["pid"] for p in status["processes"]
                         if p.get("netns") == NS and p.get("alive"))
        hz = os.sysconf("SC_CLK_TCK")

        # 1 + 2: RTT and CPU, ping first then the probe, same schedule.
        interval_ms = max(10, min(args.interval_ms, 1000))
        interval = f"{interval_ms / 1000}"
        cpu0 = child_cpu()
        ping = subprocess.run(["ip", "netns", "exec", NS, "ping", "-n", "-c", str(count), "-i", interval, TARGET],
                              capture_output=True, text=True, timeout=600)
        ping_cpu = child_cpu() - cpu0
        ping_rtts = [float(m) for m in re.findall(r"time=([0-9.]+) ms", ping.stdout)]

        before = ticks(probe_pid)
        out = meshctl("ping", "--from", PROBE, TARGET, "-c", str(count), "-i", f"{interval_ms}ms", "-o", "json", ok=(0, 1))
        probe_cpu = (ticks(probe_pid) - before) / hz
        report = json.loads(out.stdout)
        probe_rtts = [r["rtt_ms"] for r in report.get("progress", []) if r.get("status") == "reply"]
        if not ping_rtts or not probe_rtts:
            sys.exit(f"no replies (ping {len(ping_rtts)}, probe {len(probe_rtts)})")

        def row(name, rtts):
            return f"{name:<14} {len(rtts):>6} {statistics.median(rtts) * 1000:>10.1f} {pct(rtts, 99) * 1000:>10.1f}"

        print(f"ICMP RTT, {count} echoes every {interval_ms} ms, {NS} -> {TARGET}")
        print(f"{'tool':<14} {'replies':>6} {'median_us':>10} {'p99_us':>10}")
        print(row("ping", ping_rtts))
        print(row("meshctl ping", probe_rtts))
        dmed = (statistics.median(probe_rtts) - statistics.median(ping_rtts)) * 1000
        dp99 = (pct(probe_rtts, 99) - pct(ping_rtts, 99)) * 1000
        ratio = statistics.median(probe_rtts) / statistics.median(ping_rtts)
        print(f"RTT error vs ping: median {dmed:+.1f} us ({ratio:.3f}x), p99 {dp99:+.1f} us")
        print()
        per_k = lambda cpu: cpu / count * 1000 * 1000  # ms per 1000 probes
        print(f"CPU per 1,000 ICMP probes: probe {per_k(probe_cpu):.1f} ms, ping {per_k(ping_cpu):.1f} ms, "
              f"ratio {probe_cpu / max(ping_cpu, 1e-9):.2f}x (probe includes its stream and task bookkeeping)")
        print()

        # 3: mtr completion time, alternated.
        ours, theirs = [], []
        for _ in range(rounds):
            t = time.monotonic()
            meshctl("mtr", "--from", PROBE, TRACE_TARGET, "-c", "10", "-i", "100ms", "-o", "json", ok=(0, 1))
            ours.append(time.monotonic() - t)
            t = time.monotonic()
            subprocess.run(["ip", "netns", "exec", NS, "mtr", "-r", "-n", "-c", "10", "-i", "0.1", TRACE_TARGET],
                           capture_output=True, timeout=120)
            theirs.append(time.monotonic() - t)
        print(f"mtr completion, 10 rounds at 100 ms, {NS} -> {TRACE_TARGET}, median of {rounds}:")
        print(f"meshctl mtr {statistics.median(ours):.2f} s, mtr -r {statistics.median(theirs):.2f} s, "
              f"ratio {statistics.median(ours) / statistics.median(theirs):.2f}x")
    finally:
        if brought_up:
            meshctl("lab", "down")


if __name__ == "__main__":
    main()
