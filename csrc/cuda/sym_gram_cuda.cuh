// W += alpha * Z^T Z for a D x D float64 W, upper triangle only (the caller mirrors it once per
// update). Z is never stored: each block builds its tiles of Z while loading them, either from
// a batch centred on the class shifts (Z = X - S[key]) or from a dense matrix (the rank-k
// correction rows). Split over rows, one float32 partial Gram per block, folded into W with
// float64 atomics. Maths: DESIGN.md section 3 (chunk update).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../core/dtype.h"

namespace ncfast::cuda {

// How the products are formed.
enum class GramPath : int {
  kSimtF32 = 0,   // float32 FMA (precision="exact" for float32/float16/bfloat16 input)
  kSimtF64 = 1,   // float64 FMA (float64 input)
  kMmaF16 = 2,    // tensor cores, float16 operands, float32 accumulation
  kMmaBF16 = 3,   // tensor cores, bfloat16 operands, float32 accumulation
  kMmaTF32 = 4,   // tensor cores, TF32 operands, float32 accumulation (precision="fast")
};

// Rows of a chunk centred on their class shift: z_i = x_i - shift[key[i]], zero for rows whose
// key is `sentinel` (dropped rows). The shift table is float32, or float64 for float64 input.
struct ShiftedRows {
  const void* x = nullptr;
  DType dtype = DType::kFloat32;
  int64_t ld = 0;               // elements between rows of x
  int64_t rows = 0;
  const uint32_t* key = nullptr;  // [rows] slot of each row, or `sentinel`
  uint32_t sentinel = 0;
  const void* shift = nullptr;  // [slots, ld_shift]
  int64_t ld_shift = 0;         // a multiple of 8
};

// Rows of a dense float32 (float64) matrix; only the first *num_rows (a device value) count.
struct DenseRows {
  const void* a = nullptr;
  bool is_double = false;
  int64_t ld = 0;        // a multiple of 8
  int64_t max_rows = 0;  // rows the grid is sized for
  const int32_t* num_rows = nullptr;
};

// Kernels return at once when status[kCode] != 0 (a rejected batch).
void sym_gram_shifted(GramPath path, const ShiftedRows& z, int64_t dim, double alpha, double* w,
                      const long long* status, int sm_count, cudaStream_t stream);
void sym_gram_dense(GramPath path, const DenseRows& z, int64_t dim, double alpha, double* w,
                    const long long* status, int sm_count, cudaStream_t stream);

}  // namespace ncfast::cuda
