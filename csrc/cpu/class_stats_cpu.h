// Streaming class statistics on the CPU: one call folds a batch into the running statistics.
#pragma once

#include <cstdint>

#include "../core/class_stats.h"

namespace ncfast::cpu {

// How the block Gram multiplies: "exact" keeps float32 (float64 for float64 input); "fast"
// rounds the centred rows of 16-bit inputs to bfloat16 for a bfloat16 Gram with float32
// accumulation where this build and CPU have one (otherwise it is "exact").
enum class CpuPrecision : int32_t { kExact = 0, kFast = 1 };

// Which block path runs (tests and benchmarks; kAuto everywhere else): the one-pass path where
// it applies, or always the class-grouped one (per block, or over windows of the call).
enum class BlockPath : int32_t { kAuto = 0, kFused = 1, kGroupedBlocks = 2, kGroupedWindows = 3 };

// Rows per block when the caller passes block_rows <= 0: about 8 MiB of centred rows Z, so the
// block, its Z and the per-class sums stay in the last-level cache between passes.
int64_t default_block_rows(int64_t dim, DType feature_dtype, CpuPrecision precision);

// The bfloat16 Gram `precision` uses for this dtype in this build on this CPU (0: none, the
// float32 Gram; else a Bf16Gram of gram_kernels.h).
int bf16_gram_for(DType feature_dtype, CpuPrecision precision);

// Folds `batch` into `stats` block by block (DESIGN.md section 3, chunk update). All-or-nothing:
// if any block holds a bad label or (under kRaise) a non-finite row, every earlier block of
// this call is rolled back before returning the error. The result does not depend on the
// number of threads.
UpdateResult update_class_stats(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                                int64_t block_rows, CpuPrecision precision = CpuPrecision::kExact,
                                BlockPath path = BlockPath::kAuto);

}  // namespace ncfast::cpu
