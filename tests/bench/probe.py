#!/usr/bin/env python3
"""Time to verdict of `meshctl probe` in the lab, healthy and faulty.

For each scenario, runs `meshctl probe` RUNS times (captures on, default
settings) and prints the median and maximum wall time, the run's own
duration_ms, and the verdict. Side by side, the same questions asked by
hand from the source namespace with the classic tools, one after another,
from one end only and without captures: `ping -c 20 -i 0.02`,
`ping -M do -s SIZE -c 5`, `nc -z -w 1` and `tracepath -n`. The ratio is
probe time over manual time.

Usage (root):  sudo tests/bench/probe.py [--runs 10]
The lab is brought up if it is not, and taken down again only in that case.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time

from meshbench import meshctl

# (name, fault or None, from, to, size, the manual equivalent's netns, ip, port)
SCENARIOS = [
    ("healthy nodeport", None, "cloudvm-1", "nodeport:30080", 1472,
     "mesh-cloudvm-1", "198.18.0.12", 30080),
    ("mtu-blackhole", "mtu-blackhole", "cloudvm-1", "nodeport:30080", 1472,
     "mesh-cloudvm-1", "198.18.0.12", 30080),
    ("port-filtered", "port-filtered", "cloudvm-1", "nodeport:node-2:30080", 56,
     "mesh-cloudvm-1", "198.18.0.12", 30080),
    ("dual-ip", "dual-ip", "node-3", "svc:default/web:80", 56,
     "mesh-node-3", "198.19.2.10", 8080),
]


def manual(netns, ip, port, size):
    """The by-hand sequence; its exit codes do not matter, its time does."""
    steps = [
        ["ping", "-n", "-q", "-c", "20", "-i", "0.02", "-W", "1", ip],
        ["ping", "-n", "-q", "-M", "do", "-s", str(size), "-c", "5", "-i", "0.02", "-W", "1", ip],
        ["nc", "-z", "-w", "1", ip, str(port)],
        ["tracepath", "-n", "-m", "8", ip],
    ]
    start = time.monotonic()
    for s in steps:
        subprocess.run(["ip", "netns", "exec", netns, *s], capture_output=True, timeout=60)
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    runs = max(1, min(ap.parse_args().runs, 50))
    brought_up = json.loads(meshctl("lab", "status", "-o", "json").stdout).get("state") != "up"
    if brought_up:
        meshctl("lab", "up")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as out:
            for name, fault, src, dst, size, netns, ip, port in SCENARIOS:
                if fault:
                    meshctl("lab", "fault", fault)
                try:
                    walls, own, verdicts, hand = [], [], set(), []
                    for _ in range(runs):
                        start = time.monotonic()
                        report = json.loads(meshctl(
                            "probe", "--from", src, "--to", dst, "--size", str(size),
                            "--out", out, "-o", "json", ok=(0, 1, 3)).stdout)
                        walls.append(time.monotonic() - start)
                        own.append(report["timing"]["duration_ms"])
                        v = report["verdict"]
                        verdicts.add(f"{v['class']}/{v['cause']}" if v["cause"] else v["class"])
                        hand.append(manual(netns, ip, port, size))
                    rows.append((name, walls, own, verdicts, hand))
                finally:
                    if fault:
                        meshctl("lab", "clear")
    finally:
        if brought_up:
            meshctl("lab", "down")
    print(f"meshctl probe, {runs} runs per scenario (captures on, default settings)")
    print(f"{'scenario':<18} {'median s':>9} {'max s':>7} {'run ms':>7} {'by hand s':>10} {'ratio':>6}  verdict")
    for name, walls, own, verdicts, hand in rows:
        med, hmed = statistics.median(walls), statistics.median(hand)
        print(f"{name:<18} {med:>9.2f} {max(walls):>7.2f} {statistics.median(own):>7.0f} "
              f"{hmed:>10.2f} {med / hmed:>6.2f}  {', '.join(sorted(verdicts))}")


if __name__ == "__main__":
    main()
