// The moments pass of the slab path: per-slot float64 sums of (x - p) and (x - p)^2 about the
// exact shift p (class_sums_cuda.cu's scheme: grid x = column tiles, grid y = ranges of sorted
// positions, a warp's run of one slot accumulates in registers and is flushed with one atomic
// per column), and in the same read of x the slab rows z 2^-e in sorted order.
#include "slab_common.cuh"
#include "slab_kernels.cuh"

namespace ncfast::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;  // sorted positions whose rows are loaded before any is used

template <typename S, int V>
__device__ __forceinline__ void store_slab(S* p, const Vec<S, V>& v) {
  *reinterpret_cast<Vec<S, V>*>(p) = v;
}

template <typename In, typename S, int V, bool kAligned>
__global__ void __launch_bounds__(kWarps * 32)
    slab_moments_kernel(const SlabMomentsArgs a, const int64_t positions_per_warp) {
  if (rejected(a.status)) return;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * 32 + lane) * V;
  const bool lane_live = col < a.dim;             // holds real columns
  const bool lane_slab = col < a.slab.padded_dim;  // holds slab columns (real or padding)
  const int valid = lane_live ? static_cast<int>(a.dim - col < V ? a.dim - col : V) : 0;
  const In* x = static_cast<const In*>(a.x);
  S* const sx = static_cast<S*>(a.slab.x);
  S* const sy = static_cast<S*>(a.slab.y);

  int lo = 0, hi = 0;
  exponent_window(a.slab.dtype, &lo, &hi);
  const int32_t* e = a.exps + static_cast<int64_t>(a.words[kGramCur]) * a.slab.padded_dim;
  int ecol[V];
  double scale[V];
  double zmax[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    ecol[v] = v < valid ? e[col + v] : 0;
    scale[v] = ldexp(1.0, -ecol[v]);
    zmax[v] = 0.0;
  }

  const int64_t begin = (static_cast<int64_t>(blockIdx.y) * kWarps + warp) * positions_per_warp;
  int64_t end = begin + positions_per_warp;
  if (end > a.slab.positions) end = a.slab.positions;

  uint32_t run_slot = a.sentinel;
  double p[V];
  double s1[V];
  double s2[V];

  auto store = [&](int64_t pos, const Vec<S, V>& out) {
    if (!lane_slab) return;
    const int64_t off = slab_offset(pos, col, a.slab.split_rows, a.slab.padded_dim, a.slab.ld);
    store_slab<S, V>(sx + off, out);
    if (sy) store_slab<S, V>(sy + off, out);
  };
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
    const bool seen = a.counts[c] > 0;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      s1[v] = 0.0;
      s2[v] = 0.0;
      p[v] = 0.0;
      if (v < valid) {
        p[v] = exact_shift(seen, a.means[static_cast<int64_t>(c) * a.dim + col + v],
                           x[static_cast<int64_t>(first) * a.ld + col + v]);
      }
    }
  };

  Vec<S, V> zeros;
#pragma unroll
  for (int v = 0; v < V; ++v) zeros.v[v] = slab_zero<S>();

  for (int64_t pos = begin; pos < end; pos += kUnroll) {
    uint32_t slot[kUnroll];
    int32_t row[kUnroll];
    In vals[kUnroll][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool in = pos + u < end && pos + u < a.rows;
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
      if (pos + u >= end) break;
      if (slot[u] == a.sentinel) {  // a dropped row, or a position past the chunk
        store(pos + u, zeros);
        continue;
      }
      if (slot[u] != run_slot) {
        flush();
        start_run(slot[u]);
      }
      Vec<S, V> out = zeros;
      bool finite = true;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (v < valid) {
          const double xv = static_cast<double>(to_acc(vals[u][v]));
          const double d = xv - p[v];
          finite &= is_finite(xv);
          s1[v] += d;
          s2[v] = fma(d, d, s2[v]);
          if (is_finite(d)) zmax[v] = fmax(zmax[v], fabs(d));
          out.v[v] = to_slab_entry<S>(d * scale[v], a.slab.tf32);
        }
      }
      store(pos + u, out);
      if (a.check_finite && !finite) {
        atomicMin(a.status + kCallNonFiniteRow, static_cast<long long>(a.row_offset + row[u]));
      }
    }
  }
  flush();

#pragma unroll
  for (int v = 0; v < V; ++v) {
    if (v < valid && zmax[v] > 0.0) atomic_max_abs(a.colmax + col + v, zmax[v]);
  }

  // The last block to finish sees every column's maximum and decides whether any column leaves
  // its window (a lane's own maximum cannot tell a column too small to keep its scale).
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned blocks = gridDim.x * gridDim.y;
    last = atomicAdd(reinterpret_cast<unsigned*>(a.flags + kFlagTicket), 1u) == blocks - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  bool out_of_window = false;
  const volatile unsigned long long* colmax = a.colmax;
  for (int64_t j = threadIdx.x; j < a.dim; j += blockDim.x) {
    const double m = __longlong_as_double(static_cast<long long>(colmax[j]));
    out_of_window |= next_exponent(m, e[j], lo, hi) != e[j];
  }
  if (__syncthreads_or(out_of_window) && threadIdx.x == 0) a.flags[kFlagRange] = 1;
}

template <typename In, typename S, int V, bool kAligned>
void launch(const SlabMomentsArgs& a, int sm_count, cudaStream_t stream) {
  const int64_t col_tiles = ceil_div(a.slab.padded_dim, 32 * V);
  // About 8 warps per SM per column tile, at least 16 positions per warp (class_sums_cuda.cu).
  const int64_t target_warps = ceil_div(8 * static_cast<int64_t>(sm_count) * kWarps, col_tiles);
  int64_t per_warp = ceil_div(a.slab.positions, target_warps);
  if (per_warp < 16) per_warp = 16;
  per_warp = round_up(per_warp, kUnroll);
  const int64_t blocks_y = ceil_div(ceil_div(a.slab.positions, per_warp), kWarps);
  if (blocks_y > 65535) throw std::invalid_argument("slab_moments: too many position ranges");
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(blocks_y));
  slab_moments_kernel<In, S, V, kAligned><<<grid, kWarps * 32, 0, stream>>>(a, per_warp);
  check_launch("slab_moments_kernel");
}

template <typename In, typename S>
void launch_for(const SlabMomentsArgs& a, int sm_count, cudaStream_t stream) {
  constexpr int V = static_cast<int>(16 / sizeof(In));
  const bool aligned = a.dim % V == 0 && a.ld % V == 0 && reinterpret_cast<uintptr_t>(a.x) % (sizeof(In) * V) == 0;
  if (aligned) {
    launch<In, S, V, true>(a, sm_count, stream);
  } else {
    launch<In, S, 1, false>(a, sm_count, stream);
  }
}

}  // namespace

void slab_moments(const SlabMomentsArgs& a, int sm_count, cudaStream_t stream) {
  if (a.slab.positions <= 0 || a.dim <= 0) return;
  // The slab types each input dtype may use: its own 16-bit type or float32 ("fast"), float64
  // ("exact", or float64 input), float32 (the exact path on GPUs with slow float64).
  const DType s = a.slab.dtype;
  switch (a.dtype) {
    case DType::kBFloat16:
      if (s == DType::kBFloat16) return launch_for<__nv_bfloat16, __nv_bfloat16>(a, sm_count, stream);
      if (s == DType::kFloat32) return launch_for<__nv_bfloat16, float>(a, sm_count, stream);
      if (s == DType::kFloat64) return launch_for<__nv_bfloat16, double>(a, sm_count, stream);
      break;
    case DType::kFloat16:
      if (s == DType::kFloat16) return launch_for<__half, __half>(a, sm_count, stream);
      if (s == DType::kFloat32) return launch_for<__half, float>(a, sm_count, stream);
      if (s == DType::kFloat64) return launch_for<__half, double>(a, sm_count, stream);
      break;
    case DType::kFloat32:
      if (s == DType::kFloat32) return launch_for<float, float>(a, sm_count, stream);
      if (s == DType::kFloat64) return launch_for<float, double>(a, sm_count, stream);
      break;
    case DType::kFloat64:
      if (s == DType::kFloat64) return launch_for<double, double>(a, sm_count, stream);
      break;
    default:
      break;
  }
  throw std::invalid_argument("slab_moments: unsupported pair of feature and slab dtypes");
}

}  // namespace ncfast::cuda
