"""Start-up cost of the `ncfast` command: `ncfast --help`, `ncfast --version` and `ncfast score`
on a tiny file, against `python -c "import torch"` (the floor every command pays), in fresh
processes, interleaved round by round so that load on the machine hits every case alike.

    python benchmarks/cli_startup.py                       # this checkout
    python benchmarks/cli_startup.py --before /tmp/old     # side by side with another copy of
                                                           # the package (a folder holding ncfast/)

Prints, for each case, the median and best wall time of the rounds and the median CPU time
(user + system) of the process, and both medians above the floor. CPU time is what the
start-up costs in work; it is far less disturbed than wall time by other processes on a busy
machine.
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


def run_once(args, pythonpath, cwd):
    """(wall seconds, CPU seconds of the process) of one fresh run (in `cwd`, so that a
    checkout's own ncfast/ folder does not shadow the variant on PYTHONPATH)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = 0  # reaped here; keeps Popen from waiting again
    return wall, usage.ru_utime + usage.ru_stime


def import_above_torch(pythonpath, cwd) -> float:
    """Milliseconds that importing the command (``ncfast.cli`` and the package) takes beyond
    importing torch, from ``python -X importtime`` of ``ncfast --version``."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", ENTRY, "--version"], env=env, cwd=cwd,
                          capture_output=True, text=True)
    cumulative = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            cumulative.setdefault(name, int(parts[1]))  # first (outermost) import of each name
    whole = max(cumulative.get("ncfast.cli", 0), cumulative.get("ncfast", 0))
    return (whole - cumulative["torch"]) / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--before", help="a folder holding another ncfast package (with a built _C), measured "
                                         "side by side")
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
        imports = {v: [] for v in variants}
        for _ in range(args.rounds):
            for c, cmd in table.items():
                for v, path in variants.items():
                    if c.startswith("import torch") and v != next(iter(variants)):
                        continue  # the floor does not depend on the variant
                    times[(v, c)].append(run_once(cmd, path, folder))
            for v, path in variants.items():
                imports[v].append(import_above_torch(path, folder))
    print(f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    first = next(iter(variants))
    floor_wall = statistics.median(t[0] for t in times[(first, "import torch (floor)")])
    floor_cpu = statistics.median(t[1] for t in times[(first, "import torch (floor)")])
    print(f"{'case':<24} {'variant':<14} {'wall median':>11} {'wall best':>9} {'CPU median':>10} "
          f"{'wall - floor':>12} {'CPU - floor':>11}")
    for c in table:
        for v in variants:
            t = times[(v, c)]
            if not t:
                continue
            wall = statistics.median(w for w, _ in t)
            cpu = statistics.median(u for _, u in t)
            print(f"{c:<24} {v:<14} {wall:11.3f} {min(w for w, _ in t):9.3f} {cpu:10.3f} "
                  f"{wall - floor_wall:+12.3f} {cpu - floor_cpu:+11.3f}")
    for v in variants:
        print(f"import of the command beyond torch ({v}): median {statistics.median(imports[v]):.1f} ms, "
              f"best {min(imports[v]):.1f} ms (python -X importtime)")


if __name__ == "__main__":
    main()
