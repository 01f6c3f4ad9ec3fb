"""The CPU update of this checkout against another build of ncfast, case by case.

    python benchmarks/compare_builds.py --baseline /path/to/other/checkout [--scale 0.25] [--rounds 3]

The other checkout must be importable from its folder (built in place, e.g.
``NCFAST_CUDA=0 python setup.py build_ext --inplace``). Each case's rows are written once to a
temporary .npy pair (in /dev/shm when it exists) and every timed run is a fresh process that
maps them and times one ``ClassStats.update`` of all rows (after a warm-up update of a few
rows); rounds alternate the two builds, starting with the other one each round, and the best
round of each is kept. The 1-minute load average is printed before and after each case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = {
    "N=2e6 D=512 K=100 fp32": (2_000_000, 512, 100, "float32", "auto"),
    "N=2e7 D=64 K=10 fp32": (20_000_000, 64, 10, "float32", "auto"),
    "N=1e6 D=1024 K=1000 fp16": (1_000_000, 1024, 1000, "float16", "auto"),
    "N=1e6 D=1024 K=1000 fp16 fast": (1_000_000, 1024, 1000, "float16", "fast"),
    "N=4e6 D=256 K=1e5 fp32": (4_000_000, 256, 100_000, "float32", "auto"),
}

WORKER = """
import json, sys, time
import numpy as np, torch, ncfast
rows = np.load(sys.argv[1], mmap_mode="r")
rows.sum(axis=1, dtype=np.float32)  # map every page before timing
x = torch.from_numpy(rows)
y = torch.from_numpy(np.load(sys.argv[2]))
k, precision = int(sys.argv[3]), sys.argv[4]
kwargs = {} if precision == "auto" else {"precision": precision}
ncfast.ClassStats(k, x.shape[1], **kwargs).update(x[:4096], y[:4096])
stats = ncfast.ClassStats(k, x.shape[1], **kwargs)
start = time.perf_counter()
stats.update(x, y)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def _write_case(folder: Path, rows: int, dim: int, k: int, dtype: str):
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, rows)
    centres = rng.standard_normal((k, dim), dtype=np.float32)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=dtype, shape=(rows, dim))
    for a in range(0, rows, 1 << 18):
        b = min(rows, a + (1 << 18))
        x[a:b] = centres[y[a:b]] + rng.standard_normal((b - a, dim), dtype=np.float32) + 3.0
    x.flush()
    del x
    np.save(folder / "y.npy", y)
    return str(folder / "x.npy"), str(folder / "y.npy")


def _time(build: Path, x: str, y: str, k: int, precision: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(build))
    out = subprocess.run([sys.executable, "-c", WORKER, x, y, str(k), precision], env=env, cwd=build,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def _load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other checkout, built in place")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each case's rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    builds = {"this": ROOT, "baseline": args.baseline.resolve()}
    shm = Path("/dev/shm")
    print(f"{'case':<32}{'rows':>10}{'this s':>9}{'baseline s':>12}{'speed-up':>10}  load")
    for name in args.cases:
        rows, dim, k, dtype, precision = CASES[name]
        rows = int(rows * args.scale)
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
            x, y = _write_case(Path(tmp), rows, dim, k, dtype)
            load_before = _load()
            best = {b: float("inf") for b in builds}
            order = list(builds)
            for _ in range(args.rounds):
                for b in order:
                    best[b] = min(best[b], _time(builds[b], x, y, k, precision))
                order.reverse()
        print(f"{name:<32}{rows:>10}{best['this']:>9.3f}{best['baseline']:>12.3f}"
              f"{best['baseline'] / best['this']:>10.2f}  {load_before}-{_load()}", flush=True)


if __name__ == "__main__":
    main()
