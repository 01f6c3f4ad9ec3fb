// Chunk update of DESIGN.md section 3, block by block. Each block of rows takes one of two
// paths (both exact; they differ in what they cost):
// - fused (fused_path.h): every class of the block has rows already and there are few of
//   them: one pass checks, centres on the running means and sums, and a rank-k correction
//   (k classes, at most 1/32 of the block's rows) fixes W;
// - grouped (grouped_path.h): otherwise: rows sorted by class, each class centred on the
//   shift that needs no correction; with many classes the sort spans a window of many
//   blocks, so per-class work happens about once per window.
// Labels are checked for the whole call first; NaN/Inf rows in the pass over each block,
// before the block changes anything; a later block's error rolls back the earlier ones.
// Every split of the work is a function of the shapes, never of the thread count.
#include "class_stats_cpu.h"

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

#include "fused_path.h"
#include "gram_kernels.h"
#include "grouped_path.h"
#include "sym_gram_cpu.h"
#include "thread_pool.h"
#include "update_context.h"

namespace ncfast::cpu {
namespace {

constexpr int64_t kTargetBlockBytes = int64_t{8} << 20;  // of Z
constexpr int64_t kMinBlockRows = 256;
constexpr int64_t kMaxBlockRows = int64_t{1} << 16;
// The fused path applies while the correction adds at most 1/kFusedShare of the Gram's rows...
constexpr int64_t kFusedShare = 32;
// ... and its per-slab sums (slabs x classes x D float64) stay small.
constexpr int64_t kMaxFusedSumEntries = int64_t{1} << 18;
// A block with more than 1/kManyShare as many classes as rows starts a class-grouped window
// over the following rows of the call too.
constexpr int64_t kManyShare = 8;
constexpr int64_t kLabelChunk = int64_t{1} << 16;

bool is_16bit(DType dtype) { return dtype == DType::kFloat16 || dtype == DType::kBFloat16; }

int64_t z_bytes(DType dtype, CpuPrecision precision) {
  if (bf16_gram_for(dtype, precision)) return 2;
  return dtype == DType::kFloat64 ? 8 : 4;
}

UpdateResult bad_label(int64_t row, int64_t label) {
  UpdateResult r;
  r.status = UpdateStatus::kLabelOutOfRange;
  r.row = row;
  r.label = label;
  return r;
}

// The first row whose label is outside [0, K), or -1.
int64_t first_bad_label(const BatchView& batch, int64_t num_classes) {
  const int64_t chunks = (batch.rows + kLabelChunk - 1) / kLabelChunk;
  std::vector<int64_t> first(static_cast<size_t>(chunks), -1);
  parallel_for(chunks, [&](int64_t chunk, int) {
    const int64_t end = std::min(batch.rows, (chunk + 1) * kLabelChunk);
    for (int64_t i = chunk * kLabelChunk; i < end; ++i) {
      const int64_t c = read_label(batch.labels, batch.label_dtype, i);
      if (c < 0 || c >= num_classes) {
        first[chunk] = i;
        return;
      }
    }
  });
  for (int64_t f : first) {
    if (f >= 0) return f;
  }
  return -1;
}

template <typename In, typename Z>
UpdateResult run_update(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                        int64_t block_rows, BlockPath path) {
  const int64_t rows = batch.rows;
  const int64_t bad = first_bad_label(batch, stats.num_classes);
  if (bad >= 0) return bad_label(bad, read_label(batch.labels, batch.label_dtype, bad));

  UpdateContext<In, Z> ctx(stats, batch, nan_policy, block_rows, rows > block_rows);
  std::optional<FusedBlock<In, Z>> fused;
  std::optional<GroupedWindow<In, Z>> grouped;
  const int64_t diag_factor = stats.class_diag ? 2 : 1;
  for (int64_t r0 = 0; r0 < rows;) {
    const int64_t b = std::min(block_rows, rows - r0);
    const bool all_seen = ctx.assign_slots(r0, b);
    const int64_t k = static_cast<int64_t>(ctx.slot_class.size());
    const int64_t slabs = GramAccumulator<Z>::slabs(b);
    bool use_fused = all_seen && path != BlockPath::kGroupedBlocks && path != BlockPath::kGroupedWindows;
    if (path == BlockPath::kAuto) {
      use_fused = use_fused && k * kFusedShare <= b &&
                  slabs * k * stats.dim * diag_factor <= kMaxFusedSumEntries;
    }
    UpdateResult status;
    int64_t n = b;
    if (use_fused) {
      if (!fused) fused.emplace(ctx);
      status = fused->run(r0, b, r0 + b == rows);
    } else {
      const bool window = path == BlockPath::kGroupedWindows ||
                          (path == BlockPath::kAuto && k * kManyShare > b);
      if (window) n = std::min(rows - r0, std::max(b, kMaxWindowRows));
      if (!grouped) grouped.emplace(ctx);
      status = grouped->run(r0, n, r0 + n == rows);
    }
    if (status.status != UpdateStatus::kOk) {
      ctx.journal.restore();
      return status;
    }
    r0 += n;
  }
  mirror_upper(stats.scatter, stats.dim);  // W is kept whole for its readers
  UpdateResult result;
  result.skipped_rows = ctx.skipped_rows;
  return result;
}

}  // namespace

int bf16_gram_for(DType feature_dtype, CpuPrecision precision) {
  if (precision != CpuPrecision::kFast || !is_16bit(feature_dtype)) return 0;
  return static_cast<int>(bf16_gram_choice());
}

int64_t default_block_rows(int64_t dim, DType feature_dtype, CpuPrecision precision) {
  const int64_t row_bytes = std::max<int64_t>(1, dim * z_bytes(feature_dtype, precision));
  return std::clamp(kTargetBlockBytes / row_bytes, kMinBlockRows, kMaxBlockRows);
}

UpdateResult update_class_stats(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                                int64_t block_rows, CpuPrecision precision, BlockPath path) {
  if (batch.rows <= 0) return {};
  if (block_rows <= 0) block_rows = default_block_rows(stats.dim, batch.feature_dtype, precision);
  block_rows = std::min(block_rows, batch.rows);
  const int bf16 = bf16_gram_for(batch.feature_dtype, precision);
  UpdateResult result;
  result.status = UpdateStatus::kBadDtype;
  dispatch_float_dtype(batch.feature_dtype, [&](auto tag) {
    using In = decltype(tag);
    if constexpr (std::is_same_v<In, double>) {
      result = run_update<In, double>(stats, batch, nan_policy, block_rows, path);
    } else if constexpr (std::is_same_v<In, float>) {
      result = run_update<In, float>(stats, batch, nan_policy, block_rows, path);
    } else {
      if (bf16 == static_cast<int>(Bf16Gram::kOwnKernel)) {
        result = run_update<In, Bf16Pair>(stats, batch, nan_policy, block_rows, path);
      } else if (bf16 == static_cast<int>(Bf16Gram::kLibrary)) {
        result = run_update<In, Bf16Row>(stats, batch, nan_policy, block_rows, path);
      } else {
        result = run_update<In, float>(stats, batch, nan_policy, block_rows, path);
      }
    }
  });
  return result;
}

}  // namespace ncfast::cpu
