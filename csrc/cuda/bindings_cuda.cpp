// The CUDA half of ncfast._C: pointer-level functions over device buffers. Compiled only when
// the build found nvcc (NCFAST_WITH_CUDA); registered into the module by bindings.cpp.
// Python (ncfast/_cuda.py) validates inputs, allocates outputs and scratch with torch and
// passes data_ptr() values and the current stream's handle.
#include "bindings_cuda.h"

#include <pybind11/pybind11.h>

#include <cstdint>

#include "../core/class_stats.h"
#include "class_stats_cuda.h"
#include "cuda_info.h"
#include "tiling.h"

namespace py = pybind11;

namespace ncfast::cuda {
namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

UpdateShape make_shape(int64_t rows, int64_t dim, int64_t num_classes, int32_t feature_dtype,
                       int32_t nan_policy, int32_t precision, int64_t chunk_rows) {
  UpdateShape shape;
  shape.rows = rows;
  shape.dim = dim;
  shape.num_classes = num_classes;
  shape.feature_dtype = static_cast<DType>(feature_dtype);
  shape.nan_policy = static_cast<NanPolicy>(nan_policy);
  shape.precision = static_cast<Precision>(precision);
  shape.chunk_rows = chunk_rows;
  return shape;
}

void update_class_stats_cuda(uintptr_t counts, uintptr_t means, uintptr_t scatter,
                             uintptr_t class_scatter, uintptr_t class_diag, int64_t num_classes,
                             int64_t dim, uintptr_t features, int32_t feature_dtype, int64_t rows,
                             int64_t row_stride, uintptr_t labels, int32_t label_dtype,
                             int32_t nan_policy, int32_t precision, int64_t chunk_rows,
                             uintptr_t scratch, int64_t scratch_size, uintptr_t status,
                             uintptr_t stream) {
  StatsView stats;
  stats.num_classes = num_classes;
  stats.dim = dim;
  stats.counts = as_ptr<int64_t>(counts);
  stats.means = as_ptr<double>(means);
  stats.scatter = as_ptr<double>(scatter);
  stats.class_scatter = as_ptr<double>(class_scatter);
  stats.class_diag = as_ptr<double>(class_diag);

  BatchView batch;
  batch.features = as_ptr<const void>(features);
  batch.feature_dtype = static_cast<DType>(feature_dtype);
  batch.rows = rows;
  batch.row_stride = row_stride;
  batch.labels = as_ptr<const void>(labels);
  batch.label_dtype = static_cast<DType>(label_dtype);

  py::gil_scoped_release no_gil;
  update_class_stats(stats, batch, static_cast<NanPolicy>(nan_policy),
                     static_cast<Precision>(precision), chunk_rows, as_ptr<void>(scratch),
                     scratch_size, as_ptr<long long>(status), as_ptr<void>(stream));
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("update_class_stats_cuda", &update_class_stats_cuda,
        "Enqueues a chunk update on a CUDA stream (no host sync; errors go to the status buffer).");
  m.def(
      "cuda_scratch_bytes",
      [](int64_t rows, int64_t dim, int64_t num_classes, int32_t feature_dtype, int32_t nan_policy,
         int32_t precision, int64_t chunk_rows) {
        const UpdateShape shape =
            make_shape(rows, dim, num_classes, feature_dtype, nan_policy, precision, chunk_rows);
        py::gil_scoped_release no_gil;
        return scratch_bytes(shape);
      },
      "Device scratch bytes update_class_stats_cuda needs (queries the current device).");
  m.def(
      "cuda_default_chunk_rows",
      [](int64_t rows, int64_t dim, int64_t num_classes, int32_t feature_dtype) {
        return default_chunk_rows(make_shape(rows, dim, num_classes, feature_dtype, 0, 0, 0));
      },
      "Rows per chunk of the CUDA update when chunk_rows <= 0.");
  m.def("cuda_device_count", &device_count, "Visible CUDA devices; 0 without a driver or GPU.");
  // Launch geometry, exposed for the CPU-side unit tests.
  m.def("_cuda_tile_pair", [](int64_t t, int64_t nb) {
    int bi = 0, bj = 0;
    tile_pair(t, nb, &bi, &bj);
    return py::make_tuple(bi, bj);
  });
  m.def("_cuda_row_split", [](int64_t rows, int64_t tile_pairs, int sm_count, int64_t row_step) {
    const RowSplit split = plan_row_split(rows, tile_pairs, sm_count, row_step);
    return py::make_tuple(split.rows_per_split, split.splits);
  });
}

}  // namespace ncfast::cuda
