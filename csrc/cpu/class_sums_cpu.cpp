// Each task owns a column range [j0, j1) and walks every row of the block, adding its slice
// into the slot's float64 sum row: reads are the block (cache-resident), writes never race.
#include "class_sums_cpu.h"

#include <algorithm>

#include "parallel.h"
#include "widen.h"

namespace ncfast::cpu {
namespace {

template <typename In>
void class_sums_impl(const In* x, int64_t rows, int64_t dim, int64_t row_stride,
                     const int32_t* row_slot, const uint8_t* keep, int64_t num_slots,
                     double* sums) {
  std::fill(sums, sums + num_slots * dim, 0.0);
  const int tasks = column_tasks(dim);
#pragma omp parallel
  {
    RowLoader<In> loader(dim);
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < tasks; ++task) {
      const ColumnRange cols = column_range(task, tasks, dim);
      const int64_t width = cols.end - cols.begin;
      for (int64_t i = 0; i < rows; ++i) {
        if (!keep[i]) continue;
        const Widened<In>* row = loader.load(x + i * row_stride + cols.begin, width);
        double* out = sums + static_cast<int64_t>(row_slot[i]) * dim + cols.begin;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) out[j] += static_cast<double>(row[j]);
      }
    }
  }
}

}  // namespace

void class_sums(const void* x, DType dtype, int64_t rows, int64_t dim, int64_t row_stride,
                const int32_t* row_slot, const uint8_t* keep, int64_t num_slots, double* sums) {
  dispatch_float_dtype(dtype, [&](auto tag) {
    using In = decltype(tag);
    class_sums_impl(static_cast<const In*>(x), rows, dim, row_stride, row_slot, keep, num_slots,
                    sums);
  });
}

}  // namespace ncfast::cpu
