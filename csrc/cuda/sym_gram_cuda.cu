// Symmetric Gram W += alpha * Z^T Z, upper-triangle tiles only, split over rows.
//
// Each block owns one upper-triangle tile pair (bi <= bj) of W and one range of rows (gridDim.y
// splits the rows, split-K style, so small D still fills the GPU). Per step it loads BK rows of
// the column blocks bi and bj, builds Z on the fly (x - shift[key], or a dense correction row),
// stores the converted tiles in shared memory (double-buffered: the next step's global loads
// are in flight while the current step multiplies), and accumulates a float32 (float64)
// partial Gram in registers. The epilogue adds alpha * partial into the float64 W with atomics:
// that add is the fold of DESIGN.md section 3. Diagonal tiles load one operand and use it for
// both sides; their strictly-lower part is not written.
//
// Tensor-core kernel: 128 x 128 tile, 8 warps of 64 x 32, WMMA fragments (float16 / bfloat16:
// 16x16x16, TF32: 16x16x8) with float32 accumulators.
// SIMT kernel: 128 x 128 (float32) or 64 x 64 (float64) tile, 16 x 16 threads, 8 x 8 (4 x 4)
// register micro-tile per thread; float32 keeps a second accumulator that takes the inner one
// every 256 rows, so the partial sum of up to 65536 rows stays within the precision="exact"
// error budget.
#include "sym_gram_cuda.cuh"

#include <mma.h>

#include "common.cuh"

namespace ncfast::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kThreads = 256;

// ------------------------------------------------------------------------------ row sources

// z = x - shift[key[row]] for V consecutive columns; zero for dropped rows and columns >= dim.
template <typename In, int V, bool kAligned>
struct ShiftedSource {
  using Acc = typename Widen<In>::Acc;
  static constexpr int kVec = V;

  const In* x;
  int64_t ld;
  int64_t rows;
  const uint32_t* key;
  uint32_t sentinel;
  const Acc* shift;
  int64_t ld_shift;
  int dim;

  struct Raw {
    In x[V];
    Acc s[V];
    bool live;
  };

  __device__ int64_t row_count() const { return rows; }

  // Issues the global loads; the values are used only in finish(), after the current step's
  // multiplications, so their latency overlaps them.
  __device__ __forceinline__ void fetch(int64_t row, int col, int64_t row_end, Raw& r) const {
    r.live = false;
    if (row < row_end && col < dim) {
      const uint32_t k = key[row];
      if (k != sentinel) {
        r.live = true;
        load_vec<In, V, kAligned>(x + row * ld + col, dim - col, r.x);
        load_vec<Acc, V, kAligned>(shift + static_cast<int64_t>(k) * ld_shift + col, dim - col, r.s);
      }
    }
  }

  __device__ __forceinline__ void finish(const Raw& r, Acc (&z)[V]) const {
#pragma unroll
    for (int v = 0; v < V; ++v) z[v] = r.live ? to_acc(r.x[v]) - r.s[v] : Acc(0);
  }
};

// Rows of a dense matrix whose leading dimension is a multiple of 8 (so every V-vector inside a
// row is aligned); rows at or past the device value *num_rows and columns >= dim are zero.
template <typename T, int V>
struct DenseSource {
  using Acc = T;
  static constexpr int kVec = V;

  const T* a;
  int64_t ld;
  int64_t max_rows;
  const int32_t* num_rows;
  int dim;

  struct Raw {
    T a[V];
    int valid;  // columns of this vector inside [0, dim); 0 for a dead row
  };

  __device__ int64_t row_count() const {
    const int64_t n = *num_rows;
    return n < max_rows ? n : max_rows;
  }

  __device__ __forceinline__ void fetch(int64_t row, int col, int64_t row_end, Raw& r) const {
    r.valid = 0;
    if (row < row_end && col < dim) {
      r.valid = dim - col;
      load_vec<T, V, true>(a + row * ld + col, V, r.a);
    }
  }

  __device__ __forceinline__ void finish(const Raw& r, T (&z)[V]) const {
#pragma unroll
    for (int v = 0; v < V; ++v) z[v] = v < r.valid ? r.a[v] : T(0);
  }
};

// Which element of a BK x BW tile a thread loads: V consecutive columns of one row per pass.
template <int BK, int BW, int V>
struct TileMap {
  static constexpr int kThreadsPerRow = BW / V;
  static constexpr int kRowsPerPass = kThreads / kThreadsPerRow;
  static constexpr int kPasses = BK / kRowsPerPass;
  static_assert(kThreads % kThreadsPerRow == 0, "threads must cover whole tile rows");
  static_assert(BK % kRowsPerPass == 0, "passes must cover the tile");
  __device__ static int col(int t) { return (t % kThreadsPerRow) * V; }
  __device__ static int row(int t, int pass) { return t / kThreadsPerRow + pass * kRowsPerPass; }
};

// Global -> registers -> shared memory for one operand tile (columns c0 .. c0 + BW).
template <class Src, class Map, typename S, int kPitch, typename Cvt>
struct TileLoader {
  typename Src::Raw raw[Map::kPasses];

  __device__ __forceinline__ void fetch(const Src& src, int64_t k0, int c0, int64_t row_end) {
#pragma unroll
    for (int p = 0; p < Map::kPasses; ++p) {
      src.fetch(k0 + Map::row(threadIdx.x, p), c0 + Map::col(threadIdx.x), row_end, raw[p]);
    }
  }

  __device__ __forceinline__ void store(const Src& src, S* tile, Cvt cvt) const {
    constexpr int V = Src::kVec;
#pragma unroll
    for (int p = 0; p < Map::kPasses; ++p) {
      typename Src::Acc z[V];
      src.finish(raw[p], z);
      Vec<S, V> out;
#pragma unroll
      for (int v = 0; v < V; ++v) out.v[v] = cvt(z[v]);
      *reinterpret_cast<Vec<S, V>*>(tile + Map::row(threadIdx.x, p) * kPitch + Map::col(threadIdx.x)) = out;
    }
  }
};

// Atomically folds one float32 (float64) partial entry into W; diagonal tiles skip i > j.
__device__ __forceinline__ void fold_entry(double* w, int dim, int i, int j, bool diag, double alpha,
                                           double v) {
  if (i < dim && j < dim && (!diag || i <= j)) atomicAdd(w + static_cast<int64_t>(i) * dim + j, alpha * v);
}

// ------------------------------------------------------------------------------ tensor cores

struct Tf32 {};

template <typename MmaT>
struct MmaTraits;

template <>
struct MmaTraits<__half> {
  using Smem = __half;
  using Frag = __half;
  static constexpr int kK = 16;
  static constexpr int kBK = 32;
  __device__ static Smem cvt(float v) { return __float2half_rn(v); }
};

template <>
struct MmaTraits<__nv_bfloat16> {
  using Smem = __nv_bfloat16;
  using Frag = __nv_bfloat16;
  static constexpr int kK = 16;
  static constexpr int kBK = 32;
  __device__ static Smem cvt(float v) { return __float2bfloat16_rn(v); }
};

template <>
struct MmaTraits<Tf32> {
  using Smem = float;
  using Frag = wmma::precision::tf32;
  static constexpr int kK = 8;
  static constexpr int kBK = 16;
  __device__ static Smem cvt(float v) { return wmma::__float_to_tf32(v); }
};

struct MmaTile {
  static constexpr int kBM = 128;      // tile edge (rows and columns of W)
  static constexpr int kWarpM = 64;    // warp tile: 64 rows x 32 columns of the block tile
  static constexpr int kWarpN = 32;
  static constexpr int kFragM = kWarpM / 16;
  static constexpr int kFragN = kWarpN / 16;
};

template <typename MmaT>
struct MmaCvt {
  __device__ typename MmaTraits<MmaT>::Smem operator()(float v) const { return MmaTraits<MmaT>::cvt(v); }
};

// One block: tile pair blockIdx.x, rows [blockIdx.y * rows_per_split, ...), 8 warps.
template <typename MmaT, class Src>
__global__ void __launch_bounds__(kThreads)
    sym_gram_mma_kernel(const Src src, const int nb, const int64_t rows_per_split, const double alpha,
                        double* __restrict__ w, const long long* __restrict__ status) {
  using Tr = MmaTraits<MmaT>;
  using S = typename Tr::Smem;
  constexpr int BM = MmaTile::kBM;
  constexpr int BK = Tr::kBK;
  constexpr int kPitch = BM + 16 / static_cast<int>(sizeof(S));  // 16-byte pad per row
  constexpr int kTileElems = BK * kPitch;
  using Map = TileMap<BK, BM, Src::kVec>;
  using Loader = TileLoader<Src, Map, S, kPitch, MmaCvt<MmaT>>;

  constexpr int kTileBytes = 4 * kTileElems * static_cast<int>(sizeof(S));  // 2 operands x 2 buffers
  constexpr int kEpiBytes = (kThreads / 32) * 16 * 16 * static_cast<int>(sizeof(float));
  __shared__ __align__(128) unsigned char smem[kTileBytes > kEpiBytes ? kTileBytes : kEpiBytes];
  S* const tiles = reinterpret_cast<S*>(smem);  // a[0], a[1], b[0], b[1]

  if (rejected(status)) return;
  int bi, bj;
  tile_pair(blockIdx.x, nb, &bi, &bj);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t rows = src.row_count();
  const int64_t r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
  if (r0 >= r1) return;

  const bool diag = bi == bj;
  const int ci = bi * BM;
  const int cj = bj * BM;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int wm = warp / 4;  // warp rows [wm * 64, +64) of the tile
  const int wn = warp % 4;  // warp columns [wn * 32, +32)

  // A fragment strictly below the diagonal of a diagonal tile is never needed.
  auto below = [&](int fm, int fn) {
    return diag && wm * MmaTile::kWarpM + fm * 16 > wn * MmaTile::kWarpN + fn * 16 + 15;
  };

  wmma::fragment<wmma::accumulator, 16, 16, Tr::kK, float> acc[MmaTile::kFragM][MmaTile::kFragN];
#pragma unroll
  for (int fm = 0; fm < MmaTile::kFragM; ++fm) {
#pragma unroll
    for (int fn = 0; fn < MmaTile::kFragN; ++fn) wmma::fill_fragment(acc[fm][fn], 0.0f);
  }

  Loader load_a, load_b;
  const MmaCvt<MmaT> cvt;
  auto a_tile = [&](int buf) { return tiles + buf * kTileElems; };
  auto b_tile = [&](int buf) { return tiles + (2 + buf) * kTileElems; };

  auto fetch = [&](int64_t k0) {
    load_a.fetch(src, k0, ci, r1);
    if (!diag) load_b.fetch(src, k0, cj, r1);
  };
  auto store = [&](int buf) {
    load_a.store(src, a_tile(buf), cvt);
    if (!diag) load_b.store(src, b_tile(buf), cvt);
  };
  auto compute = [&](int buf) {
    const S* a = a_tile(buf);
    const S* b = diag ? a : b_tile(buf);
#pragma unroll
    for (int kk = 0; kk < BK; kk += Tr::kK) {
      wmma::fragment<wmma::matrix_a, 16, 16, Tr::kK, typename Tr::Frag, wmma::col_major> fa[MmaTile::kFragM];
      wmma::fragment<wmma::matrix_b, 16, 16, Tr::kK, typename Tr::Frag, wmma::row_major> fb[MmaTile::kFragN];
#pragma unroll
      for (int fm = 0; fm < MmaTile::kFragM; ++fm) {
        wmma::load_matrix_sync(fa[fm], a + kk * kPitch + wm * MmaTile::kWarpM + fm * 16, kPitch);
      }
#pragma unroll
      for (int fn = 0; fn < MmaTile::kFragN; ++fn) {
        wmma::load_matrix_sync(fb[fn], b + kk * kPitch + wn * MmaTile::kWarpN + fn * 16, kPitch);
      }
#pragma unroll
      for (int fm = 0; fm < MmaTile::kFragM; ++fm) {
#pragma unroll
        for (int fn = 0; fn < MmaTile::kFragN; ++fn) {
          if (!below(fm, fn)) wmma::mma_sync(acc[fm][fn], fa[fm], fb[fn], acc[fm][fn]);
        }
      }
    }
  };

  // Main loop: step s multiplies buffer s & 1 while step s + 1's rows are loaded into registers,
  // then stores them into the other buffer; one barrier per step.
  const int64_t steps = ceil_div(r1 - r0, BK);
  fetch(r0);
  store(0);
  __syncthreads();
  for (int64_t s = 0; s < steps; ++s) {
    const int buf = static_cast<int>(s & 1);
    if (s + 1 < steps) fetch(r0 + (s + 1) * BK);
    compute(buf);
    if (s + 1 < steps) store(buf ^ 1);
    __syncthreads();
  }

  // Epilogue: each warp stages one 16 x 16 fragment at a time in its own slice of shared memory
  // (the tiles are dead after the last barrier) and folds it into W.
  float* epi = reinterpret_cast<float*>(smem) + warp * 256;
#pragma unroll
  for (int fm = 0; fm < MmaTile::kFragM; ++fm) {
#pragma unroll
    for (int fn = 0; fn < MmaTile::kFragN; ++fn) {
      if (below(fm, fn)) continue;
      wmma::store_matrix_sync(epi, acc[fm][fn], 16, wmma::mem_row_major);
      __syncwarp();
      const int i0 = ci + wm * MmaTile::kWarpM + fm * 16;
      const int j0 = cj + wn * MmaTile::kWarpN + fn * 16;
#pragma unroll
      for (int q = 0; q < 8; ++q) {
        const int e = lane + 32 * q;
        fold_entry(w, src.dim, i0 + e / 16, j0 + e % 16, diag, alpha, static_cast<double>(epi[e]));
      }
      __syncwarp();
    }
  }
}

// ------------------------------------------------------------------------------ SIMT FMA

template <typename Acc>
struct SimtTile;
template <>
struct SimtTile<float> {
  static constexpr int kBM = 128;
  static constexpr int kTM = 8;
  static constexpr bool kTwoLevel = true;
};
template <>
struct SimtTile<double> {
  static constexpr int kBM = 64;
  static constexpr int kTM = 4;
  static constexpr bool kTwoLevel = false;
};

template <typename Acc>
struct Identity {
  __device__ Acc operator()(Acc v) const { return v; }
};

// One block: tile pair blockIdx.x, rows [blockIdx.y * rows_per_split, ...), 16 x 16 threads,
// each owning a kTM x kTM block of the tile (rows ty * kTM.., columns tx * kTM..).
template <typename Acc, class Src>
__global__ void __launch_bounds__(kThreads)
    sym_gram_simt_kernel(const Src src, const int nb, const int64_t rows_per_split, const double alpha,
                         double* __restrict__ w, const long long* __restrict__ status) {
  constexpr int BM = SimtTile<Acc>::kBM;
  constexpr int TM = SimtTile<Acc>::kTM;
  constexpr int BK = 8;
  constexpr int kTileElems = BK * BM;
  constexpr int kGroupSteps = 256 / BK;  // rows per inner accumulation: 256
  using Map = TileMap<BK, BM, Src::kVec>;
  using Loader = TileLoader<Src, Map, Acc, BM, Identity<Acc>>;
  static_assert((BM / TM) * (BM / TM) == kThreads, "one micro-tile per thread");

  __shared__ __align__(128) Acc tiles[4 * kTileElems];  // a[0], a[1], b[0], b[1]

  if (rejected(status)) return;
  int bi, bj;
  tile_pair(blockIdx.x, nb, &bi, &bj);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t rows = src.row_count();
  const int64_t r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
  if (r0 >= r1) return;

  const bool diag = bi == bj;
  const int ci = bi * BM;
  const int cj = bj * BM;
  const int ty = threadIdx.x / (BM / TM);
  const int tx = threadIdx.x % (BM / TM);

  Acc acc[TM][TM];
  Acc total[TM][TM];
#pragma unroll
  for (int m = 0; m < TM; ++m) {
#pragma unroll
    for (int n = 0; n < TM; ++n) acc[m][n] = total[m][n] = Acc(0);
  }

  Loader load_a, load_b;
  const Identity<Acc> cvt;
  auto fetch = [&](int64_t k0) {
    load_a.fetch(src, k0, ci, r1);
    if (!diag) load_b.fetch(src, k0, cj, r1);
  };
  auto store = [&](int buf) {
    load_a.store(src, tiles + buf * kTileElems, cvt);
    if (!diag) load_b.store(src, tiles + (2 + buf) * kTileElems, cvt);
  };
  auto compute = [&](int buf) {
    const Acc* a = tiles + buf * kTileElems;
    const Acc* b = diag ? a : tiles + (2 + buf) * kTileElems;
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      const Vec<Acc, TM> av = *reinterpret_cast<const Vec<Acc, TM>*>(a + k * BM + ty * TM);
      const Vec<Acc, TM> bv = *reinterpret_cast<const Vec<Acc, TM>*>(b + k * BM + tx * TM);
#pragma unroll
      for (int m = 0; m < TM; ++m) {
#pragma unroll
        for (int n = 0; n < TM; ++n) acc[m][n] = fma(av.v[m], bv.v[n], acc[m][n]);
      }
    }
  };
  auto flush_inner = [&]() {
#pragma unroll
    for (int m = 0; m < TM; ++m) {
#pragma unroll
      for (int n = 0; n < TM; ++n) {
        total[m][n] += acc[m][n];
        acc[m][n] = Acc(0);
      }
    }
  };

  const int64_t steps = ceil_div(r1 - r0, BK);
  fetch(r0);
  store(0);
  __syncthreads();
  for (int64_t s = 0; s < steps; ++s) {
    const int buf = static_cast<int>(s & 1);
    if (s + 1 < steps) fetch(r0 + (s + 1) * BK);
    compute(buf);
    if (SimtTile<Acc>::kTwoLevel && (s + 1) % kGroupSteps == 0) flush_inner();
    if (s + 1 < steps) store(buf ^ 1);
    __syncthreads();
  }
  flush_inner();

#pragma unroll
  for (int m = 0; m < TM; ++m) {
#pragma unroll
    for (int n = 0; n < TM; ++n) {
      fold_entry(w, src.dim, ci + ty * TM + m, cj + tx * TM + n, diag, alpha,
                 static_cast<double>(total[m][n]));
    }
  }
}

// ------------------------------------------------------------------------------ launchers

struct Launch {
  int64_t dim;
  double alpha;
  double* w;
  const long long* status;
  int sm_count;
  cudaStream_t stream;
};

template <typename MmaT, class Src>
void launch_mma(const Src& src, int64_t max_rows, const Launch& l) {
  const int64_t nb = ceil_div(l.dim, MmaTile::kBM);
  const int64_t pairs = num_tile_pairs(nb);
  const RowSplit split = plan_row_split(max_rows, pairs, l.sm_count, MmaTraits<MmaT>::kBK);
  if (split.splits == 0) return;
  const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(split.splits));
  sym_gram_mma_kernel<MmaT, Src><<<grid, kThreads, 0, l.stream>>>(
      src, static_cast<int>(nb), split.rows_per_split, l.alpha, l.w, l.status);
  check_launch("sym_gram_mma_kernel");
}

template <typename Acc, class Src>
void launch_simt(const Src& src, int64_t max_rows, const Launch& l) {
  const int64_t nb = ceil_div(l.dim, SimtTile<Acc>::kBM);
  const int64_t pairs = num_tile_pairs(nb);
  const RowSplit split = plan_row_split(max_rows, pairs, l.sm_count, 8);
  if (split.splits == 0) return;
  const dim3 grid(static_cast<unsigned>(pairs), static_cast<unsigned>(split.splits));
  sym_gram_simt_kernel<Acc, Src><<<grid, kThreads, 0, l.stream>>>(
      src, static_cast<int>(nb), split.rows_per_split, l.alpha, l.w, l.status);
  check_launch("sym_gram_simt_kernel");
}

template <typename In, int V>
bool rows_aligned(const ShiftedRows& z, int64_t dim) {
  const auto address = reinterpret_cast<uintptr_t>(z.x);
  return dim % V == 0 && z.ld % V == 0 && address % (sizeof(In) * V) == 0;
}

template <typename In, int V, bool kAligned>
ShiftedSource<In, V, kAligned> make_shifted(const ShiftedRows& z, int64_t dim) {
  using Acc = typename Widen<In>::Acc;
  return {static_cast<const In*>(z.x), z.ld, z.rows, z.key, z.sentinel,
          static_cast<const Acc*>(z.shift), z.ld_shift, static_cast<int>(dim)};
}

// Picks the aligned (vector loads) or guarded source for the batch.
template <typename In, int V, typename Fn>
void with_shifted(const ShiftedRows& z, int64_t dim, Fn&& fn) {
  if (rows_aligned<In, V>(z, dim)) {
    fn(make_shifted<In, V, true>(z, dim));
  } else {
    fn(make_shifted<In, V, false>(z, dim));
  }
}

}  // namespace

void sym_gram_shifted(GramPath path, const ShiftedRows& z, int64_t dim, double alpha, double* w,
                      const long long* status, int sm_count, cudaStream_t stream) {
  if (z.rows <= 0 || dim <= 0) return;
  const Launch l{dim, alpha, w, status, sm_count, stream};
  switch (path) {
    case GramPath::kMmaBF16:
      if (z.dtype != DType::kBFloat16) break;
      with_shifted<__nv_bfloat16, 8>(z, dim, [&](const auto& src) { launch_mma<__nv_bfloat16>(src, z.rows, l); });
      return;
    case GramPath::kMmaF16:
      if (z.dtype != DType::kFloat16) break;
      with_shifted<__half, 8>(z, dim, [&](const auto& src) { launch_mma<__half>(src, z.rows, l); });
      return;
    case GramPath::kMmaTF32:
      if (z.dtype != DType::kFloat32) break;
      with_shifted<float, 4>(z, dim, [&](const auto& src) { launch_mma<Tf32>(src, z.rows, l); });
      return;
    case GramPath::kSimtF32:
      if (z.dtype == DType::kFloat32) {
        with_shifted<float, 4>(z, dim, [&](const auto& src) { launch_simt<float>(src, z.rows, l); });
        return;
      }
      if (z.dtype == DType::kFloat16) {
        with_shifted<__half, 4>(z, dim, [&](const auto& src) { launch_simt<float>(src, z.rows, l); });
        return;
      }
      if (z.dtype == DType::kBFloat16) {
        with_shifted<__nv_bfloat16, 4>(z, dim, [&](const auto& src) { launch_simt<float>(src, z.rows, l); });
        return;
      }
      break;
    case GramPath::kSimtF64:
      if (z.dtype != DType::kFloat64) break;
      with_shifted<double, 2>(z, dim, [&](const auto& src) { launch_simt<double>(src, z.rows, l); });
      return;
  }
  throw std::invalid_argument("sym_gram_shifted: path does not match the feature dtype");
}

void sym_gram_dense(GramPath path, const DenseRows& z, int64_t dim, double alpha, double* w,
                    const long long* status, int sm_count, cudaStream_t stream) {
  if (z.max_rows <= 0 || dim <= 0) return;
  const Launch l{dim, alpha, w, status, sm_count, stream};
  const int d = static_cast<int>(dim);
  if (z.is_double) {
    if (path != GramPath::kSimtF64) throw std::invalid_argument("sym_gram_dense: float64 rows need kSimtF64");
    const DenseSource<double, 2> src{static_cast<const double*>(z.a), z.ld, z.max_rows, z.num_rows, d};
    launch_simt<double>(src, z.max_rows, l);
    return;
  }
  const DenseSource<float, 4> src{static_cast<const float*>(z.a), z.ld, z.max_rows, z.num_rows, d};
  switch (path) {
    case GramPath::kSimtF32: launch_simt<float>(src, z.max_rows, l); return;
    case GramPath::kMmaTF32: launch_mma<Tf32>(src, z.max_rows, l); return;
    default: throw std::invalid_argument("sym_gram_dense: float32 rows need kSimtF32 or kMmaTF32");
  }
}

}  // namespace ncfast::cuda
