"""Start-up cost of the `ncfast` command: `ncfast --help`, `ncfast --version` and `ncfast score`
on a tiny file, against `python -c "import torch"` (the floor every command pays), in fresh
processes, interleaved round by round so that load on the machine hits every case alike.

    python benchmarks/cli_startup.py                       # this checkout
    python benchmarks/cli_startup.py --before /tmp/old     # side by side with another copy of
                                                           # the package (a folder holding ncfast/)

Prints the median and the best of the rounds for each case, and the median above the floor.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ENTRY = "import sys; from ncfast.cli import main; sys.exit(main())"  # what the `ncfast` script runs


def cases(folder: str):
    x, y = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
    return {
        "import torch (floor)": ["-c", "import torch"],
        "ncfast --help": ["-c", ENTRY, "--help"],
        "ncfast --version": ["-c", ENTRY, "--version"],
        "ncfast score tiny.npy": ["-c", ENTRY, "score", x, y, "--quiet"],
    }


def run_once(args, pythonpath):
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--before", help="a folder holding another ncfast package, measured side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        np.save(os.path.join(folder, "x.npy"), rng.standard_normal((200, 8)).astype(np.float32))
        np.save(os.path.join(folder, "y.npy"), rng.integers(0, 4, 200))
        variants = {"this checkout": None}
        if args.before:
            variants = {"before": os.path.abspath(args.before), "after": None}
        table = cases(folder)
        times = {(v, c): [] for v in variants for c in table}
        for _ in range(args.rounds):
            for c, cmd in table.items():
                for v, path in variants.items():
                    if c.startswith("import torch") and v != next(iter(variants)):
                        continue  # the floor does not depend on the variant
                    times[(v, c)].append(run_once(cmd, path))
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    floor = statistics.median(times[(next(iter(variants)), "import torch (floor)")])
    print(f"{'case':<24} {'variant':<14} {'median s':>9} {'best s':>8} {'above floor':>12}")
    for c in table:
        for v in variants:
            t = times[(v, c)]
            if not t:
                continue
            med = statistics.median(t)
            print(f"{c:<24} {v:<14} {med:9.3f} {min(t):8.3f} {med - floor:+12.3f}")


if __name__ == "__main__":
    main()
