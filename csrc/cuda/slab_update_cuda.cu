// The slab path of the chunk update (docs/CUDA.md, "The slab path"). Per chunk:
//   prep      small step: one kernel (status words, gram words, labels checked, rows sorted by
//             class in one block, zeroed sums); otherwise chunk_begin, memsets and the class
//             sort of class_stats_cuda.cu (after the call's up-front checks when prevalidated)
//   moments   slab_moments_cuda.cu: float64 moments about the exact shift p and the slab rows
//             (x - p) 2^-e in class-sorted order, one read of x
//   classes   per slot: commit (unless prevalidated), n, mu, tr, q, the correction row
//             a_c 2^-e = sqrt(m - w) (xbar - p) 2^-e; a rejected call zeroes the slab instead;
//             the due fold of the partial (and, when a column left its exponent window, the
//             rescale: fold at the old exponents, new exponents, each slot rewrites its rows)
// then the caller's GEMMs: partial += Z'^T Z' - A'^T A'.
//
// Maths (DESIGN.md section 3): with the exact shift p_c (the running mean mu_c of a seen class,
// the chunk's first row of a new one), d = xbar - p, w = n m / n', Chan's merge gives
//   W' = W + sum_{i in c} (x_i - p)(x_i - p)^T - m d d^T + w e e^T,  e = xbar - mu.
// For a seen class p = mu, so e = d; for a new one w = 0. Either way the two corrections are one
// row: -(m - w) d d^T, m - w = m^2 / n' (seen) or m (new); the same on the diagonal gives
// tr_c and q_c from the float64 moments: dq = sum (x - p)^2 - (m - w) d^2.
#include "slab_update_cuda.h"

#include <cub/block/block_discontinuity.cuh>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <string>
#include <type_traits>

#include "slab_common.cuh"
#include "slab_kernels.cuh"
#include "update_steps.cuh"

namespace ncfast::cuda {
namespace {

constexpr int64_t kAlign = 256;
constexpr int kPrepThreads = 1024;
constexpr int kPrepItems = static_cast<int>(kSlabSmallRows / kPrepThreads);
static_assert(kPrepThreads * kPrepItems == kSlabSmallRows, "the prep block sorts every row of a small call");
constexpr int kClassThreads = 256;

template <typename T>
T* at(void* base, int64_t offset) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + offset);
}

// ------------------------------------------------------------------------------ scratch plan

SlabScratch make_scratch(const UpdateShape& s, int64_t chunk_rows, bool small, int64_t padded_dim) {
  SlabScratch p;
  const int64_t c = std::max<int64_t>(chunk_rows, 1);
  const int64_t slots = std::max<int64_t>(1, std::min(s.num_classes, c));
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t offset = at;
    at += round_up(std::max<int64_t>(bytes, 1), kAlign);
    return offset;
  };
  p.flags = take(kFlagWords * 4);
  p.num_slots = take(4);
  p.slot_class = take(slots * 4);
  p.seg_begin = take(slots * 4);
  p.seg_end = take(slots * 4);
  p.sorted_keys = take(c * 4);
  p.perm = take(c * 4);
  p.sum1 = take(slots * s.dim * 8);
  p.sum2 = take(slots * s.dim * 8);
  p.colmax = take(padded_dim * 8);
  p.key_bits = slot_key_bits(static_cast<uint64_t>(slots));
  if (!small) {
    p.keep = take(s.nan_policy == NanPolicy::kSkip ? s.rows : 0);
    p.present = take(s.num_classes * 4);
    p.slot_of_class = take(s.num_classes * 4);
    p.keys = take(c * 4);
    p.vals = take(c * 4);
    p.sort_bytes = class_sort_temp_bytes(c, p.key_bits);
    p.sort_temp = take(static_cast<int64_t>(p.sort_bytes));
  }
  p.total = at;
  return p;
}

// ------------------------------------------------------------------------------ gram words

// Start of a chunk (one thread): the exponents chosen by the previous chunk become current;
// decide whether the partial must be folded before this chunk's GEMMs.
__device__ __forceinline__ void begin_chunk(long long* words, int32_t* flags, int64_t fold_rows, int64_t add_rows) {
  words[kGramCur] = words[kGramNext];
  const long long rows = words[kGramPartialRows];
  const bool due = rows > 0 && rows + add_rows > fold_rows;
  flags[kFlagDue] = due ? 1 : 0;
  flags[kFlagRange] = 0;
  flags[kFlagTicket] = 0;
  words[kGramPartialRows] = due ? add_rows : rows + add_rows;
}

__global__ void slab_chunk_begin_kernel(long long* words, int32_t* flags, int64_t fold_rows, int64_t add_rows) {
  if (threadIdx.x == 0 && blockIdx.x == 0) begin_chunk(words, flags, fold_rows, add_rows);
}

// ------------------------------------------------------------------------------ small prep

struct PrepArgs {
  const void* labels;
  int64_t rows;
  int64_t num_classes;
  int key_bits;         // bits of the class labels' sort keys (classes 0..K)
  uint32_t sentinel;    // max_slots
  int32_t* slot_class;
  int32_t* seg_begin;
  int32_t* seg_end;
  int32_t* num_slots;
  uint32_t* sorted_keys;
  int32_t* perm;
  double* sum1;         // zeroed: max_slots x dim each
  double* sum2;
  int64_t sum_elems;
  unsigned long long* colmax;  // zeroed: padded_dim
  int64_t padded_dim;
  int32_t* flags;
  long long* words;
  int64_t fold_rows;
  int64_t add_rows;
  long long* status;
};

struct Differ {
  __device__ __forceinline__ bool operator()(uint32_t a, uint32_t b) const { return a != b; }
};

// Block 0: the call's status words, the chunk's gram words, the labels' range, and the rows
// sorted by class in one block (radix sort of (label, row), stable); a slot is a run of one
// label in that order, so slots come in class order. Blocks 1..: zero the moments and maxima.
template <typename Label>
__global__ void __launch_bounds__(kPrepThreads) slab_prep_small_kernel(const PrepArgs a) {
  using Sort = cub::BlockRadixSort<uint32_t, kPrepThreads, kPrepItems, int32_t>;
  using Disc = cub::BlockDiscontinuity<uint32_t, kPrepThreads>;
  using Scan = cub::BlockScan<int, kPrepThreads>;
  __shared__ union {
    typename Sort::TempStorage sort;
    typename Disc::TempStorage disc;
    typename Scan::TempStorage scan;
  } temp;

  if (blockIdx.x > 0) {
    const int64_t stride = static_cast<int64_t>(gridDim.x - 1) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x - 1) * blockDim.x + threadIdx.x; i < a.sum_elems; i += stride) {
      a.sum1[i] = 0.0;
      a.sum2[i] = 0.0;
    }
    for (int64_t i = static_cast<int64_t>(blockIdx.x - 1) * blockDim.x + threadIdx.x; i < a.padded_dim; i += stride) {
      a.colmax[i] = 0ull;
    }
    return;
  }

  if (threadIdx.x == 0) {
    if (a.status[kCode] == 0) {  // begin_update_kernel
      a.status[kCallBadLabelRow] = kNoRow;
      a.status[kCallNonFiniteRow] = kNoRow;
      a.status[kCallSkipped] = 0;
    }
    begin_chunk(a.words, a.flags, a.fold_rows, a.add_rows);
  }
  __syncthreads();
  if (rejected(a.status)) return;

  const Label* labels = static_cast<const Label*>(a.labels);
  const uint32_t invalid = static_cast<uint32_t>(a.num_classes);  // bad labels and padding
  const uint32_t pad = (1u << a.key_bits) - 1u;                   // >= invalid
  uint32_t keys[kPrepItems];
  int32_t rows[kPrepItems];
#pragma unroll
  for (int it = 0; it < kPrepItems; ++it) {
    const int64_t i = static_cast<int64_t>(threadIdx.x) * kPrepItems + it;
    keys[it] = pad;
    rows[it] = -1;
    if (i < a.rows) {
      const long long y = read_label(labels, i);
      const bool ok = y >= 0 && y < a.num_classes;
      if (!ok) atomicMin(a.status + kCallBadLabelRow, static_cast<long long>(i));
      keys[it] = ok ? static_cast<uint32_t>(y) : invalid;
      rows[it] = static_cast<int32_t>(i);
    }
  }
  Sort(temp.sort).Sort(keys, rows, 0, a.key_bits);
  __syncthreads();
  int heads[kPrepItems];
  int tails[kPrepItems];
  Disc(temp.disc).FlagHeadsAndTails(heads, tails, keys, Differ());
  __syncthreads();
  int head_count[kPrepItems];
  int slot_of[kPrepItems];
#pragma unroll
  for (int it = 0; it < kPrepItems; ++it) head_count[it] = keys[it] < invalid && heads[it] ? 1 : 0;
  int slots = 0;
  Scan(temp.scan).InclusiveSum(head_count, slot_of, slots);
#pragma unroll
  for (int it = 0; it < kPrepItems; ++it) {
    const int64_t pos = static_cast<int64_t>(threadIdx.x) * kPrepItems + it;
    if (pos >= a.rows) continue;
    const bool valid = keys[it] < invalid;
    const int slot = slot_of[it] - 1;
    a.sorted_keys[pos] = valid ? static_cast<uint32_t>(slot) : a.sentinel;
    a.perm[pos] = rows[it];
    if (!valid) continue;
    if (heads[it]) {
      a.slot_class[slot] = static_cast<int32_t>(keys[it]);
      a.seg_begin[slot] = static_cast<int32_t>(pos);
    }
    if (tails[it]) a.seg_end[slot] = static_cast<int32_t>(pos + 1);
  }
  if (threadIdx.x == 0) *a.num_slots = slots;
}

// ------------------------------------------------------------------------------ class update

struct ClassArgs {
  const void* x;
  int64_t ld;
  int64_t dim;
  const int32_t* num_slots;
  const int32_t* slot_class;
  const int32_t* seg_begin;
  const int32_t* seg_end;
  const int32_t* perm;
  const double* sum1;
  const double* sum2;
  int64_t* counts;
  double* means;
  double* class_scatter;
  double* class_diag;  // or null
  SlabView slab;
  void* corr_x;
  void* corr_y;  // or null: corr_x serves both sides
  int64_t corr_ld;
  int64_t corr_split;  // 1 or 3 blocks of max_slots rows (slab_update_cuda.h)
  double corr_sign;
  int64_t max_slots;
  double* scatter;
  void* partial;
  int64_t slots;
  int64_t slot_stride;
  int32_t* exps;
  long long* words;
  int64_t add_rows;
  const unsigned long long* colmax;
  const int32_t* flags;
  long long* status;
  const void* labels;  // the call's labels (the commit reports the bad one)
  bool labels_64;
  bool commit_here;
  bool raise_nonfinite;
};

__device__ __forceinline__ long long read_label_any(const void* labels, bool is_64, long long i) {
  return is_64 ? static_cast<long long>(static_cast<const int64_t*>(labels)[i])
               : static_cast<long long>(static_cast<const int32_t*>(labels)[i]);
}

// W's upper triangle += 2^(e_i + e_j) * (sum of the partial's slots); every slot entry is zeroed.
template <typename P>
__device__ void fold_entries(double* w, int64_t dim, P* partial, int64_t slots, int64_t slot_stride,
                             int64_t padded_dim, const int32_t* e, int64_t first, int64_t step) {
  const int64_t n = padded_dim * padded_dim;
  for (int64_t idx = first; idx < n; idx += step) {
    const int64_t i = idx / padded_dim;
    const int64_t j = idx - i * padded_dim;
    double acc = 0.0;
    for (int64_t s = 0; s < slots; ++s) {
      P* entry = partial + s * slot_stride + idx;
      acc += static_cast<double>(*entry);
      *entry = P(0);
    }
    if (i <= j && j < dim) w[i * dim + j] += ldexp(acc, e[i] + e[j]);
  }
}

template <typename S>
__device__ void zero_rows(S* base, int64_t elems, int64_t first, int64_t step) {
  if (!base) return;
  for (int64_t i = first; i < elems; i += step) base[i] = slab_zero<S>();
}

// One block per slot (blocks past max_slots only fold); see the file comment.
template <typename In, typename S>
__global__ void __launch_bounds__(kClassThreads) slab_class_update_kernel(const ClassArgs a) {
  using P = typename std::conditional<std::is_same<S, double>::value, double, float>::type;
  using Reduce = cub::BlockReduce<double, kClassThreads>;
  __shared__ typename Reduce::TempStorage temp;

  // Every block reaches the same verdict: either the call is bad (seen in the per-call words, or
  // in the code block 0 may already have set for it), or no block sets the code.
  const long long code_entry = *reinterpret_cast<const volatile long long*>(a.status + kCode);
  const long long bad_label = a.status[kCallBadLabelRow];
  const long long bad_value = a.raise_nonfinite ? a.status[kCallNonFiniteRow] : kNoRow;
  const bool bad_call = a.commit_here && (bad_label != kNoRow || bad_value != kNoRow);
  const bool reject = code_entry != 0 || bad_call;
  const bool due = a.flags[kFlagDue] != 0;
  const bool rescale = !reject && a.flags[kFlagRange] != 0;
  const int64_t dp = a.slab.padded_dim;
  const int cur = static_cast<int>(a.words[kGramCur]);
  const int32_t* e_cur = a.exps + cur * dp;
  int lo = 0, hi = 0;
  exponent_window(a.slab.dtype, &lo, &hi);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  S* const sx = static_cast<S*>(a.slab.x);
  S* const sy = static_cast<S*>(a.slab.y);
  S* const cx = static_cast<S*>(a.corr_x);
  S* const cy = static_cast<S*>(a.corr_y);
  auto new_exponent = [&](int64_t j) {
    return rescale ? next_exponent(read_max_abs(a.colmax + j), e_cur[j], lo, hi) : e_cur[j];
  };

  if (reject) {
    // The GEMMs that follow must add nothing: the slab may hold this call's rows or stale ones.
    const int64_t slab_elems = a.slab.split_rows * a.slab.ld;
    zero_rows(sx, slab_elems, tid, nthreads);
    zero_rows(sy, slab_elems, tid, nthreads);
    zero_rows(cx, a.corr_split * a.max_slots * a.corr_ld, tid, nthreads);
    zero_rows(cy, a.corr_split * a.max_slots * a.corr_ld, tid, nthreads);
  } else if (blockIdx.x < a.max_slots) {
    const int64_t slot = blockIdx.x;
    const int64_t block_step = a.max_slots * a.corr_ld;  // from one block of correction rows to the next
    S* const crow_x = cx + slot * a.corr_ld;
    S* const crow_y = cy ? cy + slot * a.corr_ld : nullptr;
    if (slot >= *a.num_slots) {
      for (int64_t b = 0; b < a.corr_split; ++b) {
        for (int64_t j = threadIdx.x; j < dp; j += blockDim.x) {
          crow_x[b * block_step + j] = slab_zero<S>();
          if (crow_y) crow_y[b * block_step + j] = slab_zero<S>();
        }
      }
    } else {
      const In* x = static_cast<const In*>(a.x);
      const int32_t c = a.slot_class[slot];
      const int32_t begin = a.seg_begin[slot];
      const int32_t end = a.seg_end[slot];
      const double m = static_cast<double>(end - begin);
      const int64_t n = a.counts[c];
      const bool seen = n > 0;
      const double n_new = static_cast<double>(n) + m;
      const double coef = seen ? m * m / n_new : m;  // m - n m / n'
      const double root = sqrt(coef);
      const In* first = x + static_cast<int64_t>(a.perm[begin]) * a.ld;
      double* mu = a.means + static_cast<int64_t>(c) * a.dim;
      double* q = a.class_diag ? a.class_diag + static_cast<int64_t>(c) * a.dim : nullptr;
      const double* s1 = a.sum1 + slot * a.dim;
      const double* s2 = a.sum2 + slot * a.dim;

      if (rescale) {  // this slot's slab rows at the new exponents, before mu changes
        for (int32_t pos = begin; pos < end; ++pos) {
          const In* xr = x + static_cast<int64_t>(a.perm[pos]) * a.ld;
          for (int64_t j = threadIdx.x; j < dp; j += blockDim.x) {
            double v = 0.0;
            if (j < a.dim) {
              const double p = exact_shift(seen, mu[j], first[j]);
              v = ldexp(static_cast<double>(to_acc(xr[j])) - p, -new_exponent(j));
            }
            const int64_t off = slab_offset(pos, j, a.slab.split_rows, dp, a.slab.ld);
            sx[off] = to_slab_entry<S>(v, a.slab.tf32);
            if (sy) sy[off] = to_slab_entry<S>(v, a.slab.tf32);
          }
        }
        __syncthreads();
      }

      double trace = 0.0;
      for (int64_t j = threadIdx.x; j < dp; j += blockDim.x) {
        double corr = 0.0;
        if (j < a.dim) {
          const double mean = mu[j];
          const double p = exact_shift(seen, mean, first[j]);
          const double d = s1[j] / m;  // xbar - p
          const double dq = s2[j] - coef * d * d;
          if (q) q[j] += dq;
          trace += dq;
          mu[j] = seen ? mean + (m / n_new) * d : p + d;
          corr = ldexp(root * d, -new_exponent(j));
        }
        const S hi = to_slab_entry<S>(corr, a.slab.tf32);
        crow_x[j] = hi;
        if (a.corr_split == 1) {
          if (crow_y) crow_y[j] = to_slab_entry<S>(a.corr_sign * corr, a.slab.tf32);
        } else {
          const double hi_value = static_cast<double>(slab_value(hi));
          const S lo = to_slab_entry<S>(corr - hi_value, a.slab.tf32);
          crow_x[block_step + j] = lo;  // [hi; lo; hi]
          crow_x[2 * block_step + j] = hi;
          crow_y[j] = to_slab_entry<S>(a.corr_sign * hi_value, a.slab.tf32);  // sign [hi; hi; lo]
          crow_y[block_step + j] = crow_y[j];
          crow_y[2 * block_step + j] = to_slab_entry<S>(a.corr_sign * static_cast<double>(slab_value(lo)), a.slab.tf32);
        }
      }
      const double total = Reduce(temp).Sum(trace);  // its barrier also orders the counts read above
      if (threadIdx.x == 0) {
        a.class_scatter[c] += total;
        a.counts[c] = n + static_cast<int64_t>(m);
      }
    }
  }

  if (due || rescale) {
    fold_entries(a.scatter, a.dim, static_cast<P*>(a.partial), a.slots, a.slot_stride, dp, e_cur, tid, nthreads);
  }
  if (rescale) {
    int32_t* e_next = a.exps + (1 - cur) * dp;
    for (int64_t j = tid; j < dp; j += nthreads) e_next[j] = new_exponent(j);
    if (tid == 0) {
      a.words[kGramNext] = 1 - cur;
      a.words[kGramPartialRows] = a.add_rows;
    }
  }

  if (tid == 0 && a.commit_here && code_entry == 0) {  // commit_update_kernel
    const long long call = a.status[kCalls];
    a.status[kCalls] = call + 1;
    if (!bad_call) {
      a.status[kSkippedPending] += a.status[kCallSkipped];
    } else if (bad_label <= bad_value) {
      a.status[kErrRow] = bad_label;
      a.status[kErrLabel] = read_label_any(a.labels, a.labels_64, bad_label);
      a.status[kCode] = static_cast<long long>(UpdateStatus::kLabelOutOfRange);
      a.status[kErrCall] = call;
    } else {
      a.status[kErrRow] = bad_value;
      a.status[kErrLabel] = 0;
      a.status[kCode] = static_cast<long long>(UpdateStatus::kNonFinite);
      a.status[kErrCall] = call;
    }
  }
}

// ------------------------------------------------------------------------------ fold at a read

template <typename P>
__global__ void slab_fold_kernel(double* w, int64_t dim, P* partial, int64_t slots, int64_t slot_stride,
                                 int64_t padded_dim, const int32_t* exps, long long* words) {
  const int32_t* e = exps + static_cast<int64_t>(words[kGramNext]) * padded_dim;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  fold_entries(w, dim, partial, slots, slot_stride, padded_dim, e, tid, static_cast<int64_t>(gridDim.x) * blockDim.x);
  if (tid == 0) words[kGramPartialRows] = 0;
}

// W's lower triangle from its upper one, through 32 x 32 tiles in shared memory.
__global__ void slab_mirror_kernel(double* __restrict__ w, int64_t dim) {
  __shared__ double tile[32][33];
  const int64_t bx = blockIdx.x;
  const int64_t by = blockIdx.y;
  if (by < bx) return;
  for (int ty = threadIdx.y; ty < 32; ty += blockDim.y) {
    const int64_t i = bx * 32 + ty;
    const int64_t j = by * 32 + threadIdx.x;
    if (i < dim && j < dim && i <= j) tile[ty][threadIdx.x] = w[i * dim + j];
  }
  __syncthreads();
  for (int ty = threadIdx.y; ty < 32; ty += blockDim.y) {
    const int64_t i = by * 32 + ty;
    const int64_t j = bx * 32 + threadIdx.x;
    if (i < dim && j < dim && i > j) w[i * dim + j] = tile[threadIdx.x][ty];
  }
}

// ------------------------------------------------------------------------------ host driver

unsigned fold_grid(int64_t padded_dim, int sms) {
  const int64_t blocks = ceil_div(padded_dim * padded_dim, kClassThreads);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{sms} * 4)));
}

void check_call(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy, const SlabCall& c,
                const SlabScratch& plan) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("update_slab_chunk: " + what); };
  const int64_t slots = std::max<int64_t>(1, std::min(stats.num_classes, std::max<int64_t>(c.chunk_rows, 1)));
  if (c.rows <= 0 || c.row0 < 0 || c.row0 + c.rows > batch.rows) fail("chunk outside the batch");
  if (c.rows > c.chunk_rows) fail("chunk longer than chunk_rows");
  if (c.max_slots != slots) fail("max_slots must be min(num_classes, chunk_rows)");
  if (c.padded_dim < stats.dim || c.padded_dim % 8 != 0) fail("padded_dim must be a multiple of 8, >= dim");
  if (c.splits < 1 || c.ld != c.splits * c.padded_dim) fail("ld must be splits * padded_dim");
  if (c.split_rows < 1 || c.splits * c.split_rows < c.rows) fail("splits * split_rows must cover the chunk");
  if (c.corr_ld < c.padded_dim || c.corr_ld % 8 != 0) fail("corr_ld must be a multiple of 8, >= padded_dim");
  if (!c.slab_x || !c.corr_x || !c.partial || !c.exps || !c.words || !c.scratch) fail("null buffer");
  if (c.slab_y != 0 && c.corr_y == 0) fail("a dual slab needs corr_y");
  if (c.slots < 1 || c.slot_stride < c.padded_dim * c.padded_dim) fail("partial slots overlap");
  if (c.slab_elems < c.split_rows * c.ld) fail("slab smaller than split_rows * ld");
  if (c.corr_split != 1 && c.corr_split != 3) fail("corr_split must be 1 or 3");
  if (c.corr_sign != 1 && c.corr_sign != -1) fail("corr_sign must be 1 or -1");
  if (c.corr_split == 3 && !c.corr_y) fail("three correction blocks need corr_y");
  if (c.corr_elems < c.corr_split * c.max_slots * c.corr_ld) fail("correction rows smaller than the layout");
  if (c.partial_elems < (c.slots - 1) * c.slot_stride + c.padded_dim * c.padded_dim) fail("partial too small");
  if (c.exps_elems < 2 * c.padded_dim) fail("exponents smaller than 2 * padded_dim");
  if (c.scratch_size < plan.total) {
    fail("scratch holds " + std::to_string(c.scratch_size) + " bytes, the chunk needs " + std::to_string(plan.total));
  }
  if (c.scratch % kAlign != 0) fail("scratch must be 256-byte aligned");
  if (nan_policy == NanPolicy::kSkip && !c.prevalidated) fail("nan_policy='skip' needs the call prevalidated");
  if (c.small) {
    if (c.rows > kSlabSmallRows || c.row0 != 0 || c.rows != batch.rows || !c.first_chunk || c.prevalidated) {
      fail("a small step is one whole call of at most 4096 rows, not prevalidated");
    }
    if (c.splits != 1) fail("a small step has one split");
  }
  if (stats.num_classes >= (int64_t{1} << 31)) fail("too many classes");
}

template <typename In, typename S>
void run_chunk(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy, const SlabCall& c,
               const SlabScratch& plan, long long* status, cudaStream_t stream) {
  const int sms = sm_count();
  void* scratch = reinterpret_cast<void*>(c.scratch);
  const int64_t dim = stats.dim;
  const int64_t dp = c.padded_dim;
  const bool raise = nan_policy == NanPolicy::kRaise;
  const size_t label_bytes = batch.label_dtype == DType::kInt64 ? 8 : 4;
  const void* labels = static_cast<const unsigned char*>(batch.labels) + c.row0 * label_bytes;
  const In* x = static_cast<const In*>(batch.features) + c.row0 * batch.row_stride;
  auto* words = reinterpret_cast<long long*>(c.words);
  auto* flags = at<int32_t>(scratch, plan.flags);
  auto* colmax = at<unsigned long long>(scratch, plan.colmax);
  auto* sum1 = at<double>(scratch, plan.sum1);
  auto* sum2 = at<double>(scratch, plan.sum2);
  const uint32_t sentinel = static_cast<uint32_t>(c.max_slots);

  if (c.small) {
    PrepArgs p{labels, c.rows, stats.num_classes, slot_key_bits(static_cast<uint64_t>(stats.num_classes)),
               sentinel, at<int32_t>(scratch, plan.slot_class), at<int32_t>(scratch, plan.seg_begin),
               at<int32_t>(scratch, plan.seg_end), at<int32_t>(scratch, plan.num_slots),
               at<uint32_t>(scratch, plan.sorted_keys), at<int32_t>(scratch, plan.perm), sum1, sum2,
               c.max_slots * dim, colmax, dp, flags, words, c.fold_rows, c.add_rows, status};
    const int64_t zero_elems = std::max(c.max_slots * dim, dp);
    const unsigned zero_blocks =
        static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(zero_elems, kPrepThreads), sms)));
    const bool ok = dispatch_label(batch.label_dtype, [&](auto tag) {
      using Label = decltype(tag);
      slab_prep_small_kernel<Label><<<1 + zero_blocks, kPrepThreads, 0, stream>>>(p);
    });
    if (!ok) throw std::invalid_argument("update_slab_chunk: unsupported label dtype");
    check_launch("slab_prep_small_kernel");
  } else {
    uint8_t* keep = nan_policy == NanPolicy::kSkip ? at<uint8_t>(scratch, plan.keep) : nullptr;
    if (c.first_chunk) {
      enqueue_begin_call(status, stream);
      if (c.prevalidated) enqueue_call_checks(batch, dim, stats.num_classes, nan_policy, keep, status, sms, stream);
    }
    slab_chunk_begin_kernel<<<1, 32, 0, stream>>>(words, flags, c.fold_rows, c.add_rows);
    check_launch("slab_chunk_begin_kernel");
    const int64_t sum_bytes = c.max_slots * dim * static_cast<int64_t>(sizeof(double));
    check(cudaMemsetAsync(sum1, 0, sum_bytes, stream), "cudaMemsetAsync(sum1)");
    check(cudaMemsetAsync(sum2, 0, sum_bytes, stream), "cudaMemsetAsync(sum2)");
    check(cudaMemsetAsync(colmax, 0, dp * sizeof(unsigned long long), stream), "cudaMemsetAsync(colmax)");
    ClassSortBuffers b;
    b.present = at<int32_t>(scratch, plan.present);
    b.slot_of_class = at<int32_t>(scratch, plan.slot_of_class);
    b.slot_class = at<int32_t>(scratch, plan.slot_class);
    b.seg_begin = at<int32_t>(scratch, plan.seg_begin);
    b.seg_end = at<int32_t>(scratch, plan.seg_end);
    b.num_slots = at<int32_t>(scratch, plan.num_slots);
    b.keys = at<uint32_t>(scratch, plan.keys);
    b.vals = at<int32_t>(scratch, plan.vals);
    b.sorted_keys = at<uint32_t>(scratch, plan.sorted_keys);
    b.perm = at<int32_t>(scratch, plan.perm);
    b.sort_temp = at<void>(scratch, plan.sort_temp);
    b.sort_bytes = plan.sort_bytes;
    b.key_bits = plan.key_bits;
    b.sentinel = sentinel;
    enqueue_class_sort(labels, batch.label_dtype, c.rows, c.row0, stats.num_classes, keep ? keep + c.row0 : nullptr,
                       !c.prevalidated, b, status, sms, stream);
  }

  SlabView slab;
  slab.dtype = static_cast<DType>(c.slab_dtype);
  slab.tf32 = c.tf32 && slab.dtype == DType::kFloat32;
  slab.x = reinterpret_cast<void*>(c.slab_x);
  slab.y = reinterpret_cast<void*>(c.slab_y);
  slab.padded_dim = dp;
  slab.ld = c.ld;
  slab.split_rows = c.split_rows;
  slab.positions = c.splits * c.split_rows;

  SlabMomentsArgs m;
  m.x = x;
  m.dtype = batch.feature_dtype;
  m.ld = batch.row_stride;
  m.dim = dim;
  m.rows = c.rows;
  m.row_offset = c.row0;
  m.sorted_key = at<uint32_t>(scratch, plan.sorted_keys);
  m.perm = at<int32_t>(scratch, plan.perm);
  m.sentinel = sentinel;
  m.seg_begin = at<int32_t>(scratch, plan.seg_begin);
  m.slot_class = at<int32_t>(scratch, plan.slot_class);
  m.counts = stats.counts;
  m.means = stats.means;
  m.sum1 = sum1;
  m.sum2 = sum2;
  m.check_finite = raise && !c.prevalidated;
  m.status = status;
  m.slab = slab;
  m.exps = reinterpret_cast<const int32_t*>(c.exps);
  m.words = words;
  m.colmax = colmax;
  m.flags = flags;
  slab_moments(m, sms, stream);

  ClassArgs k{x,
              batch.row_stride,
              dim,
              at<int32_t>(scratch, plan.num_slots),
              at<int32_t>(scratch, plan.slot_class),
              at<int32_t>(scratch, plan.seg_begin),
              at<int32_t>(scratch, plan.seg_end),
              at<int32_t>(scratch, plan.perm),
              sum1,
              sum2,
              stats.counts,
              stats.means,
              stats.class_scatter,
              stats.class_diag,
              slab,
              reinterpret_cast<void*>(c.corr_x),
              reinterpret_cast<void*>(c.corr_y),
              c.corr_ld,
              c.corr_split,
              static_cast<double>(c.corr_sign),
              c.max_slots,
              stats.scatter,
              reinterpret_cast<void*>(c.partial),
              c.slots,
              c.slot_stride,
              reinterpret_cast<int32_t*>(c.exps),
              words,
              c.add_rows,
              colmax,
              flags,
              status,
              batch.labels,
              batch.label_dtype == DType::kInt64,
              !c.prevalidated,
              raise};
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(c.max_slots, fold_grid(dp, sms)));
  slab_class_update_kernel<In, S><<<blocks, kClassThreads, 0, stream>>>(k);
  check_launch("slab_class_update_kernel");
}

template <typename In>
void run_chunk_in(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy, const SlabCall& c,
                  const SlabScratch& plan, long long* status, cudaStream_t stream) {
  switch (static_cast<DType>(c.slab_dtype)) {
    case DType::kFloat64: return run_chunk<In, double>(stats, batch, nan_policy, c, plan, status, stream);
    case DType::kFloat32:
      if constexpr (!std::is_same<In, double>::value) {
        return run_chunk<In, float>(stats, batch, nan_policy, c, plan, status, stream);
      }
      break;
    case DType::kFloat16:
      if constexpr (std::is_same<In, __half>::value) {
        return run_chunk<In, __half>(stats, batch, nan_policy, c, plan, status, stream);
      }
      break;
    case DType::kBFloat16:
      if constexpr (std::is_same<In, __nv_bfloat16>::value) {
        return run_chunk<In, __nv_bfloat16>(stats, batch, nan_policy, c, plan, status, stream);
      }
      break;
    default:
      break;
  }
  throw std::invalid_argument("update_slab_chunk: unsupported pair of feature and slab dtypes");
}

}  // namespace

void slab_exponent_window(DType slab_dtype, int* lo, int* hi) { exponent_window(slab_dtype, lo, hi); }

int64_t slab_scratch_bytes(const UpdateShape& shape, int64_t chunk_rows, bool small, int64_t padded_dim) {
  return make_scratch(shape, chunk_rows, small, padded_dim).total;
}

void update_slab_chunk(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy, const SlabCall& c,
                       long long* status, void* stream_handle) {
  UpdateShape shape;
  shape.rows = batch.rows;
  shape.dim = stats.dim;
  shape.num_classes = stats.num_classes;
  shape.feature_dtype = batch.feature_dtype;
  shape.nan_policy = nan_policy;
  const SlabScratch plan = make_scratch(shape, c.chunk_rows, c.small, c.padded_dim);
  check_call(stats, batch, nan_policy, c, plan);
  auto stream = static_cast<cudaStream_t>(stream_handle);
  bool ok = dispatch_device_float(batch.feature_dtype, [&](auto tag) {
    using In = decltype(tag);
    run_chunk_in<In>(stats, batch, nan_policy, c, plan, status, stream);
  });
  if (!ok) throw std::invalid_argument("update_slab_chunk: unsupported feature dtype");
}

void fold_slab_partial(double* scatter, int64_t dim, const SlabCall& c, void* stream_handle) {
  if (dim <= 0) return;
  if (!c.partial || !c.exps || !c.words || c.padded_dim < dim || c.slots < 1 ||
      c.slot_stride < c.padded_dim * c.padded_dim ||
      c.partial_elems < (c.slots - 1) * c.slot_stride + c.padded_dim * c.padded_dim ||
      c.exps_elems < 2 * c.padded_dim) {
    throw std::invalid_argument("fold_slab_partial: bad partial description");
  }
  auto stream = static_cast<cudaStream_t>(stream_handle);
  const unsigned grid = fold_grid(c.padded_dim, sm_count());
  auto* exps = reinterpret_cast<const int32_t*>(c.exps);
  auto* words = reinterpret_cast<long long*>(c.words);
  if (static_cast<DType>(c.slab_dtype) == DType::kFloat64) {
    slab_fold_kernel<double><<<grid, kClassThreads, 0, stream>>>(
        scatter, dim, reinterpret_cast<double*>(c.partial), c.slots, c.slot_stride, c.padded_dim, exps, words);
  } else {
    slab_fold_kernel<float><<<grid, kClassThreads, 0, stream>>>(
        scatter, dim, reinterpret_cast<float*>(c.partial), c.slots, c.slot_stride, c.padded_dim, exps, words);
  }
  check_launch("slab_fold_kernel");
  const unsigned tiles = static_cast<unsigned>(ceil_div(dim, 32));
  slab_mirror_kernel<<<dim3(tiles, tiles), dim3(32, 8), 0, stream>>>(scatter, dim);
  check_launch("slab_mirror_kernel");
}

}  // namespace ncfast::cuda
