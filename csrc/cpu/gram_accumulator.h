// The block Gram G = sum over blocks of Z^T Z (upper triangle), accumulated in float32
// (float64 for float64 input) and folded into the float64 scatter W every kFoldRows rows.
//
// Work is split by shape alone, never by thread count, so the result is the same to the bit
// whatever the number of threads: Z is cut into slabs of kSlabRows rows, the upper triangle
// into bands of output rows of equal area; task (slab, band) writes that band of the slab's
// own partial, and the reduction adds the partials in slab order.
//
// Z's element type picks the kernel: float rows go to the register-tiled kernel for narrow
// rows (gram_kernels.h) or to OpenBLAS syrk/gemm for wide ones, double rows to OpenBLAS, and
// bfloat16 row pairs (the fast mode) to the VDPBF16PS kernel, bfloat16 rows to a library GEMM.
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace ncfast::cpu {

// Up to this D the float32 Gram uses the tiled kernel, above it OpenBLAS (benchmarks/RESULTS.md,
// "Gram kernels"): 320 when OpenBLAS runs AVX-512 kernels, 1024 when it runs narrower ones
// and this build's tiled kernel is AVX-512 (OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU, say).
// Fixed for the process, so results stay the same run after run.
int64_t tiled_gram_max_dim();
// Benchmarks: override it (0 restores the rule above).
void set_tiled_gram_max_dim(int64_t dim);

// Rows per Gram slab (and per pass slab of the fused update).
constexpr int64_t kGramSlabRows = 1024;

// BFloat16 row pairs: see gram_upper_bf16_pairs.
struct Bf16Pair {
  uint32_t bits;
};
// BFloat16 rows, row-major, for a library GEMM (library_bf16_gram_band).
struct Bf16Row {
  uint16_t bits;
};

template <typename Z>
using GramAcc = std::conditional_t<std::is_same_v<Z, double>, double, float>;

// Uninitialised scratch that the calls of one thread reuse (a D x D Gram and its partials
// would otherwise be allocated and zeroed by every call, which costs a small batch more than
// its Gram); taken by one owner at a time, released after use when over kKeepBytes.
template <typename T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t n) {
    Pool& pool = pool_();
    if (!pool.busy) {
      pool.busy = true;
      owner_ = true;
      if (pool.size < n) {
        pool.data.reset(new T[n]);
        pool.size = n;
      }
      data_ = pool.data.get();
    } else {
      own_.reset(new T[n]);
      data_ = own_.get();
    }
  }
  ~ScratchBuffer() {
    if (!owner_) return;
    Pool& pool = pool_();
    pool.busy = false;
    if (pool.size * sizeof(T) > kKeepBytes) {
      pool.data.reset();
      pool.size = 0;
    }
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  T* data() const { return data_; }

 private:
  static constexpr size_t kKeepBytes = size_t{64} << 20;
  struct Pool {
    std::unique_ptr<T[]> data;
    size_t size = 0;
    bool busy = false;
  };
  static Pool& pool_() {
    thread_local Pool pool;
    return pool;
  }
  bool owner_ = false;
  std::unique_ptr<T[]> own_;
  T* data_ = nullptr;
};

template <typename Z>
class GramAccumulator {
 public:
  using Acc = GramAcc<Z>;

  // max_rows: the most rows of one Z buffer (sizes the partials).
  GramAccumulator(int64_t dim, int64_t max_rows);

  int64_t dim() const { return dim_; }
  // Leading dimension of Z rows (pair-rows for Bf16Pair), in elements; columns [dim, ld) are
  // read but only reach padding entries of G.
  int64_t ld() const { return ld_; }
  static int64_t slabs(int64_t rows) { return (rows + kGramSlabRows - 1) / kGramSlabRows; }

  // Partial `slab` (+)= Z^T Z of `rows` rows at z (one thread; for passes that make a slab's
  // Z in pieces). The first call for a slab passes first = true.
  void add_to_partial(int64_t slab, const Z* z, int64_t rows, bool first);

  // Partials of every slab of a whole Z buffer (one job of slabs x bands tasks).
  void compute_partials(const Z* z, int64_t rows);

  // One job over bands of G: G += sum_s partial[s] - R^T R for the first `slabs` partials
  // (summed pairwise; they are consumed) and R (r_rows rows of ld() Acc, may be none). With w
  // set, then W += G * unscale2 on the upper triangle (W row-major dim x dim) and G = 0.
  void reduce(int64_t slabs, const Acc* r, int64_t r_rows, double* w, double unscale2);

 private:
  void band(const Z* z, int64_t rows, int64_t b, Acc* out, bool accumulate) const;

  int64_t dim_;
  int64_t ld_;
  std::vector<int64_t> bands_;        // edges of the product's output-row bands
  std::vector<int64_t> reduce_bands_; // edges of the reduction's bands
  ScratchBuffer<Acc> scratch_;        // G and the partials, never cleared
  Acc* gram_ = nullptr;               // ld x ld, upper triangle used
  Acc* partials_ = nullptr;           // slabs x ld x ld
  bool gram_empty_ = true;            // G holds nothing yet (its memory is stale)
};

extern template class GramAccumulator<float>;
extern template class GramAccumulator<double>;
extern template class GramAccumulator<Bf16Pair>;
extern template class GramAccumulator<Bf16Row>;

// Which kernel computes the Gram for this input (for build_info): bf16 is the fast mode's
// choice (bf16_gram_choice) or 0 for the exact Gram.
const char* gram_kernel_name(int bf16, bool float64, int64_t dim);

}  // namespace ncfast::cpu
