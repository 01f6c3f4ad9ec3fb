// What the blocks of one update call share: the views, the Gram accumulator and its pending
// fold, the journal, and the map from classes to the dense slots of a block or window.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/class_stats.h"
#include "gram_accumulator.h"
#include "row_access.h"
#include "thread_pool.h"
#include "update_common.h"

namespace ncfast::cpu {

// G is folded into W once this many rows, or this many blocks, have gone into it (and at the
// end of a call): folding costs a D x D pass, so it is amortised over blocks, while float32 G
// never holds more than this many rows' products, nor sums of more than this many blocks.
constexpr int64_t kFoldRows = 16384;
constexpr int64_t kFoldBlocks = 8;

template <typename In, typename Z>
struct UpdateContext {
  using Acc = GramAcc<Z>;

  UpdateContext(const StatsView& stats, const BatchView& batch_view, NanPolicy policy,
                int64_t block, bool multi_block)
      : s(stats),
        batch(batch_view),
        nan_policy(policy),
        block_rows(block),
        aligned(is_aligned(batch_view.features, alignof(In))),
        gram(stats.dim, block),
        journal(stats, multi_block, batch_view.rows),
        slot_of_class(static_cast<size_t>(stats.num_classes), -1) {}

  const In* row(int64_t r) const { return static_cast<const In*>(batch.features) + r * batch.row_stride; }
  int64_t label(int64_t r) const { return read_label(batch.labels, batch.label_dtype, r); }

  // Dense slots (first appearance order) for rows [r0, r0 + n): row_slot, slot_class,
  // slot_rows (rows of every kind), and whether every class present already has rows.
  bool assign_slots(int64_t r0, int64_t n) {
    for (int64_t c : slot_class) slot_of_class[c] = -1;
    slot_class.clear();
    slot_rows.clear();
    row_slot.resize(static_cast<size_t>(n));
    bool all_seen = true;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = label(r0 + i);
      int32_t slot = slot_of_class[c];
      if (slot < 0) {
        slot = static_cast<int32_t>(slot_class.size());
        slot_of_class[c] = slot;
        slot_class.push_back(c);
        slot_rows.push_back(0);
        all_seen = all_seen && s.counts[c] > 0;
      }
      row_slot[i] = slot;
      ++slot_rows[slot];
    }
    return all_seen;
  }

  // The first row in [from, to) holding NaN or Inf (only on the error path), or -1.
  int64_t first_nonfinite_row(int64_t from, int64_t to) const {
    RowReader<In> reader(s.dim, aligned);
    for (int64_t r = from; r < to; ++r) {
      if (!row_is_finite(reader.load(row(r), s.dim), s.dim)) return r;
    }
    return -1;
  }

  // Before partials made with `scale` join G: a G made with another scale is folded first.
  void prepare_gram(double scale) {
    if (pending_blocks > 0 && scale != pending_scale) {
      gram.reduce(0, nullptr, 0, s.scatter, 1.0 / (pending_scale * pending_scale));
      pending_rows = 0;
      pending_blocks = 0;
    }
    pending_scale = scale;
  }

  // G += the block's partials - R^T R, folded into W when due or when `last`.
  void finish_gram(int64_t slabs, const Acc* r, int64_t r_rows, int64_t rows, bool last) {
    pending_rows += rows;
    ++pending_blocks;
    const bool fold = last || pending_rows >= kFoldRows || pending_blocks >= kFoldBlocks;
    gram.reduce(slabs, r, r_rows, fold ? s.scatter : nullptr,
                1.0 / (pending_scale * pending_scale));
    if (fold) {
      pending_rows = 0;
      pending_blocks = 0;
    }
  }

  const StatsView& s;
  const BatchView& batch;
  NanPolicy nan_policy;
  int64_t block_rows;
  bool aligned;
  GramAccumulator<Z> gram;
  Journal journal;
  int64_t pending_rows = 0;
  int64_t pending_blocks = 0;
  double pending_scale = 1.0;
  int64_t skipped_rows = 0;

  std::vector<int32_t> slot_of_class;
  std::vector<int64_t> slot_class;
  std::vector<int64_t> slot_rows;
  std::vector<int32_t> row_slot;
};

inline UpdateResult nonfinite_at(int64_t row) {
  UpdateResult r;
  r.status = UpdateStatus::kNonFinite;
  r.row = row;
  return r;
}

}  // namespace ncfast::cpu
