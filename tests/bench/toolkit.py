#!/usr/bin/env python3
"""Probe toolkit benchmark, side by side with the reference tools, in the lab.

Prints, for the same namespace (mesh-cloudvm-1), target and schedule, RUNS
times alternated, then the medians over the runs:
  1. ICMP RTT: iputils ping vs `meshctl ping` (per-reply lines, as a human
     reads them: replies come in batches a few ms late) -- median and p99 of
     each and the difference of the medians (the probe's RTT error).
  2. CPU time per 1,000 ICMP echoes: ping (rusage of the child) vs the
     cloudvm-1 probe process (utime + stime from /proc/PID/stat,
     before/after) for `meshctl ping` (streamed to a terminal), `-o json`
     (replies in 1 s batches) and `-q` (summary only), each with its ratio.
  3. mtr-mode completion time: `meshctl mtr -c 10` vs `mtr -r -n -c 10`,
     median of ROUNDS runs each, alternated.

Usage (root; builds nothing; hold the lab lock):
  flock -o /tmp/probemesh-lab.lock tests/bench/toolkit.py [--count 1000] [--runs 3] [--rounds 5]
The lab is brought up if it is not (or runs other binaries than this
meshctl's), and taken down again only in that case. Traffic stays inside the
lab's namespaces (198.18.0.0/15).
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

from meshbench import MESHCTL, meshctl

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


def probe_rtts(text):
    return [float(m) for m in re.findall(r"time=([0-9.]+) ms", text)]


def lab_is_ours(status):
    """True when the lab's probes run the mesh-probe next to this meshctl."""
    want = os.path.realpath(os.path.join(os.path.dirname(MESHCTL), "mesh-probe"))
    pids = [p["pid"] for p in status.get("processes", []) if p.get("alive")]
    try:
        return bool(pids) and all(os.path.realpath(f"/proc/{pid}/exe") in (want, os.path.realpath(
            os.path.join(os.path.dirname(MESHCTL), "mesh-coordinator"))) for pid in pids)
    except OSError:
        return False


def one_run(count, interval_ms, probe_pid, hz):
    """One alternated run: ping, then meshctl ping in each delivery mode."""
    interval = f"{interval_ms / 1000}"
    cpu0 = child_cpu()
    ping = subprocess.run(["ip", "netns", "exec", NS, "ping", "-n", "-c", str(count), "-i", interval, TARGET],
                          capture_output=True, text=True, timeout=600)
    out = {"ping_cpu": child_cpu() - cpu0, "ping_rtts": probe_rtts(ping.stdout)}
    args = ["ping", "--from", PROBE, TARGET, "-c", str(count), "-i", f"{interval_ms}ms"]
    for mode, extra in (("stream", []), ("json", ["-o", "json"]), ("quiet", ["-q"])):
        before = ticks(probe_pid)
        res = meshctl(*args, *extra, ok=(0, 1))
        out[f"{mode}_cpu"] = (ticks(probe_pid) - before) / hz
        if mode == "stream":
            out["probe_rtts"] = probe_rtts(res.stdout)
        if mode == "json":
            replies = [r for r in json.loads(res.stdout).get("progress", []) if r.get("status") == "reply"]
            out["json_replies"] = len(replies)
    if not out["ping_rtts"] or not out["probe_rtts"]:
        sys.exit(f"no replies (ping {len(out['ping_rtts'])}, probe {len(out['probe_rtts'])})")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="ICMP echoes per tool and run (max 10000)")
    ap.add_argument("--runs", type=int, default=3, help="alternated ping runs (medians over them)")
    ap.add_argument("--rounds", type=int, default=5, help="mtr runs per tool")
    ap.add_argument("--interval-ms", type=int, default=20,
                    help="echo interval; below ~10 ms iputils ping busy-waits, which would compare its spin loop")
    args = ap.parse_args()
    count = max(10, min(args.count, 10_000))
    runs = max(1, min(args.runs, 10))
    rounds = max(1, min(args.rounds, 20))

    status = json.loads(meshctl("lab", "status", "-o", "json").stdout)
    brought_up = status.get("state") != "up" or not lab_is_ours(status)
    if brought_up:
        if status.get("state") == "up":
            meshctl("lab", "down")
        meshctl("lab", "up")
        status = json.loads(meshctl("lab", "status", "-o", "json").stdout)
    try:
        probe_pid = next(p["pid"] for p in status["processes"]
                         if p.get("netns") == NS and p.get("alive"))
        hz = os.sysconf("SC_CLK_TCK")
        interval_ms = max(10, min(args.interval_ms, 1000))

        # 1 + 2: RTT and CPU, alternated runs.
        results = [one_run(count, interval_ms, probe_pid, hz) for _ in range(runs)]
        med = lambda key: statistics.median(r[key] for r in results)
        medrtt = lambda key: statistics.median(statistics.median(r[key]) for r in results)
        p99 = lambda key: statistics.median(pct(r[key], 99) for r in results)

        print(f"ICMP RTT, {count} echoes every {interval_ms} ms, {NS} -> {TARGET}, medians of {runs} runs")
        print(f"{'tool':<22} {'replies':>7} {'median_us':>10} {'p99_us':>10}")
        for name, key in (("ping", "ping_rtts"), ("meshctl ping", "probe_rtts")):
            replies = statistics.median(len(r[key]) for r in results)
            print(f"{name:<22} {replies:>7.0f} {medrtt(key) * 1000:>10.1f} {p99(key) * 1000:>10.1f}")
        dmed = statistics.median((statistics.median(r["probe_rtts"]) - statistics.median(r["ping_rtts"])) * 1000
                                 for r in results)
        print(f"RTT error vs ping: median {dmed:+.1f} us (goal: within 20 us)")
        print()
        per_k = lambda cpu: cpu / count * 1000 * 1000  # ms per 1000 echoes
        ping_cpu = med("ping_cpu")
        print(f"CPU per 1,000 ICMP echoes, medians of {runs} runs (probe: its whole process, stream included)")
        print(f"{'tool':<22} {'ms':>8} {'ratio':>7}")
        print(f"{'ping':<22} {per_k(ping_cpu):>8.1f} {1.0:>6.2f}x")
        for name, key in (("meshctl ping", "stream_cpu"), ("meshctl ping -o json", "json_cpu"),
                          ("meshctl ping -q", "quiet_cpu")):
            print(f"{name:<22} {per_k(med(key)):>8.1f} {med(key) / max(ping_cpu, 1e-9):>6.2f}x")
        print(f"(-o json carried {med('json_replies'):.0f} replies; goal: meshctl ping at most 1.20x)")
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
              f"ratio {statistics.median(ours) / statistics.median(theirs):.2f}x (goal: at most 1.00x)")
    finally:
        if brought_up:
            meshctl("lab", "down")


if __name__ == "__main__":
    main()
