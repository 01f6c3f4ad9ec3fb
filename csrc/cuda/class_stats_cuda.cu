// Chunk update of DESIGN.md section 3 on a CUDA device, enqueued on the caller's stream.
//
// Per call:
//   begin          reset the per-call status words (unless an earlier batch was rejected)
//   [check_rows]   one read of the whole batch: label range and finiteness, keep flags under
//                  nan_policy="skip"; then commit. Skipped when the batch is one chunk and
//                  nan_policy="raise": the chunk's own passes find bad labels and values then.
// Per chunk (default up to 4M rows):
//   1. mark_present / assign_slots: dense slots (one per class present, in class order);
//   2. make_keys + radix sort (CUB): the chunk's rows in slot order, with segment bounds;
//   3. class_moments: per-slot float64 sums of (x - p) and (x - p)^2 about a provisional shift p
//      (class_sums_cuda.cu), and the finiteness check when it was not done up front;
//   [commit]       decide the batch's fate: every later kernel returns at once if it was rejected;
//   4. update_classes: per class the chunk mean, the final shift s (the running mean rounded to
//      the accumulation type, or the rounded chunk mean for a new class), n, mu, tr, q, and the
//      correction rows a_c = sqrt(m_c) (xbar_c - s_c) and b_c = sqrt(n_c m_c / n'_c) (xbar_c - mu_c);
//   5. Gram: W += Z^T Z - A^T A + B^T B with Z = X - S[y] built while loading tiles
//      (sym_gram_cuda.cu), upper triangle, float32 partials folded into the float64 W.
// Finally the lower triangle of W is mirrored from the upper one.
//
// With any shift s_c, sum_{i in c} (x_i - xbar)(x_i - xbar)^T = G_s - m d d^T with d = xbar - s,
// and the merge with the old statistics adds (n m / n') e e^T with e = xbar - mu (Chan et al.):
// W' = W + G_s - sum_c m_c d_c d_c^T + sum_c (n_c m_c / n'_c) e_c e_c^T. With s = mu exactly this
// is the CPU path's W + G - sum_c (m_c^2 / n'_c) d_c d_c^T; a shift rounded to float32 only moves
// terms between G_s and the two corrections, and each term is of its own natural size, so the
// float32 corrections lose nothing to cancellation. The same identity on the diagonal gives
// tr_c and q_c.
#include "class_stats_cuda.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include <atomic>

#include "class_sums_cuda.cuh"
#include "common.cuh"
#include "provisional_shift.cuh"
#include "sym_gram_cuda.cuh"
#include "update_steps.cuh"

namespace ncfast::cuda {
namespace {

constexpr int64_t kMaxChunkRows = int64_t{1} << 22;
constexpr int64_t kMinChunkRows = 1024;
constexpr int64_t kSlotScratchBudget = int64_t{1} << 30;
constexpr int64_t kAlign = 256;

int bit_width(uint64_t v) {
  int bits = 0;
  while (v) {
    ++bits;
    v >>= 1;
  }
  return bits;
}

// ------------------------------------------------------------------------------ the plan

// Everything the host needs to size the scratch and launch the kernels, from the shape alone.
struct Plan {
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t num_classes = 0;
  int64_t chunk_rows = 0;
  int64_t num_chunks = 0;
  int64_t max_slots = 0;  // min(K, chunk_rows)
  int64_t ld_shift = 0;
  int64_t acc_bytes = 4;
  bool prevalidate = false;
  uint32_t sentinel = 0;
  int key_bits = 1;
  size_t sort_bytes = 0;
  GramPath main_path = GramPath::kSimtF32;
  GramPath corr_path = GramPath::kSimtF32;

  // Byte offsets into the scratch buffer.
  int64_t keep = 0, present = 0, slot_of_class = 0, slot_class = 0, seg_begin = 0, seg_end = 0,
          num_slots = 0, keys = 0, vals = 0, sorted_keys = 0, perm = 0, sort_temp = 0, sum1 = 0,
          sum2 = 0, shift = 0, corr_a = 0, corr_b = 0, total = 0;
};

Plan make_plan(const UpdateShape& s) {
  Plan p;
  p.rows = s.rows;
  p.dim = s.dim;
  p.num_classes = s.num_classes;
  const bool f64 = s.feature_dtype == DType::kFloat64;
  p.acc_bytes = f64 ? 8 : 4;
  p.chunk_rows = s.chunk_rows > 0 ? std::min(s.chunk_rows, kMaxChunkRows * 256) : default_chunk_rows(s);
  p.chunk_rows = std::max<int64_t>(1, std::min(p.chunk_rows, std::max<int64_t>(s.rows, 1)));
  p.num_chunks = ceil_div(std::max<int64_t>(s.rows, 1), p.chunk_rows);
  p.max_slots = std::max<int64_t>(1, std::min(s.num_classes, p.chunk_rows));
  p.ld_shift = round_up(std::max<int64_t>(s.dim, 1), 8);
  p.prevalidate = s.nan_policy == NanPolicy::kSkip || p.num_chunks > 1;
  p.sentinel = static_cast<uint32_t>(p.max_slots);
  p.key_bits = bit_width(p.sentinel);

  if (f64) {
    p.main_path = p.corr_path = GramPath::kSimtF64;
  } else if (s.precision == Precision::kExact) {
    p.main_path = p.corr_path = GramPath::kSimtF32;
  } else {
    p.corr_path = GramPath::kMmaTF32;
    p.main_path = s.feature_dtype == DType::kFloat16    ? GramPath::kMmaF16
                  : s.feature_dtype == DType::kBFloat16 ? GramPath::kMmaBF16
                                                        : GramPath::kMmaTF32;
  }

  check(cub::DeviceRadixSort::SortPairs(nullptr, p.sort_bytes, static_cast<const uint32_t*>(nullptr),
                                        static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                        static_cast<int32_t*>(nullptr), static_cast<int>(p.chunk_rows), 0,
                                        p.key_bits),
        "cub::DeviceRadixSort::SortPairs (size query)");

  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    const int64_t offset = at;
    at += round_up(std::max<int64_t>(bytes, 1), kAlign);
    return offset;
  };
  const int64_t r = p.chunk_rows;
  const int64_t k = s.num_classes;
  const int64_t slots = p.max_slots;
  p.keep = take(p.prevalidate && s.nan_policy == NanPolicy::kSkip ? s.rows : 0);
  p.present = take(k * 4);
  p.slot_of_class = take(k * 4);
  p.slot_class = take(slots * 4);
  p.seg_begin = take(slots * 4);
  p.seg_end = take(slots * 4);
  p.num_slots = take(4);
  p.keys = take(r * 4);
  p.vals = take(r * 4);
  p.sorted_keys = take(r * 4);
  p.perm = take(r * 4);
  p.sort_temp = take(static_cast<int64_t>(p.sort_bytes));
  p.sum1 = take(slots * s.dim * 8);
  p.sum2 = take(slots * s.dim * 8);
  p.shift = take(slots * p.ld_shift * p.acc_bytes);
  p.corr_a = take(slots * p.ld_shift * p.acc_bytes);
  p.corr_b = take(slots * p.ld_shift * p.acc_bytes);
  p.total = at;
  return p;
}

// ------------------------------------------------------------------------------ status kernels

// Resets the per-call words, unless an earlier batch was rejected (then nothing below runs).
__global__ void begin_update_kernel(long long* status) {
  if (threadIdx.x != 0 || blockIdx.x != 0 || status[kCode] != 0) return;
  status[kCallBadLabelRow] = kNoRow;
  status[kCallNonFiniteRow] = kNoRow;
  status[kCallSkipped] = 0;
}

// Decides the fate of the batch once every row has been checked. The first bad row wins; a row
// with both a bad label and a bad value reports the label.
template <typename Label>
__global__ void commit_update_kernel(long long* status, const Label* labels, bool raise_nonfinite) {
  if (threadIdx.x != 0 || blockIdx.x != 0 || status[kCode] != 0) return;
  const long long call = status[kCalls];
  status[kCalls] = call + 1;
  const long long bad_label = status[kCallBadLabelRow];
  const long long bad_value = raise_nonfinite ? status[kCallNonFiniteRow] : kNoRow;
  if (bad_label == kNoRow && bad_value == kNoRow) {
    status[kSkippedPending] += status[kCallSkipped];
    return;
  }
  if (bad_label <= bad_value) {
    status[kErrRow] = bad_label;
    status[kErrLabel] = read_label(labels, bad_label);
    status[kCode] = static_cast<long long>(UpdateStatus::kLabelOutOfRange);
  } else {
    status[kErrRow] = bad_value;
    status[kErrLabel] = 0;
    status[kCode] = static_cast<long long>(UpdateStatus::kNonFinite);
  }
  status[kErrCall] = call;
}

// One warp per row: label range, finiteness (an error, or a keep flag under "skip").
template <typename In, typename Label, int V, bool kAligned>
__global__ void __launch_bounds__(256)
    check_rows_kernel(const In* __restrict__ x, int64_t ld, int64_t rows, int64_t dim,
                      const Label* __restrict__ labels, int64_t num_classes, uint8_t* __restrict__ keep,
                      bool raise_nonfinite, long long* status) {
  if (rejected(status)) return;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows;
       row += warps) {
    bool finite = true;
    for (int64_t c = static_cast<int64_t>(lane) * V; c < dim; c += 32 * V) {
      In v[V];
      load_vec<In, V, kAligned>(x + row * ld + c, static_cast<int>(dim - c < V ? dim - c : V), v);
#pragma unroll
      for (int e = 0; e < V; ++e) finite &= is_finite(to_acc(v[e]));
    }
    finite = __all_sync(0xffffffffu, finite);
    if (lane == 0) {
      const long long y = read_label(labels, row);
      if (y < 0 || y >= num_classes) atomicMin(status + kCallBadLabelRow, static_cast<long long>(row));
      if (!finite) {
        if (raise_nonfinite) {
          atomicMin(status + kCallNonFiniteRow, static_cast<long long>(row));
        } else {
          atomicAdd(reinterpret_cast<unsigned long long*>(status + kCallSkipped), 1ull);
        }
      }
      if (keep) keep[row] = finite ? 1 : 0;
    }
  }
}

// ------------------------------------------------------------------------------ slots and order

template <typename Label>
__global__ void mark_present_kernel(const Label* __restrict__ labels, int64_t rows, int64_t row_offset,
                                    int64_t num_classes, const uint8_t* __restrict__ keep,
                                    int32_t* __restrict__ present, bool check_labels, long long* status) {
  if (rejected(status)) return;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const long long y = read_label(labels, i);
    if (y < 0 || y >= num_classes) {
      if (check_labels) atomicMin(status + kCallBadLabelRow, static_cast<long long>(row_offset + i));
      continue;
    }
    if (keep && !keep[i]) continue;
    present[y] = 1;
  }
}

// One block: slot = rank of the class among the classes present (class order, deterministic).
constexpr int kScanThreads = 1024;
constexpr int kScanItems = 4;

__global__ void __launch_bounds__(kScanThreads)
    assign_slots_kernel(const int32_t* __restrict__ present, int64_t num_classes,
                        int32_t* __restrict__ slot_of_class, int32_t* __restrict__ slot_class,
                        int32_t* __restrict__ num_slots, const long long* status) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage temp;
  if (rejected(status)) return;
  int running = 0;
  for (int64_t base = 0; base < num_classes; base += kScanThreads * kScanItems) {
    int flags[kScanItems];
    int offsets[kScanItems];
#pragma unroll
    for (int it = 0; it < kScanItems; ++it) {
      const int64_t c = base + threadIdx.x * kScanItems + it;
      flags[it] = c < num_classes && present[c] != 0 ? 1 : 0;
    }
    int tile_total = 0;
    Scan(temp).ExclusiveSum(flags, offsets, tile_total);
#pragma unroll
    for (int it = 0; it < kScanItems; ++it) {
      const int64_t c = base + threadIdx.x * kScanItems + it;
      if (c >= num_classes) continue;
      if (flags[it]) {
        const int slot = running + offsets[it];
        slot_of_class[c] = slot;
        slot_class[slot] = static_cast<int32_t>(c);
      } else {
        slot_of_class[c] = -1;
      }
    }
    running += tile_total;
    __syncthreads();  // the scan's temporary storage is reused by the next tile
  }
  if (threadIdx.x == 0) *num_slots = running;
}

template <typename Label>
__global__ void make_keys_kernel(const Label* __restrict__ labels, int64_t rows, int64_t num_classes,
                                 const uint8_t* __restrict__ keep, const int32_t* __restrict__ slot_of_class,
                                 uint32_t sentinel, uint32_t* __restrict__ keys, int32_t* __restrict__ vals,
                                 const long long* status) {
  if (rejected(status)) return;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const long long y = read_label(labels, i);
    const bool live = y >= 0 && y < num_classes && (!keep || keep[i]);
    keys[i] = live ? static_cast<uint32_t>(slot_of_class[y]) : sentinel;
    vals[i] = static_cast<int32_t>(i);
  }
}

// Sorted keys -> [seg_begin, seg_end) of every slot present (each present slot has >= 1 row).
__global__ void segment_bounds_kernel(const uint32_t* __restrict__ sorted_keys, int64_t rows, uint32_t sentinel,
                                      int32_t* __restrict__ seg_begin, int32_t* __restrict__ seg_end,
                                      const long long* status) {
  if (rejected(status)) return;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < rows;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t k = sorted_keys[p];
    if (k == sentinel) continue;
    if (p == 0 || sorted_keys[p - 1] != k) seg_begin[k] = static_cast<int32_t>(p);
    if (p == rows - 1 || sorted_keys[p + 1] != k) seg_end[k] = static_cast<int32_t>(p + 1);
  }
}

// ------------------------------------------------------------------------------ class update

struct ClassUpdateArgs {
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
  void* shift;
  void* corr_a;
  void* corr_b;
  int64_t ld_shift;
  const long long* status;
};

// One block per slot (blocks past the device's slot count return): the chunk mean, the final
// shift, the correction rows, and n_c, mu_c, tr_c, q_c, all in float64 (DESIGN.md section 3).
template <typename In>
__global__ void __launch_bounds__(256) update_classes_kernel(const ClassUpdateArgs a) {
  using Acc = typename Widen<In>::Acc;
  using Reduce = cub::BlockReduce<double, 256>;
  __shared__ typename Reduce::TempStorage temp;
  if (rejected(a.status)) return;
  const int64_t slot = blockIdx.x;
  if (slot >= *a.num_slots) return;

  const int32_t c = a.slot_class[slot];
  const int32_t begin = a.seg_begin[slot];
  const double m = static_cast<double>(a.seg_end[slot] - begin);
  const int64_t n = a.counts[c];
  const bool seen = n > 0;
  const double n_new = static_cast<double>(n) + m;
  const double w_between = static_cast<double>(n) * m / n_new;  // n m / n'
  const double root_m = sqrt(m);
  const double root_w = sqrt(w_between);
  const In* first = static_cast<const In*>(a.x) + static_cast<int64_t>(a.perm[begin]) * a.ld;
  double* mu = a.means + static_cast<int64_t>(c) * a.dim;
  double* q = a.class_diag ? a.class_diag + static_cast<int64_t>(c) * a.dim : nullptr;
  const double* s1 = a.sum1 + slot * a.dim;
  const double* s2 = a.sum2 + slot * a.dim;
  Acc* shift = static_cast<Acc*>(a.shift) + slot * a.ld_shift;
  Acc* corr_a = static_cast<Acc*>(a.corr_a) + slot * a.ld_shift;
  Acc* corr_b = static_cast<Acc*>(a.corr_b) + slot * a.ld_shift;

  double trace = 0.0;
  for (int64_t j = threadIdx.x; j < a.dim; j += blockDim.x) {
    const double mean = mu[j];
    const Acc p = provisional_shift<Acc>(seen, mean, first[j]);
    const double xbar = static_cast<double>(p) + s1[j] / m;
    const Acc s = seen ? p : round_acc(xbar, Acc{});
    const double ds = static_cast<double>(s) - static_cast<double>(p);
    const double z2 = s2[j] - 2.0 * ds * s1[j] + m * ds * ds;  // sum_{i in c} (x_ij - s_j)^2
    const double d = xbar - static_cast<double>(s);
    const double e = seen ? xbar - mean : 0.0;
    const double dq = z2 - m * d * d + w_between * e * e;
    if (q) q[j] += dq;
    trace += dq;
    mu[j] = seen ? mean + (m / n_new) * e : xbar;
    shift[j] = s;
    corr_a[j] = round_acc(root_m * d, Acc{});
    corr_b[j] = round_acc(root_w * e, Acc{});
  }
  const double total = Reduce(temp).Sum(trace);  // its barrier also orders the counts read above
  if (threadIdx.x == 0) {
    a.class_scatter[c] += total;
    a.counts[c] = n + static_cast<int64_t>(m);
  }
}

// W's lower triangle from its upper one, through 32 x 32 tiles in shared memory.
__global__ void symmetrize_kernel(double* __restrict__ w, int64_t dim, const long long* status) {
  __shared__ double tile[32][33];
  if (rejected(status)) return;
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

unsigned grid_for(int64_t items, int threads, int sms) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(items, threads), int64_t{sms} * 8));
  return static_cast<unsigned>(blocks);
}

template <typename T>
T* at(void* base, int64_t offset) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + offset);
}

template <typename In, typename Label>
void run_update(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy, const Plan& plan,
                void* scratch, long long* status, cudaStream_t stream) {
  const int sms = sm_count();
  const In* x = static_cast<const In*>(batch.features);
  const Label* labels = static_cast<const Label*>(batch.labels);
  const int64_t k = stats.num_classes;
  const int64_t dim = stats.dim;
  const bool raise = nan_policy == NanPolicy::kRaise;
  uint8_t* keep = raise ? nullptr : at<uint8_t>(scratch, plan.keep);
  int32_t* present = at<int32_t>(scratch, plan.present);
  int32_t* slot_of_class = at<int32_t>(scratch, plan.slot_of_class);
  int32_t* slot_class = at<int32_t>(scratch, plan.slot_class);
  int32_t* seg_begin = at<int32_t>(scratch, plan.seg_begin);
  int32_t* seg_end = at<int32_t>(scratch, plan.seg_end);
  int32_t* num_slots = at<int32_t>(scratch, plan.num_slots);
  uint32_t* keys = at<uint32_t>(scratch, plan.keys);
  int32_t* vals = at<int32_t>(scratch, plan.vals);
  uint32_t* sorted_keys = at<uint32_t>(scratch, plan.sorted_keys);
  int32_t* perm = at<int32_t>(scratch, plan.perm);
  double* sum1 = at<double>(scratch, plan.sum1);
  double* sum2 = at<double>(scratch, plan.sum2);

  begin_update_kernel<<<1, 32, 0, stream>>>(status);
  check_launch("begin_update_kernel");

  if (plan.prevalidate) {
    constexpr int V = static_cast<int>(16 / sizeof(In));
    const bool aligned = dim % V == 0 && batch.row_stride % V == 0 &&
                         reinterpret_cast<uintptr_t>(x) % (sizeof(In) * V) == 0;
    const unsigned grid = grid_for(batch.rows * 32, 256, sms);
    if (aligned) {
      check_rows_kernel<In, Label, V, true><<<grid, 256, 0, stream>>>(x, batch.row_stride, batch.rows, dim, labels,
                                                                        k, keep, raise, status);
    } else {
      check_rows_kernel<In, Label, 1, false><<<grid, 256, 0, stream>>>(x, batch.row_stride, batch.rows, dim,
                                                                         labels, k, keep, raise, status);
    }
    check_launch("check_rows_kernel");
    commit_update_kernel<Label><<<1, 32, 0, stream>>>(status, labels, raise);
    check_launch("commit_update_kernel");
  }

  for (int64_t r0 = 0; r0 < batch.rows; r0 += plan.chunk_rows) {
    const int64_t rows = std::min(plan.chunk_rows, batch.rows - r0);
    const In* xc = x + r0 * batch.row_stride;
    const Label* yc = labels + r0;
    const uint8_t* kc = keep ? keep + r0 : nullptr;
    const unsigned grid = grid_for(rows, 256, sms);

    // 1. Slots of the classes present.
    check(cudaMemsetAsync(present, 0, k * sizeof(int32_t), stream), "cudaMemsetAsync(present)");
    mark_present_kernel<Label><<<grid, 256, 0, stream>>>(yc, rows, r0, k, kc, present, !plan.prevalidate, status);
    check_launch("mark_present_kernel");
    assign_slots_kernel<<<1, kScanThreads, 0, stream>>>(present, k, slot_of_class, slot_class, num_slots, status);
    check_launch("assign_slots_kernel");

    // 2. Rows in slot order.
    make_keys_kernel<Label><<<grid, 256, 0, stream>>>(yc, rows, k, kc, slot_of_class, plan.sentinel, keys, vals,
                                                      status);
    check_launch("make_keys_kernel");
    size_t sort_bytes = plan.sort_bytes;
    check(cub::DeviceRadixSort::SortPairs(at<void>(scratch, plan.sort_temp), sort_bytes,
                                          static_cast<const uint32_t*>(keys), sorted_keys,
                                          static_cast<const int32_t*>(vals), perm, static_cast<int>(rows), 0,
                                          plan.key_bits, stream),
          "cub::DeviceRadixSort::SortPairs");
    segment_bounds_kernel<<<grid, 256, 0, stream>>>(sorted_keys, rows, plan.sentinel, seg_begin, seg_end, status);
    check_launch("segment_bounds_kernel");

    // 3. Per-slot moments about the provisional shift.
    const int64_t sum_bytes = plan.max_slots * dim * static_cast<int64_t>(sizeof(double));
    check(cudaMemsetAsync(sum1, 0, sum_bytes, stream), "cudaMemsetAsync(sum1)");
    check(cudaMemsetAsync(sum2, 0, sum_bytes, stream), "cudaMemsetAsync(sum2)");
    MomentsArgs moments;
    moments.x = xc;
    moments.dtype = batch.feature_dtype;
    moments.ld = batch.row_stride;
    moments.dim = dim;
    moments.rows = rows;
    moments.row_offset = r0;
    moments.sorted_key = sorted_keys;
    moments.perm = perm;
    moments.sentinel = plan.sentinel;
    moments.seg_begin = seg_begin;
    moments.slot_class = slot_class;
    moments.counts = stats.counts;
    moments.means = stats.means;
    moments.sum1 = sum1;
    moments.sum2 = sum2;
    moments.check_finite = raise && !plan.prevalidate;
    moments.status = status;
    class_moments(moments, sms, stream);

    if (!plan.prevalidate) {
      commit_update_kernel<Label><<<1, 32, 0, stream>>>(status, labels, raise);
      check_launch("commit_update_kernel");
    }

    // 4. Per-class update, shifts and correction rows.
    ClassUpdateArgs cu{xc,
                       batch.row_stride,
                       dim,
                       num_slots,
                       slot_class,
                       seg_begin,
                       seg_end,
                       perm,
                       sum1,
                       sum2,
                       stats.counts,
                       stats.means,
                       stats.class_scatter,
                       stats.class_diag,
                       at<void>(scratch, plan.shift),
                       at<void>(scratch, plan.corr_a),
                       at<void>(scratch, plan.corr_b),
                       plan.ld_shift,
                       status};
    update_classes_kernel<In><<<static_cast<unsigned>(plan.max_slots), 256, 0, stream>>>(cu);
    check_launch("update_classes_kernel");

    // 5. W += Z^T Z - A^T A + B^T B (upper triangle).
    ShiftedRows z;
    z.x = xc;
    z.dtype = batch.feature_dtype;
    z.ld = batch.row_stride;
    z.rows = rows;
    z.key = keys;
    z.sentinel = plan.sentinel;
    z.shift = at<void>(scratch, plan.shift);
    z.ld_shift = plan.ld_shift;
    sym_gram_shifted(plan.main_path, z, dim, 1.0, stats.scatter, status, sms, stream);
    DenseRows corr;
    corr.is_double = plan.acc_bytes == 8;
    corr.ld = plan.ld_shift;
    corr.max_rows = plan.max_slots;
    corr.num_rows = num_slots;
    corr.a = at<void>(scratch, plan.corr_a);
    sym_gram_dense(plan.corr_path, corr, dim, -1.0, stats.scatter, status, sms, stream);
    corr.a = at<void>(scratch, plan.corr_b);
    sym_gram_dense(plan.corr_path, corr, dim, 1.0, stats.scatter, status, sms, stream);
  }

  const unsigned tiles = static_cast<unsigned>(ceil_div(dim, 32));
  symmetrize_kernel<<<dim3(tiles, tiles), dim3(32, 8), 0, stream>>>(stats.scatter, dim, status);
  check_launch("symmetrize_kernel");
}

std::atomic<int> g_sm_count[64];

}  // namespace

int sm_count() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device >= 0 && device < 64) {
    const int cached = g_sm_count[device].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int count = 0;
  check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute(MultiProcessorCount)");
  if (device >= 0 && device < 64) g_sm_count[device].store(count, std::memory_order_relaxed);
  return count;
}

int64_t default_chunk_rows(const UpdateShape& s) {
  const int64_t acc_bytes = s.feature_dtype == DType::kFloat64 ? 8 : 4;
  const int64_t per_slot = s.dim * 16 + 3 * round_up(std::max<int64_t>(s.dim, 1), 8) * acc_bytes;
  int64_t r = std::max<int64_t>(1, std::min(s.rows, kMaxChunkRows));
  while (r > kMinChunkRows && std::min(s.num_classes, r) * per_slot > kSlotScratchBudget) r /= 2;
  return r;
}

int64_t scratch_bytes(const UpdateShape& shape) { return make_plan(shape).total; }

void update_class_stats(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                        Precision precision, int64_t chunk_rows, void* scratch, int64_t scratch_size,
                        long long* status, void* stream_handle) {
  if (batch.rows <= 0) return;
  UpdateShape shape;
  shape.rows = batch.rows;
  shape.dim = stats.dim;
  shape.num_classes = stats.num_classes;
  shape.feature_dtype = batch.feature_dtype;
  shape.nan_policy = nan_policy;
  shape.precision = precision;
  shape.chunk_rows = chunk_rows;
  const Plan plan = make_plan(shape);
  if (scratch_size < plan.total) {
    throw std::invalid_argument("update_class_stats: scratch holds " + std::to_string(scratch_size) +
                                " bytes, the update needs " + std::to_string(plan.total));
  }
  if (reinterpret_cast<uintptr_t>(scratch) % kAlign != 0) {
    throw std::invalid_argument("update_class_stats: scratch must be 256-byte aligned");
  }
  auto stream = static_cast<cudaStream_t>(stream_handle);
  bool ok = false;
  dispatch_device_float(batch.feature_dtype, [&](auto in_tag) {
    using In = decltype(in_tag);
    ok = dispatch_label(batch.label_dtype, [&](auto label_tag) {
      using Label = decltype(label_tag);
      run_update<In, Label>(stats, batch, nan_policy, plan, scratch, status, stream);
    });
  });
  if (!ok) throw std::invalid_argument("update_class_stats: unsupported feature or label dtype");
}

// ------------------------------------------------------------------------------ shared steps
// The same launches as run_update's, for the slab path (update_steps.cuh).

void enqueue_begin_call(long long* status, cudaStream_t stream) {
  begin_update_kernel<<<1, 32, 0, stream>>>(status);
  check_launch("begin_update_kernel");
}

void enqueue_call_checks(const BatchView& batch, int64_t dim, int64_t num_classes, NanPolicy nan_policy,
                         uint8_t* keep, long long* status, int sm_count, cudaStream_t stream) {
  const bool raise = nan_policy == NanPolicy::kRaise;
  bool ok = false;
  dispatch_device_float(batch.feature_dtype, [&](auto in_tag) {
    using In = decltype(in_tag);
    ok = dispatch_label(batch.label_dtype, [&](auto label_tag) {
      using Label = decltype(label_tag);
      const In* x = static_cast<const In*>(batch.features);
      const Label* labels = static_cast<const Label*>(batch.labels);
      constexpr int V = static_cast<int>(16 / sizeof(In));
      const bool aligned = dim % V == 0 && batch.row_stride % V == 0 &&
                           reinterpret_cast<uintptr_t>(x) % (sizeof(In) * V) == 0;
      const unsigned grid = grid_for(batch.rows * 32, 256, sm_count);
      if (aligned) {
        check_rows_kernel<In, Label, V, true><<<grid, 256, 0, stream>>>(x, batch.row_stride, batch.rows, dim,
                                                                          labels, num_classes, keep, raise, status);
      } else {
        check_rows_kernel<In, Label, 1, false><<<grid, 256, 0, stream>>>(x, batch.row_stride, batch.rows, dim,
                                                                           labels, num_classes, keep, raise, status);
      }
      check_launch("check_rows_kernel");
      commit_update_kernel<Label><<<1, 32, 0, stream>>>(status, labels, raise);
      check_launch("commit_update_kernel");
    });
  });
  if (!ok) throw std::invalid_argument("enqueue_call_checks: unsupported feature or label dtype");
}

int slot_key_bits(uint64_t v) { return bit_width(v); }

size_t class_sort_temp_bytes(int64_t rows, int key_bits) {
  size_t bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                        static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                        static_cast<int32_t*>(nullptr), static_cast<int>(std::max<int64_t>(rows, 1)),
                                        0, key_bits),
        "cub::DeviceRadixSort::SortPairs (size query)");
  return bytes;
}

void enqueue_class_sort(const void* labels, DType label_dtype, int64_t rows, int64_t row_offset,
                        int64_t num_classes, const uint8_t* keep, bool check_labels,
                        const ClassSortBuffers& b, long long* status, int sm_count, cudaStream_t stream) {
  const bool ok = dispatch_label(label_dtype, [&](auto label_tag) {
    using Label = decltype(label_tag);
    const Label* y = static_cast<const Label*>(labels);
    const unsigned grid = grid_for(rows, 256, sm_count);
    check(cudaMemsetAsync(b.present, 0, num_classes * sizeof(int32_t), stream), "cudaMemsetAsync(present)");
    mark_present_kernel<Label><<<grid, 256, 0, stream>>>(y, rows, row_offset, num_classes, keep, b.present,
                                                         check_labels, status);
    check_launch("mark_present_kernel");
    assign_slots_kernel<<<1, kScanThreads, 0, stream>>>(b.present, num_classes, b.slot_of_class, b.slot_class,
                                                        b.num_slots, status);
    check_launch("assign_slots_kernel");
    make_keys_kernel<Label><<<grid, 256, 0, stream>>>(y, rows, num_classes, keep, b.slot_of_class, b.sentinel,
                                                      b.keys, b.vals, status);
    check_launch("make_keys_kernel");
    size_t sort_bytes = b.sort_bytes;
    check(cub::DeviceRadixSort::SortPairs(b.sort_temp, sort_bytes, static_cast<const uint32_t*>(b.keys),
                                          b.sorted_keys, static_cast<const int32_t*>(b.vals), b.perm,
                                          static_cast<int>(rows), 0, b.key_bits, stream),
          "cub::DeviceRadixSort::SortPairs");
    segment_bounds_kernel<<<grid, 256, 0, stream>>>(b.sorted_keys, rows, b.sentinel, b.seg_begin, b.seg_end,
                                                    status);
    check_launch("segment_bounds_kernel");
  });
  if (!ok) throw std::invalid_argument("enqueue_class_sort: unsupported label dtype");
}

}  // namespace ncfast::cuda
