// Per-class moments of a chunk (see class_sums_cuda.cuh for the maths).
//
// Grid: x = column tiles of 32 * V columns (lane l owns V consecutive columns), y = ranges of
// sorted positions. Each of the 8 warps of a block walks its own contiguous sub-range, so it
// sees whole runs of one slot: the run's sums stay in float64 registers and are added to the
// slot's row of sum1 / sum2 with one atomic per column when the run ends. Few classes (K = 2)
// give long runs and almost no atomics; many classes (K = 100k) give at most one flush per
// class per warp range. Rows are read in permuted order, each as whole contiguous segments.
#include "class_sums_cuda.cuh"

#include "common.cuh"
#include "provisional_shift.cuh"

namespace ncfast::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;  // sorted positions whose rows are loaded before any is used

template <typename In, int V, bool kAligned>
__global__ void __launch_bounds__(kWarps * 32)
    class_moments_kernel(const MomentsArgs a, const int64_t positions_per_warp) {
  using Acc = typename Widen<In>::Acc;
  if (rejected(a.status)) return;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * 32 + lane) * V;
  const bool lane_live = col < a.dim;
  const int valid = lane_live ? static_cast<int>(a.dim - col < V ? a.dim - col : V) : 0;
  const In* x = static_cast<const In*>(a.x);

  const int64_t begin = (static_cast<int64_t>(blockIdx.y) * kWarps + warp) * positions_per_warp;
  int64_t end = begin + positions_per_warp;
  if (end > a.rows) end = a.rows;

  uint32_t run_slot = a.sentinel;
  double p[V];
  double s1[V];
  double s2[V];

  auto flush = [&]() {
    if (run_slot == a.sentinel || !lane_live) return;
    double* o1 = a.sum1 + static_cast<int64_t>(run_slot) * a.dim + col;
    double* o2 = a.sum2 + static_cast<int64_t>(run_slot) * a.dim + col;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      if (v < valid) {
        atomicAdd(o1 + v, s1[v]);
        atomicAdd(o2 + v, s2[v]);
      }
    }
  };
  auto start_run = [&](uint32_t slot) {
    run_slot = slot;
    const int32_t c = a.slot_class[slot];
    const int32_t first = a.perm[a.seg_begin[slot]];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      s1[v] = 0.0;
      s2[v] = 0.0;
      p[v] = 0.0;
      if (v < valid) {
        p[v] = static_cast<double>(provisional_shift<Acc>(a.counts[c] > 0, a.means[static_cast<int64_t>(c) * a.dim + col + v],
                                                          x[static_cast<int64_t>(first) * a.ld + col + v]));
      }
    }
  };

  for (int64_t pos = begin; pos < end; pos += kUnroll) {
    uint32_t slot[kUnroll];
    int32_t row[kUnroll];
    In vals[kUnroll][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool in = pos + u < end;
      slot[u] = in ? a.sorted_key[pos + u] : a.sentinel;
      row[u] = in ? a.perm[pos + u] : 0;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (slot[u] != a.sentinel && lane_live) {
        load_vec<In, V, kAligned>(x + static_cast<int64_t>(row[u]) * a.ld + col, valid, vals[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (slot[u] == a.sentinel) break;  // dropped rows sort last: nothing after them counts
      if (slot[u] != run_slot) {
        flush();
        start_run(slot[u]);
      }
      if (!lane_live) continue;
      bool finite = true;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (v < valid) {
          const Acc xv = to_acc(vals[u][v]);
          finite &= is_finite(xv);
          const double d = static_cast<double>(xv) - p[v];
          s1[v] += d;
          s2[v] = fma(d, d, s2[v]);
        }
      }
      if (a.check_finite && !finite) {
        atomicMin(a.status + kCallNonFiniteRow, static_cast<long long>(a.row_offset + row[u]));
      }
    }
    if (slot[kUnroll - 1] == a.sentinel) break;
  }
  flush();
}

template <typename In, int V, bool kAligned>
void launch(const MomentsArgs& a, int sm_count, cudaStream_t stream) {
  const int64_t col_tiles = ceil_div(a.dim, 32 * V);
  // About 8 warps per SM per column tile, at least 16 positions per warp.
  const int64_t target_warps = ceil_div(8 * static_cast<int64_t>(sm_count) * kWarps, col_tiles);
  int64_t per_warp = ceil_div(a.rows, target_warps);
  if (per_warp < 16) per_warp = 16;
  per_warp = round_up(per_warp, kUnroll);
  const int64_t blocks_y = ceil_div(ceil_div(a.rows, per_warp), kWarps);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(blocks_y));
  class_moments_kernel<In, V, kAligned><<<grid, kWarps * 32, 0, stream>>>(a, per_warp);
  check_launch("class_moments_kernel");
}

}  // namespace

void class_moments(const MomentsArgs& a, int sm_count, cudaStream_t stream) {
  if (a.rows <= 0 || a.dim <= 0) return;
  const bool ok = dispatch_device_float(a.dtype, [&](auto tag) {
    using In = decltype(tag);
    constexpr int V = static_cast<int>(16 / sizeof(In));
    const bool aligned = a.dim % V == 0 && a.ld % V == 0 &&
                         reinterpret_cast<uintptr_t>(a.x) % (sizeof(In) * V) == 0;
    if (aligned) {
      launch<In, V, true>(a, sm_count, stream);
    } else {
      launch<In, 1, false>(a, sm_count, stream);
    }
  });
  if (!ok) throw std::invalid_argument("class_moments: unsupported feature dtype");
}

}  // namespace ncfast::cuda
