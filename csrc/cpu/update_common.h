// Pieces shared by the two block paths of the CPU update (fused_path.h, grouped_path.h):
// the journal that undoes a rejected multi-block call, the row loops that centre rows into Z,
// and the power-of-two scale that keeps Z's squares inside float32 (or float64).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "../core/class_stats.h"
#include "gram_accumulator.h"

namespace ncfast::cpu {

// ---------------------------------------------------------------------------------------------
// Z rows: float or double as they are; bfloat16 written into row pairs (Bf16Pair) or rows
// (Bf16Row).

template <typename Z>
struct ZRow {
  GramAcc<Z>* p;
  void set(int64_t j, double v) const { p[j] = static_cast<GramAcc<Z>>(v); }
};

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even (finite values)
  return static_cast<uint16_t>(bits >> 16);
}

template <>
struct ZRow<Bf16Pair> {
  uint16_t* p;  // this row's half of its pair-row; elements two apart
  void set(int64_t j, double v) const { p[2 * j] = float_to_bf16(static_cast<float>(v)); }
};

template <>
struct ZRow<Bf16Row> {
  uint16_t* p;
  void set(int64_t j, double v) const { p[j] = float_to_bf16(static_cast<float>(v)); }
};

// Row i of a Z buffer with leading dimension ld (elements, or words for pair-rows).
template <typename Z>
ZRow<Z> z_row(Z* base, int64_t ld, int64_t i) {
  if constexpr (std::is_same_v<Z, Bf16Row>) {
    return {reinterpret_cast<uint16_t*>(base + i * ld)};
  } else if constexpr (std::is_same_v<Z, Bf16Pair>) {
    return {reinterpret_cast<uint16_t*>(base + (i / 2) * ld) + (i & 1)};
  } else {
    return {base + i * ld};
  }
}

template <typename Z>
void zero_z_row(Z* base, int64_t ld, int64_t i, int64_t dim) {
  const ZRow<Z> z = z_row(base, ld, i);
  for (int64_t j = 0; j < dim; ++j) z.set(j, 0.0);
}

// Lines (rows, or pair-rows) of a Z buffer holding `rows` rows.
template <typename Z>
int64_t z_lines(int64_t rows) {
  return std::is_same_v<Z, Bf16Pair> ? (rows + 1) / 2 : rows;
}

// An odd row count leaves the second half of the last pair-row to be zeroed.
template <typename Z>
void pad_z_rows(Z* base, int64_t ld, int64_t rows, int64_t dim) {
  if constexpr (std::is_same_v<Z, Bf16Pair>) {
    if (rows % 2) zero_z_row(base, ld, rows, dim);
  }
}

// ---------------------------------------------------------------------------------------------
// Magnitudes. The float32 Gram overflows once sum z^2 passes 3.4e38 and loses its digits once
// z^2 nears 1e-38; a float32 (or bfloat16) Z is therefore scaled by 2^-e when its largest
// element leaves [2^-40, 2^40], exactly (a power of two), and G is unscaled by 2^2e in float64,
// which holds every product of float32 values. A float64 Z is never scaled: its Gram has the
// range of W itself.
constexpr int kSafeExponent = 40;

// 1 (bit-identical results for ordinary data), or the power of two that brings `bound`
// (an upper bound of |z|, or the largest |z|) to [0.5, 1).
template <typename Z>
double scale_for(double bound) {
  if constexpr (std::is_same_v<Z, double>) {
    return 1.0;
  } else {
    if (!(bound > 0.0) || !std::isfinite(bound)) return 1.0;
    int e = 0;
    std::frexp(bound, &e);
    if (e >= -kSafeExponent && e <= kSafeExponent) return 1.0;
    return std::ldexp(1.0, -e);
  }
}

// Asks for a row's cache lines ahead of its use (a hint; never faults).
inline void prefetch_row(const void* row, size_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// ---------------------------------------------------------------------------------------------
// Finiteness: x * 0 is 0 for every finite x and NaN for +-Inf and NaN; summing keeps the loop
// branch-free.
template <typename T>
bool row_is_finite(const T* row, int64_t dim) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < dim; ++j) acc += row[j] * T(0);
  return acc == acc;
}

// sum_j (row_j - shift_j)^2 in float64 (shift may be null: zero), or +Inf/NaN when the row holds
// Inf or NaN. For float rows the sum is finite exactly when the row is (float32 squares never
// overflow float64), so one pass checks the row and measures it.
template <typename T>
double sum_sq_diff(const T* row, const double* shift, int64_t dim) {
  double acc = 0.0;
  if (shift) {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(row[j]) - shift[j];
      acc += v * v;
    }
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < dim; ++j) acc += static_cast<double>(row[j]) * static_cast<double>(row[j]);
  }
  return acc;
}

// Whether a row whose sum_sq_diff is `norm2` is finite: for float rows, iff norm2 is; for
// double rows a finite norm2 proves it, an infinite one needs a look at the row.
template <typename T>
bool finite_by_norm(double norm2, const T* row, int64_t dim) {
  if (norm2 <= std::numeric_limits<double>::max()) return true;
  if constexpr (std::is_same_v<T, double>) {
    return !(norm2 != norm2) && row_is_finite(row, dim);
  } else {
    return false;
  }
}

template <typename T>
double max_abs(const T* row, int64_t dim) {
  double m = 0.0;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < dim; ++j) m = std::max(m, std::fabs(static_cast<double>(row[j])));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Journal: what a multi-block call changes, so that an error in a later block can undo the
// earlier ones: W up front, each class's entries the first time it is changed. prepare() runs
// on one thread before a job; save() from the job's tasks, one task per class.
class Journal {
 public:
  // capacity: the most classes one call can change (min(K, rows)); storage is reserved for
  // them up front but only written (so only paged in) class by class.
  Journal(const StatsView& stats, bool enabled, int64_t capacity)
      : s_(stats), enabled_(enabled), capacity_(std::min(capacity, stats.num_classes)) {
    if (!enabled_) return;
    scatter_.assign(stats.scatter, stats.scatter + stats.dim * stats.dim);
    index_.assign(static_cast<size_t>(stats.num_classes), -1);
    const size_t rows = static_cast<size_t>(capacity_) * static_cast<size_t>(stats.dim);
    means_.reset(new double[rows]);
    if (stats.class_diag) diag_.reset(new double[rows]);
    classes_.reserve(static_cast<size_t>(std::min<int64_t>(capacity_, 1 << 16)));
  }

  bool enabled() const { return enabled_; }

  // Every row the call has left is known to be valid: nothing can be rolled back any more.
  void stop_saving() { saving_ = false; }

  void prepare(int64_t c) {
    if (!enabled_ || !saving_ || index_[c] >= 0) return;
    index_[c] = static_cast<int64_t>(classes_.size());
    classes_.push_back(c);
    saved_.push_back(0);
    counts_.push_back(0);
    class_scatter_.push_back(0.0);
  }

  void save(int64_t c) {
    if (!enabled_ || !saving_) return;
    const int64_t k = index_[c];
    if (k < 0) return;
    if (saved_[k]) return;
    saved_[k] = 1;
    const int64_t d = s_.dim;
    counts_[k] = s_.counts[c];
    class_scatter_[k] = s_.class_scatter[c];
    std::copy_n(s_.means + c * d, d, means_.get() + k * d);
    if (s_.class_diag) std::copy_n(s_.class_diag + c * d, d, diag_.get() + k * d);
  }

  void restore() const {
    if (!enabled_) return;
    const int64_t d = s_.dim;
    std::copy(scatter_.begin(), scatter_.end(), s_.scatter);
    for (size_t k = 0; k < classes_.size(); ++k) {
      if (!saved_[k]) continue;
      const int64_t c = classes_[k];
      s_.counts[c] = counts_[k];
      s_.class_scatter[c] = class_scatter_[k];
      std::copy_n(means_.get() + k * d, d, s_.means + c * d);
      if (s_.class_diag) std::copy_n(diag_.get() + k * d, d, s_.class_diag + c * d);
    }
  }

 private:
  const StatsView& s_;
  bool enabled_;
  bool saving_ = true;
  int64_t capacity_;
  std::vector<double> scatter_;
  std::vector<int64_t> index_;
  std::vector<int64_t> classes_;
  std::vector<uint8_t> saved_;
  std::vector<int64_t> counts_;
  std::vector<double> class_scatter_;
  std::unique_ptr<double[]> means_;
  std::unique_ptr<double[]> diag_;
};

}  // namespace ncfast::cpu
