// Register-tiled symmetric Gram kernels that read the rows where they are (no packing):
// out(i, j) (+)= sum_k z(k, i) z(k, j) for the upper triangle. A tile holds kTileRows output
// rows by up to kTileVecs vectors of columns in registers; each input row contributes one
// broadcast of z(k, i) per output row and one vector load per column vector. Used for
// narrow rows, where a BLAS syrk spends much of its time packing, and for the bfloat16 Gram
// of the fast mode (VDPBF16PS, two rows per instruction).
//
// Columns are processed in whole vectors, so rows are read up to padded_dim(dim) columns
// (callers pad their buffers; the padding's values only reach columns >= dim of `out`).
// Entries below the diagonal inside the diagonal vectors are written too (with the full
// product's values); callers read only the upper triangle.
#pragma once

#include <cstdint>

namespace ncfast::cpu {

// Columns per vector of the kernels in this build (16 with AVX-512, 8 with AVX2, 4 else).
int64_t gram_lanes();
// dim rounded up to a whole number of vectors.
int64_t padded_dim(int64_t dim);

// z: rows x padded_dim(dim) readable, leading dimension ld (elements). out: leading dimension
// ldo >= padded_dim(dim). Writes the output rows [i_begin, i_end) (i_begin a multiple of the
// tile rows, 8); accumulate: add to out instead of overwriting.
void gram_upper_f32(const float* z, int64_t rows, int64_t dim, int64_t ld, int64_t i_begin,
                    int64_t i_end, float* out, int64_t ldo, bool accumulate);

// Whether this build has the bfloat16 kernel (compiled for AVX512-BF16).
bool has_bf16_gram();

// The bfloat16 Gram with float32 accumulation. zp holds row pairs: word j of pair-row p is
// (bf16 z(2p, j), bf16 z(2p+1, j)), the first in the low half; ld in 32-bit words.
void gram_upper_bf16_pairs(const uint32_t* zp, int64_t pairs, int64_t dim, int64_t ld,
                           int64_t i_begin, int64_t i_end, float* out, int64_t ldo, bool accumulate);

// Output rows per tile: band edges passed as i_begin must be multiples of it.
constexpr int64_t kGramTileRows = 8;

// A library's bfloat16 GEMM with float32 accumulation and output, in the CBLAS form of MKL's
// cblas_gemm_bf16bf16f32 (MKL runs it on AMX tiles where the CPU has them). The core links no
// such library: Python finds the function in a library already loaded (torch's) and registers
// its address, with the library's per-thread thread-count setter (so that each call runs on
// the calling thread).
using LibraryBf16Gemm = void (*)(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                                 const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta,
                                 float* c, int ldc);
using LibrarySetThreads = int (*)(int);
void set_library_bf16_gemm(LibraryBf16Gemm gemm, LibrarySetThreads set_local_threads);

// C[i0:i1, i0:dim] (+)= Z[:, i0:i1]^T Z[:, i0:dim] over `rows` row-major bfloat16 rows.
void library_bf16_gram_band(const uint16_t* z, int64_t rows, int64_t dim, int64_t ld, int64_t i0,
                            int64_t i1, float* out, int64_t ldo, bool accumulate);

// Which bfloat16 Gram the fast mode uses on this CPU: a library GEMM where the CPU has AMX-BF16
// (and one was registered); ncfast's VDPBF16PS kernel on AMD CPUs with AVX512-BF16, where it
// runs at about twice the float32 FMA rate (on Intel CPUs it runs no faster than float32 FMA);
// none otherwise (fast is then exact).
enum class Bf16Gram : int32_t { kNone = 0, kOwnKernel = 1, kLibrary = 2 };
Bf16Gram bf16_gram_choice();
// Tests: -1 (the CPU's choice), or force one (kOwnKernel needs has_bf16_gram(), kLibrary a
// registered GEMM).
void set_bf16_gram_override(int choice);

}  // namespace ncfast::cpu
