// Each tile of kTileRows x kTileVecs accumulator vectors walks a chunk of input rows sized to
// stay in L2 (so the chunk is read from cache once per tile, not from memory); a tile loads its
// accumulators from `out` at the start of each chunk and stores them at its end.
#include "gram_kernels.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include <atomic>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ncfast::cpu {
namespace {

// Input bytes per chunk of rows: a chunk stays in L2 across the tiles that read it. Each tile
// sums a chunk in fresh registers and adds the sum to `out`, so no float32 sum runs over more
// than kMaxChunkLines lines in a row (rounding drifts with the length of a running sum when
// the same products recur, as with coarsely quantized 16-bit inputs).
constexpr int64_t kChunkBytes = int64_t{192} << 10;
constexpr int64_t kMaxChunkLines = 256;

#if defined(__AVX512F__)
struct F32 {
  using Elem = float;
  using Vec = __m512;
  using Acc = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTileRows = 8;
  static constexpr int kTileVecs = 3;
  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc load_acc(const float* p) { return _mm512_loadu_ps(p); }
  static void store_acc(float* p, Acc v) { _mm512_storeu_ps(p, v); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Acc fma(Acc acc, Vec a, Vec b) { return _mm512_fmadd_ps(a, b, acc); }
  static Acc add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
};
#elif defined(__AVX2__) && defined(__FMA__)
struct F32 {
  using Elem = float;
  using Vec = __m256;
  using Acc = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTileRows = 4;
  static constexpr int kTileVecs = 3;
  static Acc zero() { return _mm256_setzero_ps(); }
  static Acc load_acc(const float* p) { return _mm256_loadu_ps(p); }
  static void store_acc(float* p, Acc v) { _mm256_storeu_ps(p, v); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec broadcast(const float* p) { return _mm256_set1_ps(*p); }
  static Acc fma(Acc acc, Vec a, Vec b) { return _mm256_fmadd_ps(a, b, acc); }
  static Acc add(Acc a, Acc b) { return _mm256_add_ps(a, b); }
};
#else
// Portable: four floats per "vector", plain loops the compiler may vectorise.
struct F32 {
  struct V4 {
    float v[4];
  };
  using Elem = float;
  using Vec = V4;
  using Acc = V4;
  static constexpr int kLanes = 4;
  static constexpr int kTileRows = 4;
  static constexpr int kTileVecs = 2;
  static Acc zero() { return V4{{0.f, 0.f, 0.f, 0.f}}; }
  static Acc load_acc(const float* p) {
    V4 r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static void store_acc(float* p, Acc a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static Vec load(const float* p) { return load_acc(p); }
  static Vec broadcast(const float* p) { return V4{{*p, *p, *p, *p}}; }
  static Acc fma(Acc acc, Vec a, Vec b) {
    for (int l = 0; l < 4; ++l) acc.v[l] += a.v[l] * b.v[l];
    return acc;
  }
  static Acc add(Acc a, Acc b) {
    for (int l = 0; l < 4; ++l) a.v[l] += b.v[l];
    return a;
  }
};
#endif

#if defined(__AVX512BF16__) && defined(__AVX512F__)
// VDPBF16PS: acc(l) += a(2l) b(2l) + a(2l+1) b(2l+1) in float32. With row pairs interleaved
// per column, one instruction adds two rows' products to 16 output columns.
struct BF16Pairs {
  using Elem = uint32_t;
  using Vec = __m512bh;
  using Acc = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTileRows = 8;
  static constexpr int kTileVecs = 3;
  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc load_acc(const float* p) { return _mm512_loadu_ps(p); }
  static void store_acc(float* p, Acc v) { _mm512_storeu_ps(p, v); }
  static Vec load(const uint32_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static Vec broadcast(const uint32_t* p) {
    return (__m512bh)_mm512_set1_epi32(static_cast<int>(*p));
  }
  static Acc fma(Acc acc, Vec a, Vec b) { return _mm512_dpbf16_ps(acc, a, b); }
  static Acc add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
};
#endif

// One tile: output rows [i0, i0 + R), columns [j0, j0 + V * lanes), over `rows` input rows.
template <class K, int R, int V>
void tile(const typename K::Elem* z, int64_t rows, int64_t ld, int64_t i0, int64_t j0, float* out,
          int64_t ldo, bool accumulate) {
  typename K::Acc acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = K::zero();
  }
  for (int64_t k = 0; k < rows; ++k) {
    const typename K::Elem* zk = z + k * ld;
    typename K::Vec b[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) b[v] = K::load(zk + j0 + v * K::kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const typename K::Vec a = K::broadcast(zk + i0 + r);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = K::fma(acc[r][v], a, b[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      float* o = out + (i0 + r) * ldo + j0 + v * K::kLanes;
      K::store_acc(o, accumulate ? K::add(K::load_acc(o), acc[r][v]) : acc[r][v]);
    }
  }
}

template <class K>
using TileFn = void (*)(const typename K::Elem*, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                        bool);

// table[r - 1][v - 1] = tile<K, r, v>, for the partial tiles at the bottom and the right.
template <class K, int R, int... Vs>
constexpr void fill_row(TileFn<K> (&row)[K::kTileVecs], std::integer_sequence<int, Vs...>) {
  ((row[Vs] = &tile<K, R, Vs + 1>), ...);
}

template <class K, int... Rs>
constexpr void fill_table(TileFn<K> (&table)[K::kTileRows][K::kTileVecs],
                          std::integer_sequence<int, Rs...>) {
  (fill_row<K, Rs + 1>(table[Rs], std::make_integer_sequence<int, K::kTileVecs>{}), ...);
}

template <class K>
struct TileTable {
  TileFn<K> fn[K::kTileRows][K::kTileVecs];
  TileTable() { fill_table<K>(fn, std::make_integer_sequence<int, K::kTileRows>{}); }
};

template <class K>
void gram_upper(const typename K::Elem* z, int64_t rows, int64_t dim, int64_t ld, int64_t i_begin,
                int64_t i_end, float* out, int64_t ldo, bool accumulate) {
  static_assert(kGramTileRows % K::kTileRows == 0, "band edges must fall on tile rows");
  static const TileTable<K> table;
  constexpr int64_t kLanes = K::kLanes;
  const int64_t vectors = (dim + kLanes - 1) / kLanes;
  const int64_t chunk = std::clamp<int64_t>(
      kChunkBytes / (vectors * kLanes * static_cast<int64_t>(sizeof(typename K::Elem))), 16,
      kMaxChunkLines);
  for (int64_t k0 = 0; k0 < rows; k0 += chunk) {
    const int64_t k1 = std::min(rows, k0 + chunk);
    const bool add = accumulate || k0 > 0;
    const typename K::Elem* zc = z + k0 * ld;
    for (int64_t i0 = i_begin; i0 < i_end; i0 += K::kTileRows) {
      const int r = static_cast<int>(std::min<int64_t>(K::kTileRows, i_end - i0));
      for (int64_t v0 = i0 / kLanes; v0 < vectors; v0 += K::kTileVecs) {
        const int v = static_cast<int>(std::min<int64_t>(K::kTileVecs, vectors - v0));
        table.fn[r - 1][v - 1](zc, k1 - k0, ld, i0, v0 * kLanes, out, ldo, add);
      }
    }
  }
  if (rows == 0 && !accumulate) {
    for (int64_t i = i_begin; i < i_end; ++i) std::fill_n(out + i * ldo, vectors * kLanes, 0.0f);
  }
}

}  // namespace

int64_t gram_lanes() { return F32::kLanes; }

int64_t padded_dim(int64_t dim) { return (dim + F32::kLanes - 1) / F32::kLanes * F32::kLanes; }

void gram_upper_f32(const float* z, int64_t rows, int64_t dim, int64_t ld, int64_t i_begin,
                    int64_t i_end, float* out, int64_t ldo, bool accumulate) {
  gram_upper<F32>(z, rows, dim, ld, i_begin, i_end, out, ldo, accumulate);
}

namespace {
std::atomic<LibraryBf16Gemm> g_library_gemm{nullptr};
std::atomic<LibrarySetThreads> g_library_threads{nullptr};
std::atomic<int> g_bf16_override{-1};

bool cpu_has(const char* what) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::string_view(what) == "amx-bf16") return __builtin_cpu_supports("amx-bf16");
  if (std::string_view(what) == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
  if (std::string_view(what) == "amd") return __builtin_cpu_is("amd");
#endif
  (void)what;
  return false;
}
}  // namespace

void set_library_bf16_gemm(LibraryBf16Gemm gemm, LibrarySetThreads set_local_threads) {
  g_library_threads.store(set_local_threads);
  g_library_gemm.store(gemm);
}

void library_bf16_gram_band(const uint16_t* z, int64_t rows, int64_t dim, int64_t ld, int64_t i0,
                            int64_t i1, float* out, int64_t ldo, bool accumulate) {
  const LibraryBf16Gemm gemm = g_library_gemm.load();
  thread_local bool single = false;
  if (!single) {
    if (const LibrarySetThreads set = g_library_threads.load()) set(1);  // our threads split the work
    single = true;
  }
  constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
  gemm(kRowMajor, kTrans, kNoTrans, static_cast<int>(i1 - i0), static_cast<int>(dim - i0),
       static_cast<int>(rows), 1.0f, z + i0, static_cast<int>(ld), z + i0, static_cast<int>(ld),
       accumulate ? 1.0f : 0.0f, out + i0 * ldo + i0, static_cast<int>(ldo));
}

Bf16Gram bf16_gram_choice() {
  const int forced = g_bf16_override.load();
  if (forced == static_cast<int>(Bf16Gram::kLibrary) && g_library_gemm.load()) return Bf16Gram::kLibrary;
  if (forced == static_cast<int>(Bf16Gram::kOwnKernel) && has_bf16_gram()) return Bf16Gram::kOwnKernel;
  if (forced == static_cast<int>(Bf16Gram::kNone)) return Bf16Gram::kNone;
  static const bool amx = cpu_has("amx-bf16");
  static const bool own = has_bf16_gram() && cpu_has("avx512bf16") && cpu_has("amd");
  if (amx && g_library_gemm.load()) return Bf16Gram::kLibrary;
  if (own) return Bf16Gram::kOwnKernel;
  return Bf16Gram::kNone;
}

void set_bf16_gram_override(int choice) { g_bf16_override.store(choice); }

#if defined(__AVX512BF16__) && defined(__AVX512F__)
bool has_bf16_gram() { return true; }
void gram_upper_bf16_pairs(const uint32_t* zp, int64_t pairs, int64_t dim, int64_t ld,
                           int64_t i_begin, int64_t i_end, float* out, int64_t ldo, bool accumulate) {
  gram_upper<BF16Pairs>(zp, pairs, dim, ld, i_begin, i_end, out, ldo, accumulate);
}
#else
bool has_bf16_gram() { return false; }
void gram_upper_bf16_pairs(const uint32_t*, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                           int64_t, bool) {}
#endif

}  // namespace ncfast::cpu
