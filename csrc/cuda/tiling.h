// Launch geometry shared by the CUDA kernels and the host code that sizes their grids.
// Plain C++ (no CUDA types), so the host side and the unit tests can include it.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define NCFAST_HD __host__ __device__
#else
#define NCFAST_HD
#endif

namespace ncfast::cuda {

NCFAST_HD inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
NCFAST_HD inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Number of upper-triangle tile pairs (bi <= bj) of an nb x nb tile grid.
NCFAST_HD inline int64_t num_tile_pairs(int64_t nb) { return nb * (nb + 1) / 2; }

// The t-th upper-triangle tile pair, enumerated row by row: (0,0) (0,1) .. (0,nb-1) (1,1) ...
// At most nb steps, once per block.
NCFAST_HD inline void tile_pair(int64_t t, int64_t nb, int* bi, int* bj) {
  int64_t row = 0;
  while (t >= nb - row) {
    t -= nb - row;
    ++row;
  }
  *bi = static_cast<int>(row);
  *bj = static_cast<int>(row + t);
}

// How the rows of a symmetric Gram are split over blocks (split-K style): enough blocks to
// fill the GPU when D is small, at most kMaxRowsPerSplit rows per block so each float32
// partial Gram stays short before it is folded into the float64 result (the CPU path folds
// blocks of at most 65536 rows too), and at least kMinRowsPerSplit rows so the fold's
// float64 atomics stay a small fraction of the work.
struct RowSplit {
  int64_t rows_per_split = 0;  // a multiple of the block's row step
  int64_t splits = 0;          // gridDim.y
};

constexpr int64_t kMaxRowsPerSplit = 65536;
constexpr int64_t kMinRowsPerSplit = 512;

inline RowSplit plan_row_split(int64_t rows, int64_t tile_pairs, int sm_count, int64_t row_step) {
  RowSplit split;
  if (rows <= 0) return split;
  const int64_t target_blocks = 2 * static_cast<int64_t>(std::max(sm_count, 1));
  int64_t splits = ceil_div(target_blocks, std::max<int64_t>(tile_pairs, 1));
  splits = std::min(splits, ceil_div(rows, kMinRowsPerSplit));
  splits = std::max(splits, ceil_div(rows, kMaxRowsPerSplit));
  splits = std::max<int64_t>(splits, 1);
  split.rows_per_split = round_up(ceil_div(rows, splits), row_step);
  split.splits = ceil_div(rows, split.rows_per_split);
  return split;
}

}  // namespace ncfast::cuda
