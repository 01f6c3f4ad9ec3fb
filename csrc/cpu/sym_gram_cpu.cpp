// Each OpenMP thread owns one column panel [c0, c1) of the upper triangle; panel edges sit at
// dim * sqrt(t / T) so every panel holds the same number of entries (the same flops). A panel is
// one syrk for its diagonal block plus one gemm for the rectangle rows [0, c0) above it, both
// single-threaded BLAS calls: no thread ever writes another's entries, and no scratch is needed.
#include "sym_gram_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.h"

namespace ncfast::cpu {
namespace {

// Below this many output columns per thread the panels are too thin to pay for themselves.
constexpr int64_t kMinPanelWidth = 32;
// Panel edges are rounded to this many columns so BLAS micro-kernels see aligned widths.
constexpr int64_t kPanelAlign = 8;

std::vector<int64_t> equal_area_panel_edges(int64_t dim, int num_panels) {
  std::vector<int64_t> edges{0};
  for (int t = 1; t < num_panels; ++t) {
    const double exact = dim * std::sqrt(static_cast<double>(t) / num_panels);
    int64_t edge = static_cast<int64_t>(std::llround(exact / kPanelAlign)) * kPanelAlign;
    edge = std::clamp(edge, edges.back() + 1, dim - 1);
    edges.push_back(edge);
  }
  edges.push_back(dim);
  return edges;
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename T>
void sym_gram_upper_impl(const T* z, int64_t rows, int64_t dim, int64_t ld, T alpha, T beta,
                         T* c) {
  const int num_panels =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), dim / kMinPanelWidth)));
  if (num_panels == 1) {
    blas::syrk_upper_at_a(dim, rows, alpha, z, ld, beta, c, dim);
    return;
  }
  const std::vector<int64_t> edges = equal_area_panel_edges(dim, num_panels);
#pragma omp parallel for num_threads(num_panels) schedule(static, 1)
  for (int p = 0; p < num_panels; ++p) {
    const int64_t c0 = edges[p];
    const int64_t width = edges[p + 1] - c0;
    blas::syrk_upper_at_a(width, rows, alpha, z + c0, ld, beta, c + c0 * dim + c0, dim);
    if (c0 > 0) {
      blas::gemm_at_b(c0, width, rows, alpha, z, ld, z + c0, ld, beta, c + c0, dim);
    }
  }
}

// Row i of the lower triangle reads column i of the upper one; rows are split over threads
// in 32-row tiles of the source so the strided reads stay within a few cache lines.
template <typename T>
void mirror_upper_impl(T* c, int64_t dim) {
  constexpr int64_t kTile = 32;
#pragma omp parallel for schedule(dynamic, 1) if (dim >= 256)
  for (int64_t i0 = 0; i0 < dim; i0 += kTile) {
    const int64_t i1 = std::min(dim, i0 + kTile);
    for (int64_t j0 = 0; j0 < i1; j0 += kTile) {
      const int64_t j1 = std::min(i1, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < std::min(j1, i); ++j) c[i * dim + j] = c[j * dim + i];
      }
    }
  }
}

}  // namespace

void mirror_upper(float* c, int64_t dim) { mirror_upper_impl(c, dim); }
void mirror_upper(double* c, int64_t dim) { mirror_upper_impl(c, dim); }

void sym_gram_upper(const float* z, int64_t rows, int64_t dim, int64_t ld, float alpha, float beta,
                    float* c) {
  sym_gram_upper_impl(z, rows, dim, ld, alpha, beta, c);
}

void sym_gram_upper(const double* z, int64_t rows, int64_t dim, int64_t ld, double alpha,
                    double beta, double* c) {
  sym_gram_upper_impl(z, rows, dim, ld, alpha, beta, c);
}

}  // namespace ncfast::cpu
