// Views of the caller-owned class statistics and of one labelled batch, shared by the CPU and
// CUDA kernels. The core never allocates these buffers: Python owns them (torch tensors).
// Maths: ../DESIGN.md section 3 (chunk update and merge).
#pragma once

#include <cstdint>

#include "dtype.h"

namespace ncfast {

// Running statistics, all row-major and contiguous.
struct StatsView {
  int64_t num_classes = 0;
  int64_t dim = 0;
  int64_t* counts = nullptr;         // [K]     n_c
  double* means = nullptr;           // [K, D]  mu_c
  double* scatter = nullptr;         // [D, D]  W = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T
  double* class_scatter = nullptr;   // [K]     tr_c = sum_{i in c} ||x_i - mu_c||^2
  double* class_diag = nullptr;      // [K, D]  q_cj = sum_{i in c} (x_ij - mu_cj)^2, or null
};

// One batch of labelled rows. Columns are contiguous; rows are `row_stride` elements apart.
struct BatchView {
  const void* features = nullptr;
  DType feature_dtype = DType::kFloat32;
  int64_t rows = 0;
  int64_t row_stride = 0;
  const void* labels = nullptr;  // [rows], contiguous
  DType label_dtype = DType::kInt64;
};

enum class NanPolicy : int32_t { kRaise = 0, kSkip = 1 };

enum class UpdateStatus : int32_t {
  kOk = 0,
  kLabelOutOfRange = 1,  // `row` and `label` name the first offending row
  kNonFinite = 2,        // `row` names the first row holding NaN or Inf
  kBadDtype = 3,
};

// On any status but kOk the statistics are exactly as they were before the call.
struct UpdateResult {
  UpdateStatus status = UpdateStatus::kOk;
  int64_t row = -1;
  int64_t label = 0;
  int64_t skipped_rows = 0;  // rows dropped under NanPolicy::kSkip
};

}  // namespace ncfast
