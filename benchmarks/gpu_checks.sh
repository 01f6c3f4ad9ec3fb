#!/usr/bin/env bash
# Every GPU check in one command, for a machine with a CUDA GPU, nvcc and a CUDA build of
# PyTorch: build the extension for the local GPU only, run the CUDA tests, compute-sanitizer's
# memcheck over the CUDA test file, then the GPU benchmarks. A summary goes to stdout, full
# logs to $OUT (default: ./gpu-checks).
#
#   bash benchmarks/gpu_checks.sh                          # everything (about 5 minutes on an H100)
#   NCFAST_BENCH_SCALE=0.1 bash benchmarks/gpu_checks.sh   # benchmarks on a tenth of the rows
#   SKIP_SANITIZER=1 bash benchmarks/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

arch=$(python3 -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}{minor}')" 2>/dev/null) || {
    echo "no usable CUDA device seen by PyTorch"; exit 1; }
echo "device: $(python3 -c 'import torch; print(torch.cuda.get_device_name())') (sm_$arch)"

start=$SECONDS
if ! NCFAST_CUDA=1 NCFAST_CUDA_ARCHS="$arch" NCFAST_BUILD_JOBS="$(nproc)" \
        python3 setup.py build_ext --inplace > "$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log"; exit 1
fi
echo "build: $((SECONDS - start)) s; $(python3 -c 'import ncfast; print(ncfast.build_info())')"

status=0
python3 -m pytest -q -m cuda tests > "$out/cuda_tests.log" 2>&1 || status=1
echo "CUDA tests: $(tail -n 1 "$out/cuda_tests.log")"

if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer > /dev/null; then
    # graph capture and the 50k-class case are left out: slow under the sanitizer
    compute-sanitizer --tool memcheck --error-exitcode 3 \
        python3 -m pytest -q tests/backend/test_cuda.py -k "not 50000 and not graph" > "$out/memcheck.log" 2>&1 || status=1
    echo "memcheck: $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -n 1) / $(grep -E 'passed|failed' "$out/memcheck.log" | tail -n 1)"
fi

python3 -m pytest benchmarks/test_bench_cuda.py -q > "$out/bench_cuda.log" 2>&1 || status=1
sed -n '/CUDA vs pure-PyTorch/,/^flops/p' "$out/bench_cuda.log"
exit $status
