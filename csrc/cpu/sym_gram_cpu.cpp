// Two ways to split C = alpha Z^T Z + beta C (upper triangle) into tasks, both fixed by the
// shape alone (so the result is the same whatever the thread count), both many small tasks
// handed out one at a time (a thread that loses its core delays at most one task):
// - row slabs, whenever the rows make at least two slabs of max(kMinSlabRows, 2 D) rows (up to
//   kMaxSlabs): each slab's Z_s^T Z_s is one full-width syrk (BLAS's best shape) into its own
//   partial, and the partials are summed in slab order. The partials take at most half the
//   memory of Z itself (slabs <= rows / 2D);
// - otherwise (few rows for their width): column panels of equal area (edges at
//   dim * sqrt(t / P)). A panel is one syrk for its diagonal block plus one gemm for the
//   rectangle above it; no task writes another's entries, and no scratch is needed.
#include "sym_gram_cpu.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "thread_pool.h"

#include "blas.h"

namespace ncfast::cpu {
namespace {

// Below this many output columns the panels are too thin to pay for themselves.
constexpr int64_t kMinPanelWidth = 64;
constexpr int kMaxPanels = 8;
// Row slabs shorter than this (or than 2 D) make syrk calls too small.
constexpr int64_t kMinSlabRows = 128;
constexpr int64_t kMaxSlabs = 8;
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

template <typename T>
void row_split(const T* z, int64_t rows, int64_t dim, int64_t ld, T alpha, T beta, T* c,
               int64_t slabs) {
  // One partial per slab, summed in slab order. Not zero-filled: syrk with beta = 0 writes
  // every upper entry each slab's sum reads.
  std::unique_ptr<T[]> partials(new T[static_cast<size_t>(slabs * dim * dim)]);
  parallel_for(slabs, [&](int64_t s, int) {
    const int64_t r0 = rows * s / slabs;
    const int64_t r1 = rows * (s + 1) / slabs;
    blas::syrk_upper_at_a(dim, r1 - r0, T(1), z + r0 * ld, ld, T(0), partials.get() + s * dim * dim,
                          dim);
  });
  // C = beta C + alpha sum_s P_s on the upper triangle.
  constexpr int64_t kRowsPerTask = 16;
  parallel_for((dim + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    const int64_t end = std::min(dim, (task + 1) * kRowsPerTask);
    for (int64_t i = task * kRowsPerTask; i < end; ++i) {
      T* out = c + i * dim;
      for (int64_t j = i; j < dim; ++j) {
        T sum = 0;
        for (int64_t s = 0; s < slabs; ++s) sum += partials[(s * dim + i) * dim + j];
        out[j] = (beta == T(0) ? T(0) : beta * out[j]) + alpha * sum;
      }
    }
  });
}

template <typename T>
void column_panels(const T* z, int64_t rows, int64_t dim, int64_t ld, T alpha, T beta, T* c,
                   int num_panels) {
  const std::vector<int64_t> edges = equal_area_panel_edges(dim, num_panels);
  parallel_for(num_panels, [&](int64_t p, int) {
    const int64_t c0 = edges[p];
    const int64_t width = edges[p + 1] - c0;
    blas::syrk_upper_at_a(width, rows, alpha, z + c0, ld, beta, c + c0 * dim + c0, dim);
    if (c0 > 0) {
      blas::gemm_at_b(c0, width, rows, alpha, z, ld, z + c0, ld, beta, c + c0, dim);
    }
  });
}

template <typename T>
void sym_gram_upper_impl(const T* z, int64_t rows, int64_t dim, int64_t ld, T alpha, T beta,
                         T* c) {
  const int64_t slabs = std::min(kMaxSlabs, rows / std::max<int64_t>(kMinSlabRows, 2 * dim));
  if (slabs >= 2) {
    row_split(z, rows, dim, ld, alpha, beta, c, slabs);
    return;
  }
  const int num_panels = static_cast<int>(std::clamp<int64_t>(dim / kMinPanelWidth, 1, kMaxPanels));
  if (num_panels == 1) {
    blas::syrk_upper_at_a(dim, rows, alpha, z, ld, beta, c, dim);
    return;
  }
  column_panels(z, rows, dim, ld, alpha, beta, c, num_panels);
}

// Row i of the lower triangle reads column i of the upper one; rows are split over threads
// in 32-row tiles of the source so the strided reads stay within a few cache lines.
template <typename T>
void mirror_upper_impl(T* c, int64_t dim) {
  constexpr int64_t kTile = 32;
  parallel_for((dim + kTile - 1) / kTile, [&](int64_t t, int) {
    const int64_t i0 = t * kTile;
    const int64_t i1 = std::min(dim, i0 + kTile);
    for (int64_t j0 = 0; j0 < i1; j0 += kTile) {
      const int64_t j1 = std::min(i1, j0 + kTile);
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < std::min(j1, i); ++j) c[i * dim + j] = c[j * dim + i];
      }
    }
  });
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
