// Chunk update of DESIGN.md section 3, block by block. For each block of rows:
//   1. map labels to dense slots (one per class present in the block), checking the range;
//   2. flag non-finite rows (error, or drop them under NanPolicy::kSkip);
//   3. per-slot counts m_c and float64 sums t_c (threads split the columns);
//   4. centre every row on its class shift s_c (the running mean, or the block mean for a
//      class seen for the first time) into a float32 (float64 for float64 input) scratch Z;
//   5. G = Z^T Z, upper triangle, minus the rank-k correction sum_c (m_c^2 / n'_c) d_c d_c^T,
//      folded into the float64 scatter W;
//   6. update n_c, mu_c, tr_c and (optionally) q_c with the same correction on their diagonals.
// The block (about 8 MiB) stays in cache across these passes, so the input is read from memory
// once. Errors are found in steps 1-2, before the block changes anything.
// When every class of the block has been seen before (the common case after the first
// blocks), the shift is the running mean, known up front, and steps 2-4 are one pass: each row
// is checked, centred and added to its class's sum of z while it is in L1.
#include "class_stats_cpu.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "class_sums_cpu.h"
#include "parallel.h"
#include "widen.h"
#include "sym_gram_cpu.h"

namespace ncfast::cpu {
namespace {

constexpr int64_t kTargetBlockBytes = int64_t{8} << 20;
constexpr int64_t kMinBlockRows = 256;
constexpr int64_t kMaxBlockRows = int64_t{1} << 16;
// The fused pass keeps one float64 (slots x dim) sum per row slab; above this many entries in
// all, the separate passes (which need no such buffers) are used instead.
constexpr int64_t kMaxFusedSumEntries = int64_t{1} << 18;
constexpr int64_t kFusedSlabRows = 1024;

int64_t fused_slabs(int64_t block_rows) { return (block_rows + kFusedSlabRows - 1) / kFusedSlabRows; }

int64_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat64: return 8;
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    default: return 4;
  }
}

int64_t read_label(const void* labels, DType dtype, int64_t i) {
  return dtype == DType::kInt32 ? static_cast<const int32_t*>(labels)[i]
                                : static_cast<const int64_t*>(labels)[i];
}

// x * 0 is 0 for every finite x and NaN for +-Inf and NaN; summing keeps the loop branch-free.
template <typename T>
bool row_is_finite(const T* row, int64_t dim) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < dim; ++j) acc += row[j] * T(0);
  return acc == acc;
}

// 16-bit formats are non-finite exactly when every exponent bit is set.
template <uint16_t kExponentMask, typename T>
bool row_bits_finite(const T* row, int64_t dim) {
  int non_finite = 0;
#pragma omp simd reduction(| : non_finite)
  for (int64_t j = 0; j < dim; ++j) non_finite |= (row[j].bits & kExponentMask) == kExponentMask;
  return non_finite == 0;
}
bool row_is_finite(const Half* row, int64_t dim) { return row_bits_finite<0x7c00>(row, dim); }
bool row_is_finite(const BFloat16* row, int64_t dim) { return row_bits_finite<0x7f80>(row, dim); }

// z = row - shift, each element rounded once from float64 to Acc; returns ||z||^2 (of the
// rounded values) and, when `sum` is given, adds the unrounded differences to it.
template <typename Acc, typename W>
double centre_row(const W* row, const double* shift, Acc* z, double* sum, int64_t dim) {
  double norm2 = 0.0;
  if (sum) {
#pragma omp simd reduction(+ : norm2)
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(row[j]) - shift[j];
      z[j] = static_cast<Acc>(v);
      sum[j] += v;
      norm2 += static_cast<double>(z[j]) * static_cast<double>(z[j]);
    }
  } else {
#pragma omp simd reduction(+ : norm2)
    for (int64_t j = 0; j < dim; ++j) {
      z[j] = static_cast<Acc>(static_cast<double>(row[j]) - shift[j]);
      norm2 += static_cast<double>(z[j]) * static_cast<double>(z[j]);
    }
  }
  return norm2;
}

// Keeps what a multi-block call changes, so an error in a later block can undo the earlier
// ones: the scatter matrix up front, and each class's entries the first time it is touched.
class Journal {
 public:
  Journal(const StatsView& stats, bool enabled) : stats_(stats), enabled_(enabled) {
    if (!enabled_) return;
    const int64_t d2 = stats.dim * stats.dim;
    scatter_.assign(stats.scatter, stats.scatter + d2);
    touched_.assign(stats.num_classes, 0);
  }

  void save_class(int64_t c) {
    if (!enabled_ || touched_[c]) return;
    touched_[c] = 1;
    const int64_t d = stats_.dim;
    classes_.push_back(c);
    counts_.push_back(stats_.counts[c]);
    class_scatter_.push_back(stats_.class_scatter[c]);
    means_.insert(means_.end(), stats_.means + c * d, stats_.means + (c + 1) * d);
    if (stats_.class_diag) {
      diag_.insert(diag_.end(), stats_.class_diag + c * d, stats_.class_diag + (c + 1) * d);
    }
  }

  void restore() const {
    if (!enabled_) return;
    const int64_t d = stats_.dim;
    std::copy(scatter_.begin(), scatter_.end(), stats_.scatter);
    for (size_t k = 0; k < classes_.size(); ++k) {
      const int64_t c = classes_[k];
      stats_.counts[c] = counts_[k];
      stats_.class_scatter[c] = class_scatter_[k];
      std::copy_n(means_.begin() + k * d, d, stats_.means + c * d);
      if (stats_.class_diag) std::copy_n(diag_.begin() + k * d, d, stats_.class_diag + c * d);
    }
  }

 private:
  const StatsView& stats_;
  bool enabled_;
  std::vector<double> scatter_;
  std::vector<uint8_t> touched_;
  std::vector<int64_t> classes_;
  std::vector<int64_t> counts_;
  std::vector<double> class_scatter_;
  std::vector<double> means_;
  std::vector<double> diag_;
};

void symmetrize_from_upper(double* a, int64_t dim) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 1; i < dim; ++i) {
    for (int64_t j = 0; j < i; ++j) a[i * dim + j] = a[j * dim + i];
  }
}

// Scratch for one block, sized once per call: every buffer is bounded by block_rows x dim.
template <typename Acc>
struct BlockScratch {
  BlockScratch(int64_t block_rows, int64_t max_slots, int64_t dim, bool with_diag)
      : row_slot(block_rows),
        keep(block_rows),
        row_norm2(block_rows),
        slot_rows(max_slots),
        slot_mean(max_slots * dim),
        slot_norm2(max_slots),
        slot_sq(with_diag ? max_slots * dim : 0),
        shift(max_slots),
        centred(block_rows * dim),
        correction(max_slots * dim),
        gram(std::is_same_v<Acc, float> ? dim * dim : 0) {}

  std::vector<int32_t> row_slot;      // block row -> slot
  std::vector<uint8_t> keep;          // block row is finite
  std::vector<double> row_norm2;      // ||z_i||^2
  std::vector<int64_t> slot_rows;     // m_c
  std::vector<double> slot_mean;      // t_c / m_c
  std::vector<double> slot_norm2;     // sum_{i in c} ||z_i||^2
  std::vector<double> slot_sq;        // sum_{i in c} z_ij^2 (per-class diagonal only)
  std::vector<const double*> shift;   // s_c, a row of `means` or of `slot_mean`
  std::vector<Acc> centred;           // Z = X - s[y]
  std::vector<Acc> correction;        // rows sqrt(m_c^2 / n'_c) d_c
  std::vector<float> gram;            // float32 G of the block before it joins the float64 W
  std::vector<int64_t> slot_class;    // slot -> class
  std::vector<double> slab_sums;      // fused pass: per row slab, per slot sum of z
};

template <typename In>
class BlockUpdater {
 public:
  // Float64 input keeps a float64 Gram; every other type is centred and multiplied in float32.
  using Acc = std::conditional_t<std::is_same_v<In, double>, double, float>;

  BlockUpdater(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
               int64_t block_rows)
      : s_(stats),
        batch_(batch),
        nan_policy_(nan_policy),
        block_rows_(block_rows),
        slot_of_class_(stats.num_classes, -1),
        w_(block_rows, std::min(stats.num_classes, block_rows), stats.dim,
           stats.class_diag != nullptr) {}

  UpdateResult run() {
    const int64_t rows = batch_.rows;
    Journal journal(s_, rows > block_rows_);
    UpdateResult result;
    for (int64_t r0 = 0; r0 < rows; r0 += block_rows_) {
      const int64_t b = std::min(block_rows_, rows - r0);
      const In* x = static_cast<const In*>(batch_.features) + r0 * batch_.row_stride;
      UpdateResult check = assign_slots(r0, b);
      const bool fused = check.status == UpdateStatus::kOk && can_fuse(b);
      if (check.status == UpdateStatus::kOk) {
        if (fused) centre_seen_classes(x, b);
        check = count_nonfinite_rows(r0, b, fused ? nullptr : x);
      }
      if (check.status != UpdateStatus::kOk) {
        journal.restore();
        return check;
      }
      result.skipped_rows += check.skipped_rows;
      fold_block(x, b, journal, fused);
    }
    symmetrize_from_upper(s_.scatter, s_.dim);
    return result;
  }

 private:
  // Step 1: dense slots for the classes of this block.
  UpdateResult assign_slots(int64_t r0, int64_t b) {
    for (int64_t c : w_.slot_class) slot_of_class_[c] = -1;
    w_.slot_class.clear();
    for (int64_t i = 0; i < b; ++i) {
      const int64_t c = read_label(batch_.labels, batch_.label_dtype, r0 + i);
      if (c < 0 || c >= s_.num_classes) {
        UpdateResult bad;
        bad.status = UpdateStatus::kLabelOutOfRange;
        bad.row = r0 + i;
        bad.label = c;
        return bad;
      }
      int32_t slot = slot_of_class_[c];
      if (slot < 0) {
        slot = static_cast<int32_t>(w_.slot_class.size());
        slot_of_class_[c] = slot;
        w_.slot_class.push_back(c);
      }
      w_.row_slot[i] = slot;
    }
    return {};
  }

  // Step 2: rows holding NaN/Inf are an error, or dropped and counted. `x` null: the keep
  // flags were already set by the fused pass.
  UpdateResult count_nonfinite_rows(int64_t r0, int64_t b, const In* x) {
    const int64_t stride = batch_.row_stride;
    const int64_t dim = s_.dim;
    uint8_t* keep = w_.keep.data();
    if (x) {
#pragma omp parallel for schedule(dynamic, 256)
      for (int64_t i = 0; i < b; ++i) keep[i] = row_is_finite(x + i * stride, dim) ? 1 : 0;
    }
    UpdateResult result;
    for (int64_t i = 0; i < b; ++i) {
      if (keep[i]) continue;
      if (nan_policy_ == NanPolicy::kRaise) {
        result.status = UpdateStatus::kNonFinite;
        result.row = r0 + i;
        return result;
      }
      ++result.skipped_rows;
    }
    return result;
  }

  void fold_block(const In* x, int64_t b, Journal& journal, bool fused) {
    const int64_t num_slots = static_cast<int64_t>(w_.slot_class.size());
    if (fused) {
      seen_class_means(b, num_slots);
    } else {
      class_means(x, b, num_slots);
      choose_shifts(num_slots);
      centre_rows(x, b);
    }
    accumulate_gram(b, num_slots);
    if (s_.class_diag) class_squares(b, num_slots);
    update_classes(b, num_slots, journal);
  }

  // The fused pass applies when every class of the block has rows already (its shift is its
  // running mean), the per-slab sums stay small, and there is a slab for every thread (its
  // slabs are its only parallelism; wide rows make short blocks).
  bool can_fuse(int64_t b) const {
    const int64_t num_slots = static_cast<int64_t>(w_.slot_class.size());
    for (int64_t c : w_.slot_class) {
      if (s_.counts[c] == 0) return false;
    }
    const int64_t slabs = fused_slabs(b);
    return slabs >= thread_count() && slabs * num_slots * s_.dim <= kMaxFusedSumEntries;
  }

  // Steps 2-4 fused: keep flag, z = x - mu_c (rounded once from float64), ||z||^2, and per row
  // slab the float64 sum of z per slot. Slabs are fixed row ranges summed in slab order later,
  // so the result does not depend on which thread ran which slab. Non-finite rows become
  // zero rows and join no sum.
  void centre_seen_classes(const In* x, int64_t b) {
    const int64_t dim = s_.dim;
    const int64_t stride = batch_.row_stride;
    const int64_t num_slots = static_cast<int64_t>(w_.slot_class.size());
    const int64_t slabs = fused_slabs(b);
    w_.slab_sums.assign(static_cast<size_t>(slabs * num_slots * dim), 0.0);
    for (int64_t slot = 0; slot < num_slots; ++slot) w_.shift[slot] = s_.means + w_.slot_class[slot] * dim;
#pragma omp parallel
    {
      RowLoader<In> loader(dim);
#pragma omp for schedule(dynamic, 1)
      for (int64_t slab = 0; slab < slabs; ++slab) {
        double* sums = w_.slab_sums.data() + slab * num_slots * dim;
        const int64_t end = std::min(b, (slab + 1) * kFusedSlabRows);
        for (int64_t i = slab * kFusedSlabRows; i < end; ++i) {
          Acc* z = w_.centred.data() + i * dim;
          const In* in = x + i * stride;
          if (!row_is_finite(in, dim)) {
            w_.keep[i] = 0;
            std::fill_n(z, dim, Acc(0));
            w_.row_norm2[i] = 0.0;
            continue;
          }
          w_.keep[i] = 1;
          const int32_t slot = w_.row_slot[i];
          w_.row_norm2[i] = centre_row(loader.load(in, dim), w_.shift[slot], z,
                                       sums + static_cast<int64_t>(slot) * dim, dim);
        }
      }
    }
  }

  // Step 3 after the fused pass: m_c, and the block mean mu_c + (sum of z) / m_c.
  void seen_class_means(int64_t b, int64_t num_slots) {
    const int64_t dim = s_.dim;
    const int64_t slabs = fused_slabs(b);
    std::fill_n(w_.slot_rows.begin(), num_slots, 0);
    for (int64_t i = 0; i < b; ++i) w_.slot_rows[w_.row_slot[i]] += w_.keep[i];
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      double* mean = w_.slot_mean.data() + slot * dim;
      std::fill_n(mean, dim, 0.0);
      for (int64_t slab = 0; slab < slabs; ++slab) {
        const double* sum = w_.slab_sums.data() + (slab * num_slots + slot) * dim;
        for (int64_t j = 0; j < dim; ++j) mean[j] += sum[j];
      }
      const int64_t m = w_.slot_rows[slot];
      if (m == 0) continue;
      const double inv = 1.0 / static_cast<double>(m);
      const double* mu = w_.shift[slot];
      for (int64_t j = 0; j < dim; ++j) mean[j] = mu[j] + mean[j] * inv;
    }
  }

  // Step 3: m_c and t_c / m_c.
  void class_means(const In* x, int64_t b, int64_t num_slots) {
    const int64_t dim = s_.dim;
    std::fill_n(w_.slot_rows.begin(), num_slots, 0);
    for (int64_t i = 0; i < b; ++i) w_.slot_rows[w_.row_slot[i]] += w_.keep[i];
    class_sums(x, batch_.feature_dtype, b, dim, batch_.row_stride, w_.row_slot.data(),
               w_.keep.data(), num_slots, w_.slot_mean.data());
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      const int64_t m = w_.slot_rows[slot];
      if (m == 0) continue;
      double* mean = w_.slot_mean.data() + slot * dim;
      const double inv = 1.0 / static_cast<double>(m);
      for (int64_t j = 0; j < dim; ++j) mean[j] *= inv;
    }
  }

  // s_c = mu_c for a class seen before, the block mean for a new one (DESIGN.md section 3).
  void choose_shifts(int64_t num_slots) {
    const int64_t dim = s_.dim;
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      const int64_t c = w_.slot_class[slot];
      w_.shift[slot] =
          s_.counts[c] > 0 ? s_.means + c * dim : w_.slot_mean.data() + slot * dim;
    }
  }

  // Step 4: Z = X - s[y], rounded once from float64; dropped rows become zero rows.
  void centre_rows(const In* x, int64_t b) {
    const int64_t dim = s_.dim;
    const int64_t stride = batch_.row_stride;
#pragma omp parallel
    {
      RowLoader<In> loader(dim);
#pragma omp for schedule(dynamic, 64)
      for (int64_t i = 0; i < b; ++i) {
        Acc* z = w_.centred.data() + i * dim;
        if (!w_.keep[i]) {
          std::fill_n(z, dim, Acc(0));
          w_.row_norm2[i] = 0.0;
          continue;
        }
        w_.row_norm2[i] = centre_row(loader.load(x + i * stride, dim), w_.shift[w_.row_slot[i]], z,
                                     static_cast<double*>(nullptr), dim);
      }
    }
  }

  // Step 5: W += Z^T Z - sum_c (m_c^2 / n'_c) d_c d_c^T on the upper triangle.
  void accumulate_gram(int64_t b, int64_t num_slots) {
    const int64_t dim = s_.dim;
    const int64_t num_corrections = correction_rows(num_slots);
    const Acc* corr = w_.correction.data();
    if constexpr (std::is_same_v<Acc, double>) {
      sym_gram_upper(w_.centred.data(), b, dim, dim, 1.0, 1.0, s_.scatter);
      if (num_corrections) sym_gram_upper(corr, num_corrections, dim, dim, -1.0, 1.0, s_.scatter);
    } else {
      float* g = w_.gram.data();
      sym_gram_upper(w_.centred.data(), b, dim, dim, 1.0f, 0.0f, g);
      if (num_corrections) sym_gram_upper(corr, num_corrections, dim, dim, -1.0f, 1.0f, g);
      double* scatter = s_.scatter;
#pragma omp parallel for schedule(dynamic, 16)
      for (int64_t i = 0; i < dim; ++i) {
#pragma omp simd
        for (int64_t j = i; j < dim; ++j) scatter[i * dim + j] += g[i * dim + j];
      }
    }
  }

  // Rows sqrt(m_c^2 / n'_c) (t_c / m_c - mu_c) for classes seen before; a new class is
  // centred on its own block mean, so its d_c is zero.
  int64_t correction_rows(int64_t num_slots) {
    const int64_t dim = s_.dim;
    int64_t k = 0;
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      const int64_t c = w_.slot_class[slot];
      const int64_t m = w_.slot_rows[slot];
      const int64_t n = s_.counts[c];
      if (m == 0 || n == 0) continue;
      const double scale = static_cast<double>(m) / std::sqrt(static_cast<double>(n + m));
      const double* mean = w_.slot_mean.data() + slot * dim;
      const double* mu = s_.means + c * dim;
      Acc* out = w_.correction.data() + k * dim;
      for (int64_t j = 0; j < dim; ++j) out[j] = static_cast<Acc>(scale * (mean[j] - mu[j]));
      ++k;
    }
    return k;
  }

  // Per-class sums of z_ij^2 for the optional per-class diagonal; threads split the columns.
  void class_squares(int64_t b, int64_t num_slots) {
    const int64_t dim = s_.dim;
    std::fill_n(w_.slot_sq.begin(), num_slots * dim, 0.0);
    const int tasks = column_tasks(dim);
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const ColumnRange cols = column_range(task, tasks, dim);
      for (int64_t i = 0; i < b; ++i) {
        if (!w_.keep[i]) continue;
        const Acc* z = w_.centred.data() + i * dim;
        double* out = w_.slot_sq.data() + static_cast<int64_t>(w_.row_slot[i]) * dim;
#pragma omp simd
        for (int64_t j = cols.begin; j < cols.end; ++j) {
          out[j] += static_cast<double>(z[j]) * static_cast<double>(z[j]);
        }
      }
    }
  }

  // Step 6: n_c, mu_c, tr_c, q_c.
  void update_classes(int64_t b, int64_t num_slots, Journal& journal) {
    const int64_t dim = s_.dim;
    std::fill_n(w_.slot_norm2.begin(), num_slots, 0.0);
    for (int64_t i = 0; i < b; ++i) w_.slot_norm2[w_.row_slot[i]] += w_.row_norm2[i];
    for (int64_t slot = 0; slot < num_slots; ++slot) {
      const int64_t m = w_.slot_rows[slot];
      if (m == 0) continue;
      const int64_t c = w_.slot_class[slot];
      journal.save_class(c);
      const int64_t n = s_.counts[c];
      const double n_new = static_cast<double>(n + m);
      const double coef = static_cast<double>(m) * static_cast<double>(m) / n_new;
      const double* block_mean = w_.slot_mean.data() + slot * dim;
      double* mu = s_.means + c * dim;
      double* q = s_.class_diag ? s_.class_diag + c * dim : nullptr;
      const double* sq = s_.class_diag ? w_.slot_sq.data() + slot * dim : nullptr;
      double d_norm2 = 0.0;
      for (int64_t j = 0; j < dim; ++j) {
        const double d = n > 0 ? block_mean[j] - mu[j] : 0.0;
        d_norm2 += d * d;
        if (q) q[j] += sq[j] - coef * d * d;
        mu[j] = n > 0 ? mu[j] + (static_cast<double>(m) / n_new) * d : block_mean[j];
      }
      s_.class_scatter[c] += w_.slot_norm2[slot] - coef * d_norm2;
      s_.counts[c] = n + m;
    }
  }

  const StatsView& s_;
  const BatchView& batch_;
  NanPolicy nan_policy_;
  int64_t block_rows_;
  std::vector<int32_t> slot_of_class_;
  BlockScratch<Acc> w_;
};

}  // namespace

int64_t default_block_rows(int64_t dim, DType feature_dtype) {
  const int64_t row_bytes = std::max<int64_t>(1, dim * element_size(feature_dtype));
  return std::clamp(kTargetBlockBytes / row_bytes, kMinBlockRows, kMaxBlockRows);
}

UpdateResult update_class_stats(const StatsView& stats, const BatchView& batch,
                                NanPolicy nan_policy, int64_t block_rows) {
  if (batch.rows <= 0) return {};
  if (block_rows <= 0) block_rows = default_block_rows(stats.dim, batch.feature_dtype);
  block_rows = std::min(block_rows, batch.rows);
  UpdateResult result;
  result.status = UpdateStatus::kBadDtype;
  dispatch_float_dtype(batch.feature_dtype, [&](auto tag) {
    using In = decltype(tag);
    result = BlockUpdater<In>(stats, batch, nan_policy, block_rows).run();
  });
  return result;
}

int num_threads() { return thread_count(); }

void set_num_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}

}  // namespace ncfast::cpu
