"""Benchmark helpers: ncfast and the pure-PyTorch reference run side by side in one session;
the summary at the end prints their ratio with the achieved throughput and peak memory."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

# case name -> {"ncfast": stats, "reference": stats, "work": {...}}
RESULTS: dict = defaultdict(dict)
# CUDA cases, timed with CUDA events: case name -> {"ncfast": s, "reference": s, "work": {...}}
CUDA_RESULTS: dict = defaultdict(dict)
# CPU update cases (test_bench_class_stats.py): case name -> {"rows", "dim", "times", "gram", "load"}
CPU_CASES: dict = {}
# Busy-machine runs (test_bench_busy.py): workload -> {"rows", "best": {(build, setting, condition): s}, ...}
BUSY_RESULTS: dict = {}


def scale() -> float:
    """NCFAST_BENCH_SCALE=0.1 runs every case on a tenth of the rows (quick check)."""
    return float(os.environ.get("NCFAST_BENCH_SCALE", "1"))


def _read_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak resident memory above the level at start, from the kernel's high-water mark
    (reset through /proc/self/clear_refs, Linux only)."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start_kib = _read_status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mib = (_read_status_kib("VmHWM") - self.start_kib) / 1024


def record(case: str, impl: str, benchmark, work: dict, peak_mib: float) -> None:
    RESULTS[case][impl] = {"mean": benchmark.stats.stats.mean, "min": benchmark.stats.stats.min, "peak_mib": peak_mib}
    RESULTS[case]["work"] = work


def _cuda_summary(tr) -> None:
    tr.section("ncfast CUDA vs pure-PyTorch reference (CUDA events, median)")
    header = (f"{'case':<46}{'ncfast ms':>11}{'ref ms':>10}{'ratio':>8}{'TFLOP/s':>9}{'GB/s':>8}"
              f"{'floor ms':>10}{'of floor':>10}")
    tr.write_line(header)
    for case, res in CUDA_RESULTS.items():
        if "ncfast" not in res:
            continue
        t, work = res["ncfast"], res["work"]
        ref = res.get("reference") or CUDA_RESULTS.get(res.get("reference_of"), {}).get("reference")
        ratio = f"{ref / t:>8.2f}" if ref else f"{'-':>8}"
        ref_ms = f"{ref * 1e3:>10.2f}" if ref else f"{'-':>10}"
        tr.write_line(
            f"{case:<46}{t * 1e3:>11.2f}{ref_ms}{ratio}{work['flops'] / t / 1e12:>9.1f}"
            f"{work['bytes'] / t / 1e9:>8.0f}{work['floor_s'] * 1e3:>10.2f}{work['floor_s'] / t:>10.1%}"
        )
    tr.write_line("flops = N*D^2 (symmetric Gram); floor = max(flops / peak of the path, bytes / copy "
                  "bandwidth), DESIGN.md section 8; ratio = reference time / ncfast time; [cublas]: the slab "
                  "path (NCFAST_CUDA_GRAM=cublas), else the kernel path")


def _cpu_summary(tr) -> None:
    tr.section("ClassStats.update on the CPU (best round; rates count N*D^2 flops)")
    tr.write_line(f"{'case':<28}{'rows':>10}{'ncfast s':>10}{'GFLOP/s':>9}{'of Gram':>9}{'vs ref':>8}"
                  f"{'vs torch':>9}{'fast s':>8}{'fast of bf16 Gram':>18}{'fast vs exact':>14}{'load':>12}")
    for case, res in CPU_CASES.items():
        t, work = res["times"], res["rows"] * res["dim"] ** 2
        gram = max(res["gram"].get("block", 0.0), res["gram"].get("syrk", 0.0))
        line = (f"{case:<28}{res['rows']:>10}{t['ncfast']:>10.3f}{work / t['ncfast'] / 1e9:>9.1f}"
                f"{work / t['ncfast'] / gram:>9.2f}{t['reference'] / t['ncfast']:>8.2f}"
                f"{t['torch one-shot'] / t['ncfast']:>9.2f}")
        if "ncfast fast" in t:
            fast_gram = res["gram"].get("bf16 block")
            of_fast = f"{work / t['ncfast fast'] / fast_gram:>18.2f}" if fast_gram else f"{'-':>18}"
            line += f"{t['ncfast fast']:>8.3f}{of_fast}{t['ncfast'] / t['ncfast fast']:>14.2f}"
        else:
            line += f"{'-':>8}{'-':>18}{'-':>14}"
        tr.write_line(line + f"{res['load']:>12}")
    tr.write_line("Gram rates (GFLOP/s): " + "; ".join(
        f"{case.split()[1]}: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in res["gram"].items())
        for case, res in CPU_CASES.items()))
    tr.write_line("of Gram = ncfast's rate / the better of its block Gram and OpenBLAS ssyrk at that D; "
                  "vs ref / vs torch = their time / ncfast's; load = 1-min load average before-after")


def _busy_summary(tr) -> None:
    tr.section("CPU update beside a busy process (best round, seconds)")
    for workload, res in BUSY_RESULTS.items():
        best, builds = res["best"], res["builds"]
        for build in builds:
            cells = "  ".join(f"{s} {best[(build, s, 'idle')]:.3f} / {best[(build, s, 'busy')]:.3f}"
                              for s in res["settings"])
            busy_best = min(best[(build, s, "busy")] for s in res["settings"])
            tr.write_line(f"{workload} {res['rows']} rows, {build}: idle / busy: {cells};  busy default / best "
                          f"setting {best[(build, 'default', 'busy')] / busy_best:.2f}")
        if len(builds) > 1:
            ratio = best[(builds[0], "default", "idle")] / best[(builds[1], "default", "idle")]
            tr.write_line(f"{workload}: idle default, {builds[0]} / {builds[1]}: {ratio:.3f}")
    tr.write_line("targets: busy default within 1.3x of the best setting; idle default within 5% of the baseline")


def pytest_terminal_summary(terminalreporter):
    if CUDA_RESULTS:
        _cuda_summary(terminalreporter)
    if CPU_CASES:
        _cpu_summary(terminalreporter)
    if BUSY_RESULTS:
        _busy_summary(terminalreporter)
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("ncfast vs pure-PyTorch reference")
    header = f"{'case':<34}{'ncfast s':>10}{'ref s':>10}{'ratio':>8}{'GFLOP/s':>10}{'GB/s':>8}{'peak MiB':>10}{'ref MiB':>9}"
    tr.write_line(header)
    for case, res in RESULTS.items():
        if "ncfast" not in res or "reference" not in res:
            continue
        fast, ref, work = res["ncfast"], res["reference"], res["work"]
        t = fast["min"]
        tr.write_line(
            f"{case:<34}{t:>10.3f}{ref['min']:>10.3f}{ref['min'] / t:>8.2f}"
            f"{work['flops'] / t / 1e9:>10.1f}{work['bytes'] / t / 1e9:>8.2f}"
            f"{fast['peak_mib']:>10.0f}{ref['peak_mib']:>9.0f}"
        )
    tr.write_line("ratio = reference time / ncfast time (best of rounds); flops = N*D^2 (symmetric Gram)")


@pytest.fixture(scope="session")
def results():
    return RESULTS
