#!/usr/bin/env bash
# Every GPU check in one command, for a machine with a CUDA GPU, nvcc and a CUDA build of PyTorch
# (under 8 minutes on an H100/H200: each step has a time limit, 470 s together):
#   1. benchmarks/gpu_probe.py, torch only: copy bandwidth, dense GEMM peaks, and the cuBLAS rate of
#      every batched GEMM the slab planner produces for the benchmark cases; its peaks become the
#      benchmark's floors (the device's own figures, e.g. an H200's)
#   2. build the extension for the local GPU only
#   3. the CUDA tests of both Gram paths: the kernel path (default) with the slab path's own tests,
#      then every other CUDA test again with NCFAST_CUDA_GRAM=cublas
#   4. compute-sanitizer memcheck over the slab path's tests (no graphs, no torch.compile)
#   5. the GPU benchmarks, both paths, with each case's fraction of the floor
# A summary goes to stdout, full logs to $OUT (default: ./gpu-checks).
#
#   bash benchmarks/gpu_checks.sh                          # everything
#   NCFAST_BENCH_SCALE=1 bash benchmarks/gpu_checks.sh     # full-size benchmarks (not within 8 minutes)
#   SKIP_SANITIZER=1 bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
start=$SECONDS

# step LIMIT LOG command...: runs the command with a time limit, its output in $out/LOG.
step() {
    local limit=$1 log=$2
    shift 2
    timeout --kill-after=10 "$limit" "$@" > "$out/$log" 2>&1
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "  (stopped after ${limit} s: see $out/$log)"; fi
    return $rc
}

arch=$(python3 -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}{minor}')" 2>/dev/null) || {
    echo "no usable CUDA device seen by PyTorch"; exit 1; }
echo "device: $(python3 -c 'import torch; print(torch.cuda.get_device_name())') (sm_$arch)"

# 1. What the device does with torch alone.
step 45 probe.log python3 benchmarks/gpu_probe.py "$out" || status=1
sed -n '/^copy bandwidth/,$p' "$out/probe.log"
if [ -f "$out/peaks.env" ]; then
    # shellcheck disable=SC1091
    . "$out/peaks.env"
    echo "floors from the probe: $(tr '\n' ' ' < "$out/peaks.env" | sed 's/export //g')"
fi

# 2. Build for this GPU.
t=$SECONDS
if ! step 90 build.log env NCFAST_CUDA=1 NCFAST_CUDA_ARCHS="$arch" NCFAST_BUILD_JOBS="$(nproc)" \
        python3 setup.py build_ext --inplace; then
    tail -n 40 "$out/build.log"; exit 1
fi
echo "build: $((SECONDS - t)) s; $(python3 -c 'import ncfast; print(ncfast.build_info())')"

# 3. CUDA tests, both Gram paths.
step 150 cuda_tests.log python3 -m pytest -q -m cuda tests || status=1
echo "CUDA tests (kernel path; slab path's own tests): $(tail -n 1 "$out/cuda_tests.log")"
step 75 cuda_tests_cublas.log env NCFAST_CUDA_GRAM=cublas python3 -m pytest -q -m cuda tests \
    --ignore=tests/backend/test_cuda_cublas.py || status=1
echo "CUDA tests again with NCFAST_CUDA_GRAM=cublas: $(tail -n 1 "$out/cuda_tests_cublas.log")"

# 4. Memory errors in the slab path's kernels (and cuBLAS on its views).
if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer > /dev/null; then
    step 50 memcheck.log compute-sanitizer --tool memcheck --error-exitcode 3 \
        python3 -m pytest -q tests/backend/test_cuda_cublas.py \
        -k "(odd_shapes and not 50000 and not 1000) or poisoned or bad_label or nonfinite or skip or zero_rows or strided" \
        || status=1
    echo "memcheck: $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -n 1) / $(grep -E 'passed|failed' "$out/memcheck.log" | tail -n 1)"
fi

# 5. Benchmarks against the floor.
step 60 bench_cuda.log env NCFAST_BENCH_SCALE="${NCFAST_BENCH_SCALE:-0.1}" NCFAST_BENCH_REPEATS="${NCFAST_BENCH_REPEATS:-2}" \
    python3 -m pytest benchmarks/test_bench_cuda.py -q || status=1
sed -n '/CUDA vs pure-PyTorch/,/^flops/p' "$out/bench_cuda.log"
echo "total: $((SECONDS - start)) s; logs in $out"
exit $status
