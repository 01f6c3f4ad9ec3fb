// The provisional shift p_cj of the per-class moments (class_sums_cuda.cu) and of the class
// update (class_stats_cuda.cu): both must compute it bit for bit the same way.
#pragma once

#include "common.cuh"

namespace ncfast::cuda {

// A seen class: its running mean rounded to the accumulation type (exactly the shift the Gram
// uses). A new class: its chunk's first row (exact in the accumulation type).
template <typename Acc, typename In>
__device__ __forceinline__ Acc provisional_shift(bool seen, double mean, In first_row_value) {
  return seen ? round_acc(mean, Acc{}) : static_cast<Acc>(to_acc(first_row_value));
}

}  // namespace ncfast::cuda
