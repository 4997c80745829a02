#!/usr/bin/env python3
"""Capture synchronisation figures over repeated runs, in the lab.

Runs `meshctl capture` on three observers (cloudvm-1:eth0, node-1:eth0,
node-2:flannel.1) RUNS times and prints the median and maximum of the run's
capture_skew_us (spread of the armed instants on the coordinator's clock)
and clock_error_us (worst observer's clock-offset error bound).

Usage (root):  sudo tests/bench/capture_sync.py [--runs 20]
The lab is brought up if it is not, and taken down again only in that case.
"""

import argparse
import json
import statistics
import tempfile

from meshbench import meshctl


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    runs = max(1, min(ap.parse_args().runs, 100))
    brought_up = json.loads(meshctl("lab", "status", "-o", "json").stdout).get("state") != "up"
    if brought_up:
        meshctl("lab", "up")
    skews, errors = [], []
    try:
        with tempfile.TemporaryDirectory() as out:
            for _ in range(runs):
                report = json.loads(meshctl(
                    "capture", "--on", "cloudvm-1:eth0,node-1:eth0,node-2:flannel.1",
                    "--filter", "icmp", "--duration", "500ms", "--out", out, "-o", "json").stdout)
                skews.append(report["timing"]["capture_skew_us"])
                errors.append(report["timing"]["clock_error_us"])
    finally:
        if brought_up:
            meshctl("lab", "down")
    print(f"{runs} captures on 3 observers (one kernel clock)")
    print(f"capture_skew_us  median {statistics.median(skews):>8.0f}  max {max(skews):>8.0f}")
    print(f"clock_error_us   median {statistics.median(errors):>8.0f}  max {max(errors):>8.0f}")


if __name__ == "__main__":
    main()
