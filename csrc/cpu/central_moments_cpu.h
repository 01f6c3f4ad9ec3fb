// sum_i ||x_i - c||^4 and sum_i ||x_i - c||^2 (x_i - c) over a batch of rows, in float64: the
// batch's share of ClassStats' optional fourth moments (ncfast/_moments.py, fourth_moments=True).
#pragma once

#include <cstdint>

#include "../core/dtype.h"

namespace ncfast::cpu {

// rows x dim values of `dtype` (float32/float64/float16/bfloat16) at `x`, `row_stride` elements
// apart (any byte alignment); `centre` and `third` hold dim doubles (third is overwritten).
// Returns the fourth moment. Rows are taken in fixed chunks whose partial sums are added in
// chunk order, so the result does not depend on the thread count. Rows must be finite.
double central_moments_cpu(const void* x, int64_t rows, int64_t dim, int64_t row_stride, DType dtype,
                           const double* centre, double* third);

}  // namespace ncfast::cpu
