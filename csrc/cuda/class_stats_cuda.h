// Streaming class statistics on a CUDA device: one call enqueues the whole chunk update of a
// batch on the caller's stream. Plain C++ header (no CUDA types), so the bindings compile
// without the CUDA toolkit's headers.
#pragma once

#include <cstdint>

#include "../core/class_stats.h"

namespace ncfast::cuda {

enum class Precision : int32_t {
  kExact = 0,  // float32 FMA on float32-centred rows (float64 for float64 input)
  kFast = 1,   // tensor cores: float16/bfloat16 operands, TF32 for float32 input
};

struct UpdateShape {
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t num_classes = 0;
  DType feature_dtype = DType::kFloat32;
  NanPolicy nan_policy = NanPolicy::kRaise;
  Precision precision = Precision::kExact;
  int64_t chunk_rows = 0;  // <= 0: default_chunk_rows
};

// Rows per chunk when the caller passes chunk_rows <= 0: up to 4M rows, fewer when the
// per-class scratch (min(K, chunk) x D, about 28 bytes per entry) would pass 1 GiB.
int64_t default_chunk_rows(const UpdateShape& shape);

// Bytes of device scratch update_class_stats needs for `shape` (queries the current device for
// the sort's temporary storage; call with a CUDA device present).
int64_t scratch_bytes(const UpdateShape& shape);

// Enqueues the update of `stats` by `batch` on `stream` (a cudaStream_t). Never synchronises the
// host and never allocates: `scratch` (at least scratch_bytes(shape), 256-byte aligned) and
// `status` (16 int64 words, see common.cuh) are device buffers owned by the caller. Bad input is
// reported through `status` only; a rejected batch leaves every statistic unchanged, and so do
// later calls until the caller clears the status. Throws std::runtime_error on launch errors.
void update_class_stats(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                        Precision precision, int64_t chunk_rows, void* scratch,
                        int64_t scratch_size, long long* status, void* stream);

// Number of multiprocessors of the current device (cached per device).
int sm_count();

}  // namespace ncfast::cuda
