#!/usr/bin/env python3
"""How often `meshctl probe` names a fault it was never shown.

Draws CASES composed lab faults (`meshctl lab fault random --seed`: a truth
family first, then a part of it, from every mechanism at every place it
makes sense, each with its ground truth from the lab's one documented
table, docs/lab-faults.md), injects each the real way, runs the probe
command the fault calls for, and compares the verdict with the truth; then
HEALTHY runs of the same probe commands (shuffled by the seed) on the healthy lab, where anything
but `ok` is a false alarm. Every verdict is also read for claims its
evidence does not back, and for path steps nothing observed them or their
blocker's evidence is missing (the same rules as tests/src/verdict.rs).

Prints the class confusion matrix, accuracy per class and per cause, the
misses, time to verdict, and ends with the four lines the issue fixes:
`class accuracy: P %`, `cause accuracy: P %`, `false alarms: N of M`,
`unsupported claims: N`. With --json FILE, writes every case too.

Usage (root):  sudo tests/bench/accuracy.py [--cases 200] [--seed 1] [--healthy 50]
The lab is brought up if it is not, and taken down again only in that case.
Exit 0 when every run ended (whatever the accuracy), 1 when a run failed to
run at all (a lab or meshctl error), 2 on bad arguments.
"""

import argparse
import collections
import json
import random
import statistics
import sys
import tempfile
import time

from meshbench import meshctl


def unsupported_claims(report):
    """Every claim of the report's verdict its evidence does not back."""
    v = report.get("verdict", {})
    evidence = v.get("evidence") or []
    claims = v.get("claims") or []
    checks = report.get("checks") or []
    out = []
    texts = [c.get("text", "") for c in claims]
    if claims and "; ".join(texts) != v.get("summary", ""):
        out.append(f"summary {v.get('summary')!r} is not its claims joined")
    for c in claims:
        cited = c.get("evidence") or []
        if not cited:
            out.append(f"claim {c.get('text')!r} cites no evidence")
        out += [f"claim {c.get('text')!r} cites missing evidence {i}"
                for i in cited if not isinstance(i, int) or i >= len(evidence)]
    def not_run(s):
        ran = [c for c in checks
               if c.get("name") == s["check"] and c.get("from") == s.get("from")
               and c.get("to") == s.get("to")]
        if not ran:
            return "not in the run"
        return "skipped" if ran[0].get("status") == "skipped" else None

    for i, e in enumerate(evidence):
        s = e.get("source") or {}
        if "check" in s:
            if why := not_run(s):
                out.append(f"evidence {i} cites check {s}: {why}")
        elif "capture" not in s and "inventory" not in s:
            out.append(f"evidence {i} says not where it came from")
    for i, step in enumerate(v.get("path") or []):
        s = step.get("source") or {}
        if "check" in s and (why := not_run(s)):
            out.append(f"path step {i} observed by check {s}: {why}")
        cited = step.get("evidence") or []
        if step.get("resource") and not cited:
            out.append(f"path step {i} names a blocker without evidence")
        out += [f"path step {i} cites missing evidence {n}"
                for n in cited if not isinstance(n, int) or n >= len(evidence)]
    return out


def probe(run, outdir):
    """Runs the probe command of `run`; returns (report, seconds)."""
    start = time.monotonic()
    out = meshctl("probe", "--from", run["from"], "--to", run["to"], "--size", str(run["size"]),
                  "--out", outdir, "-o", "json", ok=(0, 1, 3))
    took = time.monotonic() - start
    return json.loads(out.stdout), took


def label(expect):
    cause = expect.get("cause")
    return f"{expect['class']}/{cause}" if cause else expect["class"]


def pct(n, d):
    return 100.0 * n / d if d else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200, help="composed faults to try (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="which faults, in which order (default 1)")
    ap.add_argument("--healthy", type=int, default=50, help="healthy runs (default 50)")
    ap.add_argument("--json", metavar="FILE", help="also write every case as JSON")
    args = ap.parse_args()
    if args.cases < 0 or args.healthy < 0 or args.cases + args.healthy == 0:
        ap.error("--cases and --healthy are counts, and at least one must be positive")

    was_up = json.loads(meshctl("lab", "status", "-o", "json").stdout).get("state") == "up"
    if not was_up:
        meshctl("lab", "up")
    meshctl("lab", "clear")

    space = json.loads(meshctl("lab", "fault", "compose", "--list", "-o", "json").stdout)
    # The lab's own draw (a truth family first, then a part of it), seeds
    # SEED*100000, SEED*100000+1, ...: every verdict gets its share.
    drawn = [json.loads(meshctl("lab", "fault", "random", "--seed", str(args.seed * 100000 + i),
                                "--dry-run", "-o", "json").stdout)
             for i in range(args.cases)]
    print(f"{args.cases} composed faults drawn (seed {args.seed}) from a space of {len(space)}, "
          f"{args.healthy} healthy runs")

    cases = []
    with tempfile.TemporaryDirectory() as outdir:
        try:
            for n, fault in enumerate(drawn, 1):
                meshctl("lab", "fault", "compose", fault["name"])
                report, took = probe(fault["probe"], outdir)
                meshctl("lab", "clear")
                v = report["verdict"]
                got = {"class": v.get("class", ""), "cause": v.get("cause") or None}
                case = {"fault": fault["name"], "expect": fault["expect"], "got": got,
                        "seconds": round(took, 2), "summary": v.get("summary", ""),
                        "rule": v.get("rule", ""), "unsupported": unsupported_claims(report),
                        "run_id": report.get("run_id")}
                cases.append(case)
                mark = "ok " if got["class"] == fault["expect"]["class"] else "MISS"
                print(f"[{n:>3}/{args.cases}] {mark} {fault['name']:<44} "
                      f"expect {label(fault['expect']):<36} got {label(got)}", flush=True)
            commands = sorted({(f["probe"]["from"], f["probe"]["to"], f["probe"]["size"])
                               for f in space})
            random.Random(args.seed).shuffle(commands)
            healthy = []
            for n in range(args.healthy):
                frm, to, size = commands[n % len(commands)]
                report, took = probe({"from": frm, "to": to, "size": size}, outdir)
                v = report["verdict"]
                healthy.append({"probe": [frm, to, size], "class": v.get("class"),
                                "summary": v.get("summary", ""), "seconds": round(took, 2),
                                "unsupported": unsupported_claims(report)})
                print(f"[healthy {n + 1:>3}/{args.healthy}] {frm} -> {to}: {v.get('class')}",
                      flush=True)
        finally:
            meshctl("lab", "clear", ok=(0, 1, 2, 3, 4))
            if not was_up:
                meshctl("lab", "down", ok=(0, 1, 2, 3, 4))

    report_accuracy(cases, healthy)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "cases": cases, "healthy": healthy}, f, indent=1)


def report_accuracy(cases, healthy):
    classes = sorted({c["expect"]["class"] for c in cases} | {c["got"]["class"] for c in cases})
    matrix = collections.Counter((c["expect"]["class"], c["got"]["class"]) for c in cases)
    if cases:
        print("\nconfusion matrix (rows: truth, columns: verdict)")
        short = [k[:12] for k in classes]
        print(" " * 20 + " ".join(f"{s:>12}" for s in short))
        for t in classes:
            print(f"{t[:20]:<20}" + " ".join(f"{matrix[(t, g)]:>12}" for g in classes))

        print("\naccuracy per class (class right / cases)")
        for t in classes:
            of = [c for c in cases if c["expect"]["class"] == t]
            if of:
                right = sum(c["got"]["class"] == t for c in of)
                print(f"  {t:<22} {right:>4} / {len(of):<4} {pct(right, len(of)):5.1f} %")
        print("\naccuracy per cause (class and cause right / cases)")
        for lab in sorted({label(c["expect"]) for c in cases}):
            of = [c for c in cases if label(c["expect"]) == lab]
            right = sum(label(c["got"]) == lab for c in of)
            print(f"  {lab:<40} {right:>4} / {len(of):<4} {pct(right, len(of)):5.1f} %")
        misses = [c for c in cases if label(c["got"]) != label(c["expect"])]
        if misses:
            print("\nmisses")
            for c in misses:
                print(f"  {c['fault']}: expect {label(c['expect'])}, got {label(c['got'])} "
                      f"({c['rule']}): {c['summary']}")
        times = [c["seconds"] for c in cases]
        print(f"\ntime to verdict: median {statistics.median(times):.1f} s, "
              f"max {max(times):.1f} s over {len(times)} faults")
    unsupported = [(c.get("fault") or "healthy", u) for c in cases + healthy
                   for u in c["unsupported"]]
    for who, u in unsupported:
        print(f"unsupported: {who}: {u}")
    alarms = [h for h in healthy if h["class"] != "ok"]
    for h in alarms:
        print(f"false alarm: {' '.join(map(str, h['probe']))}: {h['class']}: {h['summary']}")
    class_right = sum(c["got"]["class"] == c["expect"]["class"] for c in cases)
    cause_right = sum(label(c["got"]) == label(c["expect"]) for c in cases)
    print(f"\nclass accuracy: {pct(class_right, len(cases)):.1f} %")
    print(f"cause accuracy: {pct(cause_right, len(cases)):.1f} %")
    print(f"false alarms: {len(alarms)} of {len(healthy)}")
    print(f"unsupported claims: {len(unsupported)}")


if __name__ == "__main__":
    sys.exit(main())
