// Per-class first and second moments of one chunk about a provisional shift, in float64:
//   sum1[s, j] = sum_{i in slot s} (x_ij - p_sj),   sum2[s, j] = sum_{i in slot s} (x_ij - p_sj)^2,
// where p_s is the class's running mean (rounded as the Gram's shift is) when the class has rows
// already, else the chunk's first row of that class: a data point, so neither sum cancels.
// The caller turns them into the chunk mean and the per-class scatter about the final shift
// (DESIGN.md section 3). Rows are visited in class-sorted order (`perm`), so a warp's run of one
// class accumulates in registers and reaches global memory once per run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../core/dtype.h"

namespace ncfast::cuda {

struct MomentsArgs {
  const void* x = nullptr;
  DType dtype = DType::kFloat32;
  int64_t ld = 0;
  int64_t dim = 0;
  int64_t rows = 0;                   // positions in the sorted order (the chunk's rows)
  int64_t row_offset = 0;             // chunk start within the call (for error rows)
  const uint32_t* sorted_key = nullptr;  // [rows] slots, ascending, dropped rows (sentinel) last
  const int32_t* perm = nullptr;      // [rows] chunk row at each sorted position
  uint32_t sentinel = 0;
  const int32_t* seg_begin = nullptr;  // [slots] first sorted position of each slot
  const int32_t* slot_class = nullptr;
  const int64_t* counts = nullptr;    // [K] running n_c (a class is "seen" when > 0)
  const double* means = nullptr;      // [K, dim] running mu_c
  double* sum1 = nullptr;             // [slots, dim], zeroed by the caller
  double* sum2 = nullptr;
  bool check_finite = false;          // record the first non-finite row in the status
  long long* status = nullptr;
};

void class_moments(const MomentsArgs& args, int sm_count, cudaStream_t stream);

}  // namespace ncfast::cuda
