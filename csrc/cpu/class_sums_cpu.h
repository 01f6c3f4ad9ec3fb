// Per-class (per-slot) row sums of a block, accumulated in float64.
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace ncfast::cpu {

// sums[s, :] = sum of the rows i with row_slot[i] == s and keep[i] != 0, for s < num_slots.
// Threads split the columns, so no two threads touch the same output and no private copies
// of the K x D sums are needed (K may be 100k).
void class_sums(const void* x, DType dtype, int64_t rows, int64_t dim, int64_t row_stride,
                const int32_t* row_slot, const uint8_t* keep, int64_t num_slots, double* sums);

}  // namespace ncfast::cpu
