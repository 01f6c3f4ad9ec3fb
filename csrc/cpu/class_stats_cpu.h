// Streaming class statistics on the CPU: one call folds a batch into the running statistics.
#pragma once

#include <cstdint>

#include "../core/class_stats.h"

namespace ncfast::cpu {

// Rows per block when the caller passes block_rows <= 0: about 8 MiB of input, so a block
// and its centred copy stay in the last-level cache between the passes over it.
int64_t default_block_rows(int64_t dim, DType feature_dtype);

// Folds `batch` into `stats` block by block (DESIGN.md section 3, chunk update). All-or-nothing:
// if any block holds a bad label or (under kRaise) a non-finite row, every earlier block of
// this call is rolled back before returning the error.
UpdateResult update_class_stats(const StatsView& stats, const BatchView& batch,
                                NanPolicy nan_policy, int64_t block_rows);

// Number of OpenMP threads the CPU kernels use.
int num_threads();
void set_num_threads(int n);

}  // namespace ncfast::cpu
