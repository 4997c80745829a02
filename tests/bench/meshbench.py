"""What the benchmarks here share: the meshctl binary and a way to run it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def meshctl_path():
    """The release meshctl if built, else the debug one."""
    for profile in ("release", "debug"):
        p = os.path.join(ROOT, "target", profile, "meshctl")
        if os.path.exists(p):
            return p
    sys.exit("build meshctl first: cargo build --release --bins")


# MESHCTL names the binary (the tests pass the one they were built with).
MESHCTL = os.environ.get("MESHCTL") or meshctl_path()


def meshctl(*args, ok=(0,), timeout=600):
    """Runs meshctl; leaves with its output unless the exit code is in `ok`."""
    out = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode not in ok:
        sys.exit(f"meshctl {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out
