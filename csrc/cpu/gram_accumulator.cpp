#include "gram_accumulator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include <cblas.h>

#include "blas.h"
#include "gram_kernels.h"
#include "thread_pool.h"

namespace ncfast::cpu {
namespace {

// Edges 0 = e_0 < ... < e_n = dim of n bands of output rows with about equal shares of the
// upper triangle (row i holds dim - i entries), on multiples of 16 rows.
std::vector<int64_t> equal_area_bands(int64_t dim, int64_t n) {
  std::vector<int64_t> edges{0};
  for (int64_t t = 1; t < n; ++t) {
    const double exact = dim * (1.0 - std::sqrt(1.0 - static_cast<double>(t) / n));
    const int64_t edge = std::llround(exact / 16.0) * 16;
    if (edge > edges.back() && edge < dim) edges.push_back(edge);
  }
  edges.push_back(dim);
  return edges;
}

template <typename Z>
int64_t row_ld(int64_t dim) {
  if constexpr (std::is_same_v<Z, double>) {
    return dim;
  } else {
    return padded_dim(dim);
  }
}

// Rows of Z held by one stored row: two for bfloat16 pairs.
template <typename Z>
constexpr int64_t rows_per_line() {
  return std::is_same_v<Z, Bf16Pair> ? 2 : 1;
}

std::atomic<int64_t> g_tiled_max_override{0};

int64_t tiled_max_by_rule() {
  const std::string core = scipy_openblas_get_corename();
  const bool blas_avx512 = core.find("kylake") != std::string::npos || core.find("ooper") != std::string::npos ||
                           core.find("apphire") != std::string::npos || core.find("Zen4") != std::string::npos ||
                           core.find("Zen5") != std::string::npos;
  return !blas_avx512 && gram_lanes() == 16 ? 1024 : 320;
}

}  // namespace

int64_t tiled_gram_max_dim() {
  const int64_t forced = g_tiled_max_override.load();
  if (forced > 0) return forced;
  static const int64_t by_rule = tiled_max_by_rule();
  return by_rule;
}

void set_tiled_gram_max_dim(int64_t dim) { g_tiled_max_override.store(dim); }

template <typename Z>
GramAccumulator<Z>::GramAccumulator(int64_t dim, int64_t max_rows)
    : dim_(dim),
      ld_(row_ld<Z>(dim)),
      bands_(equal_area_bands(dim, std::clamp<int64_t>(dim / 128, 1, 8))),
      reduce_bands_(equal_area_bands(dim, std::clamp<int64_t>(dim / 32, 1, 32))),
      scratch_(static_cast<size_t>((1 + slabs(std::max<int64_t>(max_rows, 1))) * ld_ * ld_)) {
  gram_ = scratch_.data();
  partials_ = gram_ + ld_ * ld_;
}

// Band b of the upper triangle of Z^T Z over `rows` rows of z.
template <typename Z>
void GramAccumulator<Z>::band(const Z* z, int64_t rows, int64_t b, Acc* out, bool accumulate) const {
  const int64_t i0 = bands_[b];
  const int64_t i1 = bands_[b + 1];
  if constexpr (std::is_same_v<Z, Bf16Pair>) {
    gram_upper_bf16_pairs(reinterpret_cast<const uint32_t*>(z), (rows + 1) / 2, dim_, ld_, i0, i1, out,
                          ld_, accumulate);
  } else if constexpr (std::is_same_v<Z, Bf16Row>) {
    library_bf16_gram_band(reinterpret_cast<const uint16_t*>(z), rows, dim_, ld_, i0, i1, out, ld_,
                           accumulate);
  } else {
    if constexpr (std::is_same_v<Z, float>) {
      if (dim_ <= tiled_gram_max_dim()) {
        gram_upper_f32(z, rows, dim_, ld_, i0, i1, out, ld_, accumulate);
        return;
      }
    }
    const Acc beta = accumulate ? Acc(1) : Acc(0);
    blas::syrk_upper_at_a(i1 - i0, rows, Acc(1), z + i0, ld_, beta, out + i0 * ld_ + i0, ld_);
    if (i1 < dim_) {
      blas::gemm_at_b(i1 - i0, dim_ - i1, rows, Acc(1), z + i0, ld_, z + i1, ld_, beta,
                      out + i0 * ld_ + i1, ld_);
    }
  }
}

template <typename Z>
void GramAccumulator<Z>::add_to_partial(int64_t slab, const Z* z, int64_t rows, bool first) {
  Acc* out = partials_ + slab * ld_ * ld_;
  for (size_t b = 0; b + 1 < bands_.size(); ++b) band(z, rows, static_cast<int64_t>(b), out, !first);
}

template <typename Z>
void GramAccumulator<Z>::compute_partials(const Z* z, int64_t rows) {
  const int64_t num_slabs = slabs(rows);
  const int64_t num_bands = static_cast<int64_t>(bands_.size()) - 1;
  parallel_for(num_slabs * num_bands, [&](int64_t task, int) {
    const int64_t s = task / num_bands;
    const int64_t r0 = s * kGramSlabRows;
    const int64_t r1 = std::min(rows, r0 + kGramSlabRows);
    band(z + (r0 / rows_per_line<Z>()) * ld_, r1 - r0, task % num_bands, partials_ + s * ld_ * ld_, false);
  });
}

template <typename Z>
void GramAccumulator<Z>::reduce(int64_t slabs, const Acc* r, int64_t r_rows, double* w,
                                double unscale2) {
  if (slabs == 0 && r_rows == 0 && gram_empty_) return;
  const int64_t ld = ld_;
  const int64_t dim = dim_;
  const bool empty = gram_empty_;
  const int64_t tasks = static_cast<int64_t>(reduce_bands_.size()) - 1;
  parallel_for(tasks, [&](int64_t t, int) {
    const int64_t i0 = reduce_bands_[t];
    const int64_t i1 = reduce_bands_[t + 1];
    Acc* g = gram_;
    // Partials summed pairwise (a fixed tree: the error grows with log2(slabs)), in place.
    for (int64_t step = 1; step < slabs; step *= 2) {
      for (int64_t s = 0; s + step < slabs; s += 2 * step) {
        for (int64_t i = i0; i < i1; ++i) {
          Acc* to = partials_ + (s * ld + i) * ld;
          const Acc* from = partials_ + ((s + step) * ld + i) * ld;
#pragma omp simd
          for (int64_t j = i; j < dim; ++j) to[j] += from[j];
        }
      }
    }
    // G = (empty ? 0 : G) + sum of partials - R^T R on this band's upper triangle.
    for (int64_t i = i0; i < i1; ++i) {
      Acc* gi = g + i * ld;
      const Acc* p = partials_ + i * ld;
      if (empty && slabs > 0) {
        std::copy(p + i, p + dim, gi + i);
      } else if (empty) {
        std::fill(gi + i, gi + dim, Acc(0));
      } else if (slabs > 0) {
#pragma omp simd
        for (int64_t j = i; j < dim; ++j) gi[j] += p[j];
      }
    }
    if (r_rows > 0) {
      // G[i0:i1, i0:] -= R[:, i0:i1]^T R[:, i0:]
      blas::gemm_at_b(i1 - i0, dim - i0, r_rows, Acc(-1), r + i0, ld, r + i0, ld, Acc(1),
                      g + i0 * ld + i0, ld);
    }
    if (w) {
      for (int64_t i = i0; i < i1; ++i) {
        const Acc* gi = g + i * ld;
        double* wi = w + i * dim;
#pragma omp simd
        for (int64_t j = i; j < dim; ++j) wi[j] += static_cast<double>(gi[j]) * unscale2;
      }
    }
  });
  gram_empty_ = w != nullptr;  // folded: G counts as zero without being cleared
}

template class GramAccumulator<float>;
template class GramAccumulator<double>;
template class GramAccumulator<Bf16Pair>;
template class GramAccumulator<Bf16Row>;

const char* gram_kernel_name(int bf16, bool float64, int64_t dim) {
  if (bf16 == static_cast<int>(Bf16Gram::kOwnKernel)) {
    return "bfloat16 x bfloat16 -> float32, ncfast AVX512-BF16 kernel";
  }
  if (bf16 == static_cast<int>(Bf16Gram::kLibrary)) {
    return "bfloat16 x bfloat16 -> float32, library GEMM (MKL cblas_gemm_bf16bf16f32, AMX)";
  }
  if (float64) return "float64, OpenBLAS dsyrk/dgemm";
  if (dim <= tiled_gram_max_dim()) return "float32, ncfast register-tiled kernel";
  return "float32, OpenBLAS ssyrk/sgemm";
}

}  // namespace ncfast::cpu
