// The one-pass block update (DESIGN.md section 3, chunk update, with s_c = mu_c): for a block
// whose classes all have rows, few enough that their rank-k correction is cheap.
//   1. one job over slabs of kGramSlabRows rows: each row is centred on its class's running
//      mean in float64 (v = x - mu_c; |v|^2 first, which also finds NaN/Inf rows) and rounded
//      once into Z, while each slab sums v, |v|^2 (and v_j^2) per slot; for narrow rows the
//      slab's Gram is made in the same task from a cache-sized chunk of Z, so Z never reaches
//      memory;
//   2. one job over slots: d_c = sum v / m_c, the correction row sqrt(m_c^2 / n'_c) d_c, and the
//      class's n_c, mu_c, tr_c, q_c;
//   3. the Gram of Z (wide rows), then G += partials - R^T R, folded into W when due.
// Slabs are fixed row ranges and their sums are combined in slab order, so the result does
// not depend on which thread ran which slab.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "update_context.h"

namespace ncfast::cpu {

// Rows of Z per chunk of the in-pass Gram: small enough to stay in L2 with the partial.
constexpr int64_t kPassChunkRows = 256;
// Up to this D a slab's Gram is made in its centring task (wider rows give a block too few
// slabs to keep many threads busy, so their Gram runs as slab x band tasks of its own).
constexpr int64_t kInPassGramMaxDim = 320;

template <typename In, typename Z>
class FusedBlock {
 public:
  using W = Widened<In>;
  using Acc = GramAcc<Z>;

  // Gram inside the pass: the tiled kernels, for narrow rows.
  static bool gram_in_pass(int64_t dim) {
    return (std::is_same_v<Z, float> || std::is_same_v<Z, Bf16Pair>) && dim <= kInPassGramMaxDim &&
           dim <= tiled_gram_max_dim();
  }

  explicit FusedBlock(UpdateContext<In, Z>& ctx)
      : c_(ctx), dim_(ctx.s.dim), ld_(ctx.gram.ld()), readers_(), chunks_() {
    const int threads = num_threads();
    for (int t = 0; t < threads; ++t) readers_.emplace_back(dim_, ctx.aligned);
    if (gram_in_pass(dim_)) {
      chunks_.resize(static_cast<size_t>(threads));
      for (auto& chunk : chunks_) chunk.assign(static_cast<size_t>(z_lines<Z>(kPassChunkRows) * ld_), Z{});
    } else {
      z_.assign(static_cast<size_t>(z_lines<Z>(ctx.block_rows) * ld_), Z{});
    }
  }

  // Block [r0, r0 + b): slots already assigned in the context (all seen).
  UpdateResult run(int64_t r0, int64_t b, bool last) {
    const int64_t k = static_cast<int64_t>(c_.slot_class.size());
    const int64_t slabs = GramAccumulator<Z>::slabs(b);
    const bool diag = c_.s.class_diag != nullptr;
    sums_.resize(static_cast<size_t>(slabs * k * dim_));
    sq_.resize(diag ? static_cast<size_t>(slabs * k * dim_) : 0);
    norms_.resize(static_cast<size_t>(slabs * k));
    counts_.resize(static_cast<size_t>(slabs * k));
    first_bad_.resize(static_cast<size_t>(slabs));
    bad_.resize(static_cast<size_t>(slabs));
    largest_.resize(static_cast<size_t>(slabs));

    // Up to three tries: unchecked; checked if a row was not finite; scaled if the magnitudes
    // call for it (each try makes the slabs' sums and partials anew).
    double scale = 1.0;
    bool checked = false;
    for (;;) {
      parallel_for(slabs, [&](int64_t slab, int worker) { centre_slab(r0, b, slab, k, scale, checked, worker); });
      int64_t bad = 0;
      for (int64_t s = 0; s < slabs; ++s) bad += bad_[s];
      if (bad && !checked) {
        checked = true;
        continue;
      }
      for (int64_t s = 0; s < slabs; ++s) {
        if (bad_[s] && c_.nan_policy == NanPolicy::kRaise) return nonfinite_at(r0 + first_bad_[s]);
      }
      const double largest = *std::max_element(largest_.begin(), largest_.end());
      const double wanted = scale_for<Z>(largest);
      if (wanted == scale) {
        c_.skipped_rows += bad;
        break;
      }
      scale = wanted;  // extreme magnitudes: make Z again, scaled
    }

    for (int64_t slot = 0; slot < k; ++slot) c_.journal.prepare(c_.slot_class[slot]);
    correction_.assign(static_cast<size_t>(k * ld_), Acc(0));
    constexpr int64_t kSlotsPerTask = 8;
    parallel_for((k + kSlotsPerTask - 1) / kSlotsPerTask, [&](int64_t task, int) {
      std::vector<double> t(static_cast<size_t>(dim_)), q(diag ? static_cast<size_t>(dim_) : 0);
      const int64_t end = std::min(k, (task + 1) * kSlotsPerTask);
      for (int64_t slot = task * kSlotsPerTask; slot < end; ++slot) commit_slot(slot, k, slabs, scale, t, q);
    });

    c_.prepare_gram(scale);
    if (!gram_in_pass(dim_)) c_.gram.compute_partials(z_.data(), b);
    c_.finish_gram(slabs, correction_.data(), k, b, last);
    return {};
  }

 private:
  // Step 1 for one slab. Unchecked (the first try): every row is centred at once and a row
  // holding NaN/Inf shows as a non-finite |v|^2, which sends the block back for a checked pass
  // (each row looked at before it is used). Its sums are then polluted, but nothing of the
  // block has been committed yet.
  void centre_slab(int64_t r0, int64_t b, int64_t slab, int64_t k, double scale, bool checked, int worker) {
    const bool diag = !sq_.empty();
    if (diag) {
      scale == 1.0 ? centre_slab_as<true, false>(r0, b, slab, k, scale, checked, worker)
                   : centre_slab_as<true, true>(r0, b, slab, k, scale, checked, worker);
    } else {
      scale == 1.0 ? centre_slab_as<false, false>(r0, b, slab, k, scale, checked, worker)
                   : centre_slab_as<false, true>(r0, b, slab, k, scale, checked, worker);
    }
  }

  // v = x - mu into Z (times scale), the slot's sum of v (and of v_j^2); returns |v|^2.
  template <bool kDiag, bool kScaled>
  static double centre_row(const W* x, const double* mu, ZRow<Z> z, double* sum, double* sq, double scale,
                           int64_t dim) {
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<W, float> && std::is_same_v<Z, float> && !kDiag && !kScaled) {
      return centre_row_avx512(x, mu, z.p, sum, dim);
    }
#endif
    double norm = 0.0;
#pragma omp simd reduction(+ : norm)
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(x[j]) - mu[j];
      z.set(j, kScaled ? v * scale : v);
      sum[j] += v;
      if constexpr (kDiag) sq[j] += v * v;
      norm += v * v;
    }
    return norm;
  }

#if defined(__AVX512F__)
  // The common case (float rows, float Z, no per-class diagonal, no scale) written out: GCC's
  // version of the loop above spills its reduction through the stack on every row.
  static double centre_row_avx512(const float* x, const double* mu, float* z, double* sum, int64_t dim) {
    __m512d n0 = _mm512_setzero_pd(), n1 = _mm512_setzero_pd();
    int64_t j = 0;
    for (; j + 16 <= dim; j += 16) {
      const __m512 xf = _mm512_loadu_ps(x + j);
      const __m512d v0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xf)), _mm512_loadu_pd(mu + j));
      const __m512d v1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1))),
                                       _mm512_loadu_pd(mu + j + 8));
      _mm256_storeu_ps(z + j, _mm512_cvtpd_ps(v0));
      _mm256_storeu_ps(z + j + 8, _mm512_cvtpd_ps(v1));
      _mm512_storeu_pd(sum + j, _mm512_add_pd(_mm512_loadu_pd(sum + j), v0));
      _mm512_storeu_pd(sum + j + 8, _mm512_add_pd(_mm512_loadu_pd(sum + j + 8), v1));
      n0 = _mm512_fmadd_pd(v0, v0, n0);
      n1 = _mm512_fmadd_pd(v1, v1, n1);
    }
    double norm = _mm512_reduce_add_pd(_mm512_add_pd(n0, n1));
    for (; j < dim; ++j) {
      const double v = static_cast<double>(x[j]) - mu[j];
      z[j] = static_cast<float>(v);
      sum[j] += v;
      norm += v * v;
    }
    return norm;
  }
#endif

  template <bool kDiag, bool kScaled>
  void centre_slab_as(int64_t r0, int64_t b, int64_t slab, int64_t k, double scale, bool checked, int worker) {
    const int64_t dim = dim_;
    double* sums = sums_.data() + slab * k * dim;
    double* sq = kDiag ? sq_.data() + slab * k * dim : nullptr;
    double* norms = norms_.data() + slab * k;
    int64_t* counts = counts_.data() + slab * k;
    std::fill_n(sums, k * dim, 0.0);
    if (sq) std::fill_n(sq, k * dim, 0.0);
    std::fill_n(norms, k, 0.0);
    std::fill_n(counts, k, 0);
    int64_t first_bad = -1;
    int64_t bad = 0;
    double largest = 0.0;
    RowReader<In>& reader = readers_[worker];
    const int64_t i0 = slab * kGramSlabRows;
    const int64_t i1 = std::min(b, i0 + kGramSlabRows);
    const bool in_pass = gram_in_pass(dim);
    Z* zbuf = in_pass ? chunks_[worker].data() : z_.data();
    const size_t row_bytes = static_cast<size_t>(dim) * sizeof(In);
    for (int64_t c0 = i0; c0 < i1; c0 += kPassChunkRows) {
      const int64_t c1 = std::min(i1, c0 + kPassChunkRows);
      const int64_t base = in_pass ? c0 : 0;  // row of zbuf's first line
      for (int64_t i = c0; i < c1; ++i) {
        // The next chunk's rows arrive while this chunk's Gram runs.
        if (i + kPassChunkRows < i1) prefetch_row(c_.row(r0 + i + kPassChunkRows), row_bytes);
        const ZRow<Z> z = z_row(zbuf, ld_, i - base);
        const W* x = reader.load(c_.row(r0 + i), dim);
        const int32_t slot = c_.row_slot[i];
        const double* mu = c_.s.means + c_.slot_class[slot] * dim;
        double* sum = sums + static_cast<int64_t>(slot) * dim;
        double* sqs = kDiag ? sq + static_cast<int64_t>(slot) * dim : nullptr;
        double norm;
        if (checked) {
          norm = sum_sq_diff(x, mu, dim);
          if (!finite_by_norm(norm, x, dim)) {
            if (first_bad < 0) first_bad = i;
            ++bad;
            zero_z_row(zbuf, ld_, i - base, dim);
            continue;
          }
          centre_row<kDiag, kScaled>(x, mu, z, sum, sqs, scale, dim);
        } else {
          norm = centre_row<kDiag, kScaled>(x, mu, z, sum, sqs, scale, dim);
          if (!(norm <= std::numeric_limits<double>::max())) {
            first_bad = i;  // not necessarily a bad row (float64 squares may overflow): check
            bad = 1;
            break;
          }
        }
        norms[slot] += norm;
        ++counts[slot];
        largest = std::max(largest, norm);
      }
      if (bad && !checked) break;
      if (in_pass) {
        pad_z_rows(zbuf, ld_, c1 - c0, dim);
        c_.gram.add_to_partial(slab, zbuf, c1 - c0, c0 == i0);
      }
    }
    if (!in_pass && i1 == b) pad_z_rows(zbuf, ld_, b, dim);
    first_bad_[slab] = first_bad;
    bad_[slab] = bad;
    largest_[slab] = std::sqrt(largest);  // >= the largest |v| of the slab
  }

  // Step 2 for one slot: d = (sum v) / m, n' = n + m; mu += (m / n') d,
  // tr += sum |v|^2 - (m^2 / n') |d|^2, q_j += sum v_j^2 - (m^2 / n') d_j^2 (DESIGN.md section 3).
  void commit_slot(int64_t slot, int64_t k, int64_t slabs, double scale, std::vector<double>& t,
                   std::vector<double>& q) {
    const int64_t dim = dim_;
    std::fill(t.begin(), t.end(), 0.0);
    std::fill(q.begin(), q.end(), 0.0);
    int64_t m = 0;
    double norm = 0.0;
    for (int64_t s = 0; s < slabs; ++s) {
      const double* sum = sums_.data() + (s * k + slot) * dim;
      for (int64_t j = 0; j < dim; ++j) t[j] += sum[j];
      if (!q.empty()) {
        const double* sq = sq_.data() + (s * k + slot) * dim;
        for (int64_t j = 0; j < dim; ++j) q[j] += sq[j];
      }
      m += counts_[s * k + slot];
      norm += norms_[s * k + slot];
    }
    if (m == 0) return;
    const int64_t c = c_.slot_class[slot];
    c_.journal.save(c);
    const int64_t n = c_.s.counts[c];
    const double n_new = static_cast<double>(n + m);
    const double coef = static_cast<double>(m) * static_cast<double>(m) / n_new;
    const double root = static_cast<double>(m) / std::sqrt(n_new) * scale;
    const double inv_m = 1.0 / static_cast<double>(m);
    const double step = static_cast<double>(m) / n_new;
    double* mu = c_.s.means + c * dim;
    double* qc = c_.s.class_diag ? c_.s.class_diag + c * dim : nullptr;
    Acc* r = correction_.data() + slot * ld_;
    double d_norm2 = 0.0;
    for (int64_t j = 0; j < dim; ++j) {
      const double d = t[j] * inv_m;
      r[j] = static_cast<Acc>(root * d);
      d_norm2 += d * d;
      if (qc) qc[j] += q[j] - coef * d * d;
      mu[j] += step * d;
    }
    c_.s.class_scatter[c] += norm - coef * d_norm2;
    c_.s.counts[c] = n + m;
  }

  UpdateContext<In, Z>& c_;
  int64_t dim_;
  int64_t ld_;
  std::vector<RowReader<In>> readers_;
  std::vector<std::vector<Z>> chunks_;
  std::vector<Z> z_;
  std::vector<double> sums_, sq_, norms_;
  std::vector<int64_t> counts_, first_bad_, bad_;
  std::vector<double> largest_;
  std::vector<Acc> correction_;
};

}  // namespace ncfast::cpu
