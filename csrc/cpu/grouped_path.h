// The class-grouped update, for blocks with new classes or with many classes: rows are sorted
// by class (counting sort over a window of rows: one block, or with many classes up to
// kMaxWindowRows rows of the call, so each class's mean is read and written about once per
// window instead of once per block), and each class is centred on the shift that makes its
// contribution to W exact with no rank-k correction:
//   s_c = mu_c + (1 - sqrt(n_c / n'_c)) d_c,   d_c = t_c / m_c - mu_c,   n'_c = n_c + m_c,
// since sum_i (x_i - s_c)(x_i - s_c)^T = sum_i (x_i - xbar_c)(..)^T + (n_c m_c / n'_c) d_c d_c^T,
// which is the chunk update of DESIGN.md section 3; a new class (n_c = 0) gets its block mean.
// tr_c and q_c grow by sum |x_i - s_c|^2 and sum (x_ij - s_cj)^2, in float64, by the same identity.
//
// The sorted rows are cut into units (a class's rows within one Z block; a class with more rows
// gets several units in successive Z blocks, each one an exact chunk update after the last). A
// Z block holds about kZBlockBytes of input rows (at most block_rows rows), so the rows its
// first pass gathers from all over the batch are still in cache for the second. Per Z block:
// (P0, once per window, streams its rows in order: NaN/Inf flags and |x| per row.)
//   J1  one job over tasks of whole small units (sum, shift, centre into Z, commit the class),
//       or of pieces of big units (partial sums only);
//   J2, J3  big units only: centre the pieces, then commit each unit from its pieces' sums;
//   the Gram of Z, added to G and folded into W when due.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "update_context.h"

namespace ncfast::cpu {

// Rows per task of J1/J2.
constexpr int64_t kPieceRows = 256;
// Most rows sorted at once (the sort keeps one int32 per row).
constexpr int64_t kMaxWindowRows = int64_t{1} << 22;
// Input bytes of the rows of one Z block.
constexpr int64_t kZBlockBytes = int64_t{2} << 20;
// How far ahead of its use a sorted row is prefetched.
constexpr int64_t kPrefetchRows = 8;


template <typename In, typename Z>
class GroupedWindow {
 public:
  using W = Widened<In>;
  using Acc = GramAcc<Z>;

  explicit GroupedWindow(UpdateContext<In, Z>& ctx)
      : c_(ctx),
        dim_(ctx.s.dim),
        ld_(ctx.gram.ld()),
        zblock_rows_(std::min(ctx.block_rows,
                              std::max(4 * kPieceRows, kZBlockBytes / (ctx.s.dim * static_cast<int64_t>(sizeof(In)))))) {
    const int threads = num_threads();
    for (int t = 0; t < threads; ++t) readers_.emplace_back(dim_, ctx.aligned);
    z_.assign(static_cast<size_t>(z_lines<Z>(zblock_rows_) * ld_), Z{});
  }

  // Rows [r0, r0 + n); `last`: no rows of the call follow.
  UpdateResult run(int64_t r0, int64_t n, bool last) {
    r0_ = r0;
    c_.assign_slots(r0, n);
    sort_rows(n);
    const UpdateResult checked = check_rows(n, last);
    if (checked.status != UpdateStatus::kOk) return checked;
    const int64_t b = zblock_rows_;
    // Z blocks: consecutive units of at most b rows; a class never has two units in one.
    int64_t zb_start = 0;
    int64_t zb_rows = 0;
    units_.clear();
    const int64_t k = static_cast<int64_t>(c_.slot_class.size());
    std::vector<size_t> zb_unit_begin{0};
    for (int64_t slot = 0; slot < k; ++slot) {
      int64_t off = slot_begin_[slot];
      int64_t left = slot_begin_[slot + 1] - off;
      while (left > 0) {
        if (zb_rows == b) {
          zb_unit_begin.push_back(units_.size());
          zb_start += zb_rows;
          zb_rows = 0;
        }
        const int64_t take = std::min(left, b - zb_rows);
        units_.push_back({slot, off, take});
        zb_rows += take;
        off += take;
        left -= take;
      }
    }
    zb_unit_begin.push_back(units_.size());
    for (size_t z = 0; z + 1 < zb_unit_begin.size(); ++z) {
      const bool final_block = last && z + 2 == zb_unit_begin.size();
      run_zblock(zb_unit_begin[z], zb_unit_begin[z + 1], final_block);
    }
    return {};
  }

 private:
  struct Unit {
    int64_t slot;
    int64_t begin;  // into perm_
    int64_t rows;
  };
  struct Task {
    int64_t unit_begin, unit_end;  // whole small units, or
    int64_t piece = -1;            // piece `piece` of unit unit_begin (big units)
  };

  void sort_rows(int64_t n) {
    const int64_t k = static_cast<int64_t>(c_.slot_class.size());
    slot_begin_.assign(static_cast<size_t>(k + 1), 0);
    for (int64_t slot = 0; slot < k; ++slot) slot_begin_[slot + 1] = slot_begin_[slot] + c_.slot_rows[slot];
    std::vector<int64_t> next(slot_begin_.begin(), slot_begin_.end() - 1);
    perm_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) perm_[next[c_.row_slot[i]]++] = static_cast<int32_t>(i);
  }

  const In* row_at(int64_t p) const { return c_.row(r0_ + perm_[p]); }

  // P0, over the window in row order (a stream, at memory speed): NaN/Inf flags and |x|^2 per
  // row, the error (naming the first bad row) before anything changes. When the window reaches
  // the end of the call nothing can fail after it, so the journal stops saving.
  UpdateResult check_rows(int64_t n, bool last) {
    constexpr int64_t kRows = 4096;
    const int64_t dim = dim_;
    keep_row_.resize(static_cast<size_t>(n));
    norm_row_.resize(static_cast<size_t>(n));
    const int64_t chunks = (n + kRows - 1) / kRows;
    std::vector<int64_t> bad(static_cast<size_t>(chunks), 0), first(static_cast<size_t>(chunks), -1);
    parallel_for(chunks, [&](int64_t chunk, int worker) {
      RowReader<In>& reader = readers_[worker];
      const int64_t end = std::min(n, (chunk + 1) * kRows);
      for (int64_t i = chunk * kRows; i < end; ++i) {
        const W* x = reader.load(c_.row(r0_ + i), dim);
        const double norm = sum_sq_diff(x, static_cast<const double*>(nullptr), dim);
        const bool finite = finite_by_norm(norm, x, dim);
        keep_row_[i] = finite;
        // |x| as a float; beyond float's range it saturates, which still scales Z far enough
        norm_row_[i] = finite ? static_cast<float>(std::min(std::sqrt(norm), 3.4e38)) : 0.0f;
        if (!finite && bad[chunk]++ == 0) first[chunk] = i;
      }
    });
    int64_t bad_rows = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      if (bad[chunk] && c_.nan_policy == NanPolicy::kRaise) return nonfinite_at(r0_ + first[chunk]);
      bad_rows += bad[chunk];
    }
    c_.skipped_rows += bad_rows;
    if (last) c_.journal.stop_saving();
    return {};
  }

  void run_zblock(size_t u_begin, size_t u_end, bool last) {
    const int64_t p0 = units_[u_begin].begin;
    int64_t rows = 0;
    for (size_t u = u_begin; u < u_end; ++u) rows += units_[u].rows;
    const int64_t dim = dim_;

    keep_.resize(static_cast<size_t>(rows));
    float largest = 0.0f;
    for (int64_t p = 0; p < rows; ++p) {
      const int32_t i = perm_[p0 + p];
      keep_[p] = keep_row_[i];
      largest = std::max(largest, norm_row_[i]);
    }
    double bound = static_cast<double>(largest) * (1.0 + 1e-6);  // >= the largest |x|
    for (size_t u = u_begin; u < u_end; ++u) {
      const int64_t c = c_.slot_class[units_[u].slot];
      if (c_.s.counts[c] > 0) bound = std::max(bound, max_abs(c_.s.means + c * dim, dim));
      c_.journal.prepare(c);
    }
    // |x - s| <= |x| + |s|, and s lies between the class's old mean and its rows' mean.
    const double scale = scale_for<Z>(2.0 * bound);

    // Tasks: whole small units grouped to about kPieceRows rows, or pieces of big units.
    std::vector<Task> tasks;
    for (size_t u = u_begin; u < u_end;) {
      if (units_[u].rows > kPieceRows) {
        const int64_t np = (units_[u].rows + kPieceRows - 1) / kPieceRows;
        for (int64_t j = 0; j < np; ++j) tasks.push_back({static_cast<int64_t>(u), static_cast<int64_t>(u) + 1, j});
        ++u;
        continue;
      }
      Task t{static_cast<int64_t>(u), static_cast<int64_t>(u), -1};
      int64_t task_rows = 0;
      while (u < u_end && units_[u].rows <= kPieceRows && task_rows < kPieceRows) {
        task_rows += units_[u].rows;
        ++u;
      }
      t.unit_end = static_cast<int64_t>(u);
      tasks.push_back(t);
    }
    const bool diag = c_.s.class_diag != nullptr;
    const size_t ntasks = tasks.size();
    piece_sum_.assign(ntasks * static_cast<size_t>(dim), 0.0);  // big-unit pieces only
    piece_sq_.assign(diag ? ntasks * static_cast<size_t>(dim) : 0, 0.0);
    piece_count_.assign(ntasks, 0);
    piece_norm_.assign(ntasks, 0.0);
    bool any_big = false;
    for (const Task& t : tasks) any_big = any_big || t.piece >= 0;

    // J1
    parallel_for(static_cast<int64_t>(ntasks), [&](int64_t ti, int worker) {
      const Task& t = tasks[ti];
      if (t.piece >= 0) {
        piece_sums(ti, t, p0, worker);
      } else {
        std::vector<double> sum(static_cast<size_t>(dim)), shift(static_cast<size_t>(dim));
        std::vector<double> q(diag ? static_cast<size_t>(dim) : 0);
        for (int64_t u = t.unit_begin; u < t.unit_end; ++u) {
          small_unit(units_[u], p0, scale, sum, shift, q, worker);
        }
      }
    });
    if (any_big) {
      // J2: centre the pieces of big units on their unit's shift.
      parallel_for(static_cast<int64_t>(ntasks), [&](int64_t ti, int worker) {
        if (tasks[ti].piece >= 0) centre_piece(ti, tasks, p0, scale, worker);
      });
      // J3: commit each big unit from its pieces (in piece order).
      std::vector<size_t> firsts;
      for (size_t ti = 0; ti < ntasks; ++ti) {
        if (tasks[ti].piece == 0) firsts.push_back(ti);
      }
      parallel_for(static_cast<int64_t>(firsts.size()), [&](int64_t f, int) { commit_big(firsts[f], tasks); });
    }

    pad_z_rows(z_.data(), ld_, rows, dim);
    c_.prepare_gram(scale);
    c_.gram.compute_partials(z_.data(), rows);
    c_.finish_gram(GramAccumulator<Z>::slabs(rows), nullptr, 0, rows, last);
  }

  // Sum of v = x - mu (seen class) or x (new class) over a unit's kept rows [p, p + rows).
  int64_t sum_rows(const Unit& unit, int64_t p_first, int64_t p_last, int64_t p0, const double* mu,
                   double* t, RowReader<In>& reader) {
    const int64_t dim = dim_;
    int64_t m = 0;
    for (int64_t p = p_first; p < p_last; ++p) {
      // Sorted rows are scattered over the batch: fetch a few rows ahead of their use.
      if (p + kPrefetchRows < p0 + static_cast<int64_t>(keep_.size())) {
        prefetch_row(row_at(p + kPrefetchRows), static_cast<size_t>(dim) * sizeof(In));
      }
      if (!keep_[p - p0]) continue;
      const W* x = reader.load(row_at(p), dim);
      if (mu) {
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) t[j] += static_cast<double>(x[j]) - mu[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < dim; ++j) t[j] += static_cast<double>(x[j]);
      }
      ++m;
    }
    (void)unit;
    return m;
  }

  // s = mu + (1 - sqrt(n / n')) d for a seen class, d = t / m; the block mean for a new one.
  void make_shift(const double* mu, int64_t n, int64_t m, const double* t, double* shift) const {
    const double inv_m = 1.0 / static_cast<double>(m);
    if (n == 0) {
      for (int64_t j = 0; j < dim_; ++j) shift[j] = t[j] * inv_m;
      return;
    }
    const double a = 1.0 - std::sqrt(static_cast<double>(n) / static_cast<double>(n + m));
    for (int64_t j = 0; j < dim_; ++j) shift[j] = mu[j] + a * (t[j] * inv_m);
  }

  // Z rows [p_first, p_last) (sorted positions; Z row = position - p0) centred on `shift`;
  // returns sum |x - s|^2 and adds (x_j - s_j)^2 to q when given.
  double centre_rows(int64_t p_first, int64_t p_last, int64_t p0, const double* shift, double scale,
                     double* q, RowReader<In>& reader) {
    const int64_t dim = dim_;
    double norm = 0.0;
    for (int64_t p = p_first; p < p_last; ++p) {
      const int64_t zi = p - p0;
      if (!keep_[zi]) {
        zero_z_row(z_.data(), ld_, zi, dim);
        continue;
      }
      const W* x = reader.load(row_at(p), dim);
      const ZRow<Z> z = z_row(z_.data(), ld_, zi);
      double acc = 0.0;
      if (q) {
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < dim; ++j) {
          const double v = static_cast<double>(x[j]) - shift[j];
          z.set(j, v * scale);
          acc += v * v;
          q[j] += v * v;
        }
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < dim; ++j) {
          const double v = static_cast<double>(x[j]) - shift[j];
          z.set(j, v * scale);
          acc += v * v;
        }
      }
      norm += acc;
    }
    return norm;
  }

  // n, mu, tr, q of a class after m rows with sum t (of x - mu, or of x when n = 0).
  void commit(int64_t c, int64_t m, const double* t, double norm, const double* q) {
    c_.journal.save(c);
    const int64_t dim = dim_;
    const int64_t n = c_.s.counts[c];
    double* mu = c_.s.means + c * dim;
    const double inv_m = 1.0 / static_cast<double>(m);
    if (n == 0) {
      for (int64_t j = 0; j < dim; ++j) mu[j] = t[j] * inv_m;
    } else {
      const double step = 1.0 / static_cast<double>(n + m);  // (m / n') (t / m)
      for (int64_t j = 0; j < dim; ++j) mu[j] += step * t[j];
    }
    if (q) {
      double* qc = c_.s.class_diag + c * dim;
      for (int64_t j = 0; j < dim; ++j) qc[j] += q[j];
    }
    c_.s.class_scatter[c] += norm;
    c_.s.counts[c] = n + m;
  }

  void small_unit(const Unit& unit, int64_t p0, double scale, std::vector<double>& t,
                  std::vector<double>& buf, std::vector<double>& q, int worker) {
    RowReader<In>& reader = readers_[worker];
    const int64_t c = c_.slot_class[unit.slot];
    const int64_t n = c_.s.counts[c];
    const double* mu = n > 0 ? c_.s.means + c * dim_ : nullptr;
    std::fill(t.begin(), t.end(), 0.0);
    const int64_t m = sum_rows(unit, unit.begin, unit.begin + unit.rows, p0, mu, t.data(), reader);
    if (m == 0) {
      for (int64_t p = unit.begin; p < unit.begin + unit.rows; ++p) zero_z_row(z_.data(), ld_, p - p0, dim_);
      return;
    }
    make_shift(mu, n, m, t.data(), buf.data());
    std::fill(q.begin(), q.end(), 0.0);
    double* qp = q.empty() ? nullptr : q.data();
    const double norm = centre_rows(unit.begin, unit.begin + unit.rows, p0, buf.data(), scale, qp, reader);
    commit(c, m, t.data(), norm, qp);
  }

  std::pair<int64_t, int64_t> piece_range(const Task& t) const {
    const Unit& unit = units_[t.unit_begin];
    const int64_t first = unit.begin + t.piece * kPieceRows;
    return {first, std::min(unit.begin + unit.rows, first + kPieceRows)};
  }

  void piece_sums(int64_t ti, const Task& t, int64_t p0, int worker) {
    const Unit& unit = units_[t.unit_begin];
    const int64_t c = c_.slot_class[unit.slot];
    const double* mu = c_.s.counts[c] > 0 ? c_.s.means + c * dim_ : nullptr;
    const auto [first, last] = piece_range(t);
    piece_count_[ti] = sum_rows(unit, first, last, p0, mu, piece_sum_.data() + ti * dim_, readers_[worker]);
  }

  // The unit's sum and kept rows from its pieces, in piece order (the tasks of a big unit are
  // consecutive, piece 0 first).
  int64_t unit_sum(size_t first_task, const std::vector<Task>& tasks, double* t) const {
    std::fill_n(t, dim_, 0.0);
    int64_t m = 0;
    for (size_t ti = first_task; ti < tasks.size() && tasks[ti].unit_begin == tasks[first_task].unit_begin &&
                                 tasks[ti].piece >= 0;
         ++ti) {
      const double* s = piece_sum_.data() + ti * dim_;
      for (int64_t j = 0; j < dim_; ++j) t[j] += s[j];
      m += piece_count_[ti];
    }
    return m;
  }

  void centre_piece(int64_t ti, const std::vector<Task>& tasks, int64_t p0, double scale, int worker) {
    const Task& t = tasks[ti];
    const Unit& unit = units_[t.unit_begin];
    const int64_t c = c_.slot_class[unit.slot];
    const int64_t n = c_.s.counts[c];
    const auto [first, last] = piece_range(t);
    std::vector<double> sum(static_cast<size_t>(dim_)), shift(static_cast<size_t>(dim_));
    const int64_t m = unit_sum(static_cast<size_t>(ti - t.piece), tasks, sum.data());
    if (m == 0) {
      for (int64_t p = first; p < last; ++p) zero_z_row(z_.data(), ld_, p - p0, dim_);
      return;
    }
    make_shift(n > 0 ? c_.s.means + c * dim_ : nullptr, n, m, sum.data(), shift.data());
    double* q = piece_sq_.empty() ? nullptr : piece_sq_.data() + ti * dim_;
    piece_norm_[ti] = centre_rows(first, last, p0, shift.data(), scale, q, readers_[worker]);
  }

  void commit_big(size_t first_task, const std::vector<Task>& tasks) {
    const Unit& unit = units_[tasks[first_task].unit_begin];
    std::vector<double> t(static_cast<size_t>(dim_)), q;
    const int64_t m = unit_sum(first_task, tasks, t.data());
    if (m == 0) return;
    double norm = 0.0;
    if (!piece_sq_.empty()) q.assign(static_cast<size_t>(dim_), 0.0);
    for (size_t ti = first_task; ti < tasks.size() && tasks[ti].unit_begin == tasks[first_task].unit_begin &&
                                 tasks[ti].piece >= 0;
         ++ti) {
      norm += piece_norm_[ti];
      if (!q.empty()) {
        const double* s = piece_sq_.data() + ti * dim_;
        for (int64_t j = 0; j < dim_; ++j) q[j] += s[j];
      }
    }
    commit(c_.slot_class[unit.slot], m, t.data(), norm, q.empty() ? nullptr : q.data());
  }

  UpdateContext<In, Z>& c_;
  int64_t dim_;
  int64_t ld_;
  int64_t zblock_rows_;
  int64_t r0_ = 0;
  std::vector<RowReader<In>> readers_;
  std::vector<Z> z_;
  std::vector<int64_t> slot_begin_;
  std::vector<int32_t> perm_;
  std::vector<Unit> units_;
  std::vector<uint8_t> keep_;      // per row of the Z block, sorted order
  std::vector<uint8_t> keep_row_;  // per row of the window, row order
  std::vector<float> norm_row_;    // |x| per row of the window
  std::vector<double> piece_sum_, piece_sq_, piece_norm_;
  std::vector<int64_t> piece_count_;
};

}  // namespace ncfast::cpu
