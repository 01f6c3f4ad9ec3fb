// Launchers of the slab path's grid kernels (slab_moments_cuda.cu, slab_update_cuda.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../core/dtype.h"

namespace ncfast::cuda {

// The slab as the kernels see it (see SlabCall in slab_update_cuda.h).
struct SlabView {
  DType dtype = DType::kBFloat16;
  bool tf32 = false;  // float32 entries rounded to TF32 (10 mantissa bits, to nearest even)
  void* x = nullptr;
  void* y = nullptr;  // dual: a second copy (with the negated correction rows), else null
  int64_t padded_dim = 0;
  int64_t ld = 0;
  int64_t split_rows = 0;
  int64_t positions = 0;  // sorted positions written: splits * split_rows >= rows
};

// Per-slot float64 moments about the exact shift (sum1, sum2, zeroed by the caller), written in
// sorted order: slab[pos] = (x[perm[pos]] - p) 2^-e (zero rows for dropped rows and for
// positions past the chunk, zero columns past dim); the largest finite |x - p| per column goes to
// colmax (zeroed by the caller) and flags[kFlagRange] is raised when one leaves its window.
struct SlabMomentsArgs {
  const void* x = nullptr;
  DType dtype = DType::kFloat32;
  int64_t ld = 0;
  int64_t dim = 0;
  int64_t rows = 0;
  int64_t row_offset = 0;
  const uint32_t* sorted_key = nullptr;
  const int32_t* perm = nullptr;
  uint32_t sentinel = 0;
  const int32_t* seg_begin = nullptr;
  const int32_t* slot_class = nullptr;
  const int64_t* counts = nullptr;
  const double* means = nullptr;
  double* sum1 = nullptr;
  double* sum2 = nullptr;
  bool check_finite = false;
  long long* status = nullptr;
  SlabView slab;
  const int32_t* exps = nullptr;      // [2, padded_dim]
  const long long* words = nullptr;   // gram words (kGramCur picks the exponent row)
  unsigned long long* colmax = nullptr;
  int32_t* flags = nullptr;
};

void slab_moments(const SlabMomentsArgs& args, int sm_count, cudaStream_t stream);

}  // namespace ncfast::cuda
