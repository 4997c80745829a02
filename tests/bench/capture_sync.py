#!/usr/bin/env python3
"""Capture synchronisation figures over repeated runs, in the lab.

Runs `meshctl capture` on three observers (cloudvm-1:eth0, node-1:eth0,
node-2:flannel.1) RUNS times and prints the median, p99 (nearest rank: the
largest value for 100 runs or fewer) and maximum of the run's
capture_skew_us (spread of the armed instants on the coordinator's clock),
clock_error_us (worst observer's clock-offset error bound) and the run's
duration_ms (dispatch to record, arming lead included); then what the
capture phase spent (clock_wait_ms, arming_lead_ms), how late the latest
observer armed on its own clock (arm_late_us), the least margin by which
an observer was ready before the instant (ready_margin_us), and the runs
in which an observer was ready only after the instant (ready late: its
set-up, not its wake-up, made it late), with the worst run's timing.

Usage (root):  sudo tests/bench/capture_sync.py [--runs 50]
The lab is brought up if it is not, and taken down again only in that case.
"""

import argparse
import json
import math
import statistics
import tempfile

from meshbench import meshctl


def p99(values):
    """The nearest-rank 99th percentile."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.99 * len(ranked)) - 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    runs = max(1, min(ap.parse_args().runs, 100))
    brought_up = json.loads(meshctl("lab", "status", "-o", "json").stdout).get("state") != "up"
    if brought_up:
        meshctl("lab", "up")
    timings = []
    try:
        with tempfile.TemporaryDirectory() as out:
            for _ in range(runs):
                report = json.loads(meshctl(
                    "capture", "--on", "cloudvm-1:eth0,node-1:eth0,node-2:flannel.1",
                    "--filter", "icmp", "--duration", "500ms", "--out", out, "-o", "json").stdout)
                timings.append(report["timing"])
    finally:
        if brought_up:
            meshctl("lab", "down")
    print(f"{runs} captures on 3 observers (one kernel clock)")
    for name in ("capture_skew_us", "clock_error_us", "duration_ms", "clock_wait_ms",
                 "arming_lead_ms", "arm_late_us", "ready_margin_us"):
        values = [t.get(name, 0) for t in timings]
        print(f"{name:<16} median {statistics.median(values):>8.0f}  p99 {p99(values):>8.0f}"
              f"  max {max(values):>8.0f}  min {min(values):>8.0f}")
    late = sum(1 for t in timings if t.get("ready_late", 0) > 0)
    print(f"runs with an observer ready late: {late} of {runs}")
    print("worst run:", json.dumps(max(timings, key=lambda t: t["capture_skew_us"])))


if __name__ == "__main__":
    main()
