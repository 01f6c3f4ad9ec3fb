"""What the GPU can do, measured with torch alone (no ncfast build needed): copy bandwidth, dense
GEMM peaks, and the cuBLAS rate of every batched GEMM the slab path's planner produces for the
benchmark cases (ncfast/backend/gram_plan.py, loaded from its file).

    python benchmarks/gpu_probe.py [OUT_DIR]

Prints a table; writes OUT_DIR/probe.json and OUT_DIR/peaks.env (NCFAST_PEAK_* for
benchmarks/test_bench_cuda.py's floors). Timing: CUDA events, best of 5 after a warm-up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def load_planner():
    spec = importlib.util.spec_from_file_location("gram_plan", ROOT / "ncfast" / "backend" / "gram_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gram_plan"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gp = load_planner()
SLAB_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "tf32": torch.float32, "f32": torch.float32,
               "f64": torch.float64}
M = 1 << 20
# The cases of benchmarks/test_bench_cuda.py (rows per call, D, K, slab mode) and its training step.
CASES = [
    ("N=64M D=128 K=1000 bf16", 4 * M, 128, 1000, "bf16"),
    ("N=16M D=1024 K=1000 bf16", 4 * M, 1024, 1000, "bf16"),
    ("N=4M D=4096 K=1000 bf16", 4 * M, 4096, 1000, "bf16"),
    ("N=16M D=1024 K=1000 fp32 exact", 4 * M, 1024, 1000, "f64"),
    ("N=16M D=1024 K=1000 fp32 exact (f32)", 4 * M, 1024, 1000, "f32"),
    ("step B=256 D=2048 K=1000 bf16", 256, 2048, 1000, "bf16"),
]


def best_seconds(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return min(times)


def matmul_precision(mode: str):
    matmul = torch.backends.cuda.matmul

    class Guard:
        def __enter__(self):
            self.previous = matmul.fp32_precision
            if mode in ("tf32", "f32"):
                matmul.fp32_precision = "tf32" if mode == "tf32" else "ieee"

        def __exit__(self, *exc):
            matmul.fp32_precision = self.previous

    return Guard()


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 2 GiB device-to-device copy."""
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = best_seconds(lambda: dst.copy_(src))
    del src, dst
    return 2 * (2 << 30) / seconds


def dense_peak(mode: str, n: int = 8192) -> float:
    dtype = SLAB_DTYPES[mode]
    a = torch.randn(n, n, device="cuda").to(dtype)
    b = torch.randn(n, n, device="cuda").to(dtype)
    with matmul_precision(mode):
        seconds = best_seconds(lambda: torch.mm(a, b))
    return 2 * n ** 3 / seconds


def block_gemm_rates(rows: int, dim: int, k: int, mode: str, props) -> dict:
    """Times each batched GEMM of the plan of one call's first chunk, on random slab contents."""
    layout = gp.make_layout(dim, mode)
    budget = min(gp.SLAB_BUDGET, props.total_memory // 16)
    plan = gp.plan_update(rows, k, layout, sm_count=props.multi_processor_count, slab_budget=budget)
    dtype = SLAB_DTYPES[mode]
    partial_dtype = torch.float64 if mode == "f64" else torch.float32
    dp, ld = layout.padded_dim, plan.ld
    chunk = plan.chunk_rows
    gemm_rows = plan.gemm_rows(chunk)
    slab = torch.randn(plan.slab_elems, device="cuda").to(dtype)
    partial = torch.zeros(layout.partial_elems, dtype=partial_dtype, device="cuda")
    launches = []
    total = 0.0
    sets = [("slab", plan.gemms, gemm_rows, ld)]
    if not plan.small:
        sets.append(("corrections", plan.corr_gemms, plan.corr_rows, dp))
    for what, gemms, k_rows, stride in sets:
        for g in gemms:
            x = slab if what == "slab" else slab[: plan.corr_rows * dp]
            xt = x.as_strided((g.count, g.size, k_rows), (g.col_stride, 1, stride), g.x_col)
            yb = x.as_strided((g.count, k_rows, g.size), (g.col_stride, stride, 1), g.y_col)
            out = partial.as_strided((g.count, g.size, g.size), (g.out_stride, dp, 1), g.out_offset)

            def run(out=out, xt=xt, yb=yb):
                if dtype in (torch.float16, torch.bfloat16):
                    torch.baddbmm(out, xt, yb, out_dtype=torch.float32, out=out)
                else:
                    out.baddbmm_(xt, yb)

            with matmul_precision(mode):
                seconds = best_seconds(run)
            total += seconds
            launches.append({"set": what, "level": g.level, "batch": g.count, "size": g.size, "rows": k_rows,
                             "ms": seconds * 1e3, "tflops": 2 * g.count * g.size ** 2 * k_rows / seconds / 1e12})
    del slab, partial
    torch.cuda.empty_cache()
    useful = chunk * dim * dim  # flops of the chunk's symmetric Gram, DESIGN.md section 8
    return {"chunk_rows": chunk, "chunks": plan.num_chunks, "levels": plan.levels, "splits": plan.splits,
            "small": plan.small, "padded_dim": dp, "computed_fraction": plan.computed_fraction,
            "gemm_ms": total * 1e3, "useful_tflops": useful / total / 1e12, "launches": launches}


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "gpu-checks"))
    out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    report = {"device": props.name, "capability": list(torch.cuda.get_device_capability(0)),
              "sms": props.multi_processor_count, "memory_gib": props.total_memory / 2 ** 30,
              "torch": torch.__version__, "cuda": torch.version.cuda}
    print(f"device: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
          f"{props.total_memory / 2 ** 30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")
    report["copy_tbs"] = copy_bandwidth() / 1e12
    print(f"copy bandwidth (read + write): {report['copy_tbs']:.2f} TB/s")
    peaks = {}
    for mode in ("bf16", "f16", "tf32", "f32", "f64"):
        peaks[mode] = dense_peak(mode, 8192 if mode not in ("f32", "f64") else 4096) / 1e12
        print(f"dense GEMM {mode:>4}: {peaks[mode]:7.1f} TFLOP/s")
    report["dense_tflops"] = peaks
    report["plans"] = {}
    print(f"\n{'case':<40}{'chunk':>9}{'L':>3}{'S':>4}{'waste':>7}{'GEMM ms':>10}{'useful TF/s':>13}"
          f"{'of peak':>9}")
    for name, rows, dim, k, mode in CASES:
        r = block_gemm_rates(rows, dim, k, mode, props)
        report["plans"][name] = r
        peak = peaks[mode]
        print(f"{name:<40}{r['chunk_rows']:>9}{r['levels']:>3}{r['splits']:>4}{r['computed_fraction']:>7.2f}"
              f"{r['gemm_ms']:>10.3f}{r['useful_tflops']:>13.1f}{r['useful_tflops'] / peak:>9.1%}")
        for launch in r["launches"]:
            print(f"    {launch['set']:<12} level {launch['level']}: {launch['batch']:>4} x {launch['size']:>5}^2 x "
                  f"{launch['rows']:>8} rows {launch['ms']:9.3f} ms {launch['tflops']:8.1f} TFLOP/s")
    (out / "probe.json").write_text(json.dumps(report, indent=1))
    # The floor of precision="exact" is the float32 FMA rate (DESIGN.md section 8), whichever slab
    # the path uses for it.
    (out / "peaks.env").write_text(
        f"export NCFAST_PEAK_TBS={report['copy_tbs']:.3f}\n"
        f"export NCFAST_PEAK_TFLOPS={peaks['bf16']:.1f}\n"
        f"export NCFAST_PEAK_TF32_TFLOPS={peaks['tf32']:.1f}\n"
        f"export NCFAST_PEAK_FP32_TFLOPS={peaks['f32']:.1f}\n")
    print(f"\npeaks for the benchmark floors: {out / 'peaks.env'}")


if __name__ == "__main__":
    main()
