#!/usr/bin/env python3
"""Time to verdict of `meshctl probe` in the lab, healthy and faulty.

Scenarios: the healthy NodePort from outside (cloudvm-1 → nodeport:30080
with --size 1472), then every fault of the catalogue (`meshctl lab fault
--list`), each probed the way the catalogue says (its `probe` object). For
each, runs `meshctl probe` RUNS times (captures on, default settings) and
prints the median and maximum wall time, the run's own duration_ms, and the
verdict. Side by side, the same questions asked by hand from the source
namespace with the classic tools, one after another, from one end only and
without captures: `ping -c 20 -i 0.02`, `ping -M do -s SIZE -c 5`,
`nc -z -w 1` and `tracepath -n` to the target's address (DNS targets:
`dig` through the cluster DNS ClusterIP and its pod, and a ping of the pod).
The ratio is probe time over manual time.

Usage (root):  sudo tests/bench/probe.py [--runs 10] [--only NAME[,NAME]]
The lab is brought up if it is not, and taken down again only in that case.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time

from meshbench import meshctl

HEALTHY = ("healthy nodeport", None, "cloudvm-1", "nodeport:30080", 1472)
# The lab's addresses (DESIGN §4) a by-hand session would aim at.
NODES = {"node-1": "198.18.0.11", "node-2": "198.18.0.12", "node-3": "198.18.0.13"}
WEB = ("198.19.2.10", 8080)
WEB_CLUSTER_IP = ("198.18.200.80", 80)
DNS_CLUSTER_IP, DNS_POD = "198.18.200.10", "198.19.1.53"


def netns(src):
    """The namespace a probe spec runs in: mesh-NODE or mesh-pod-NAME."""
    if "@pod:" in src:
        return "mesh-pod-" + src.split("/")[-1]
    return "mesh-" + src


def by_hand_steps(to, size):
    """The classic tools' commands for a probe target."""
    ping = lambda ip: [["ping", "-n", "-q", "-c", "20", "-i", "0.02", "-W", "1", ip],
                       ["ping", "-n", "-q", "-M", "do", "-s", str(size), "-c", "5",
                        "-i", "0.02", "-W", "1", ip]]
    trace = lambda ip: [["tracepath", "-n", "-m", "8", ip]]
    nc = lambda ip, port: [["nc", "-z", "-w", "1", ip, str(port)]]
    kind, _, rest = to.partition(":")
    if kind == "dns":
        dig = lambda server: ["dig", "+time=1", "+tries=1", f"@{server}", rest]
        return [dig(DNS_CLUSTER_IP), dig(DNS_POD), *ping(DNS_POD)[:1]]
    if kind == "probe":
        ip = NODES[rest]
        return ping(ip) + trace(ip)
    if kind == "nodeport":
        node, _, port = rest.rpartition(":")
        ip = NODES.get(node, NODES["node-2"])
        return ping(ip) + nc(ip, port) + trace(ip)
    if kind == "svc":
        return ping(WEB[0]) + nc(*WEB_CLUSTER_IP) + trace(WEB[0])
    return ping(WEB[0]) + nc(*WEB) + trace(WEB[0])


def manual(src, to, size):
    """The by-hand sequence; its exit codes do not matter, its time does."""
    start = time.monotonic()
    for s in by_hand_steps(to, size):
        subprocess.run(["ip", "netns", "exec", netns(src), *s], capture_output=True, timeout=60)
    return time.monotonic() - start


def scenarios(only):
    """The healthy NodePort and every catalogue fault, as the catalogue probes it."""
    faults = json.loads(meshctl("lab", "fault", "--list", "-o", "json").stdout)
    out = [HEALTHY] + [(f["name"], f["name"], f["probe"]["from"], f["probe"]["to"],
                        f["probe"]["size"]) for f in faults]
    return [s for s in out if not only or s[0] in only]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    args = ap.parse_args()
    runs = max(1, min(args.runs, 50))
    only = {n for n in args.only.split(",") if n}
    brought_up = json.loads(meshctl("lab", "status", "-o", "json").stdout).get("state") != "up"
    if brought_up:
        meshctl("lab", "up")
    rows = []
    try:
        with tempfile.TemporaryDirectory() as out:
            for name, fault, src, dst, size in scenarios(only):
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
                        hand.append(manual(src, dst, size))
                    rows.append((name, walls, own, verdicts, hand))
                finally:
                    if fault:
                        meshctl("lab", "clear")
    finally:
        if brought_up:
            meshctl("lab", "down")
    print(f"meshctl probe, {runs} runs per scenario (captures on, default settings)")
    print(f"{'scenario':<18} {'median s':>9} {'max s':>7} {'run ms':>7} {'by hand s':>10} "
          f"{'hand max':>9} {'ratio':>6}  verdict")
    for name, walls, own, verdicts, hand in rows:
        med, hmed = statistics.median(walls), statistics.median(hand)
        print(f"{name:<18} {med:>9.2f} {max(walls):>7.2f} {statistics.median(own):>7.0f} "
              f"{hmed:>10.2f} {max(hand):>9.2f} {med / hmed:>6.2f}  {', '.join(sorted(verdicts))}")


if __name__ == "__main__":
    main()
