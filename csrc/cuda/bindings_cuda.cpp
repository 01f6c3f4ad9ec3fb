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
#include "slab_update_cuda.h"
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

StatsView stats_view(uintptr_t counts, uintptr_t means, uintptr_t scatter, uintptr_t class_scatter,
                     uintptr_t class_diag, int64_t num_classes, int64_t dim) {
  StatsView stats;
  stats.num_classes = num_classes;
  stats.dim = dim;
  stats.counts = as_ptr<int64_t>(counts);
  stats.means = as_ptr<double>(means);
  stats.scatter = as_ptr<double>(scatter);
  stats.class_scatter = as_ptr<double>(class_scatter);
  stats.class_diag = as_ptr<double>(class_diag);
  return stats;
}

BatchView batch_view(uintptr_t features, int32_t feature_dtype, int64_t rows, int64_t row_stride, uintptr_t labels,
                     int32_t label_dtype) {
  BatchView batch;
  batch.features = as_ptr<const void>(features);
  batch.feature_dtype = static_cast<DType>(feature_dtype);
  batch.rows = rows;
  batch.row_stride = row_stride;
  batch.labels = as_ptr<const void>(labels);
  batch.label_dtype = static_cast<DType>(label_dtype);
  return batch;
}

void update_slab_chunk_cuda(uintptr_t counts, uintptr_t means, uintptr_t scatter, uintptr_t class_scatter,
                            uintptr_t class_diag, int64_t num_classes, int64_t dim, uintptr_t features,
                            int32_t feature_dtype, int64_t rows, int64_t row_stride, uintptr_t labels,
                            int32_t label_dtype, int32_t nan_policy, const SlabCall& call, uintptr_t status,
                            uintptr_t stream) {
  const StatsView stats = stats_view(counts, means, scatter, class_scatter, class_diag, num_classes, dim);
  const BatchView batch = batch_view(features, feature_dtype, rows, row_stride, labels, label_dtype);
  py::gil_scoped_release no_gil;
  update_slab_chunk(stats, batch, static_cast<NanPolicy>(nan_policy), call, as_ptr<long long>(status),
                    as_ptr<void>(stream));
}

void register_slab(py::module_& m) {
  py::class_<SlabCall>(m, "SlabCall", "Buffers and layout of one chunk of the CUDA slab path (slab_update_cuda.h).")
      .def(py::init<>())
      .def_readwrite("row0", &SlabCall::row0)
      .def_readwrite("rows", &SlabCall::rows)
      .def_readwrite("chunk_rows", &SlabCall::chunk_rows)
      .def_readwrite("small", &SlabCall::small)
      .def_readwrite("first_chunk", &SlabCall::first_chunk)
      .def_readwrite("prevalidated", &SlabCall::prevalidated)
      .def_readwrite("slab_dtype", &SlabCall::slab_dtype)
      .def_readwrite("tf32", &SlabCall::tf32)
      .def_readwrite("slab_x", &SlabCall::slab_x)
      .def_readwrite("slab_y", &SlabCall::slab_y)
      .def_readwrite("padded_dim", &SlabCall::padded_dim)
      .def_readwrite("ld", &SlabCall::ld)
      .def_readwrite("split_rows", &SlabCall::split_rows)
      .def_readwrite("splits", &SlabCall::splits)
      .def_readwrite("corr_x", &SlabCall::corr_x)
      .def_readwrite("corr_y", &SlabCall::corr_y)
      .def_readwrite("corr_ld", &SlabCall::corr_ld)
      .def_readwrite("corr_split", &SlabCall::corr_split)
      .def_readwrite("corr_sign", &SlabCall::corr_sign)
      .def_readwrite("max_slots", &SlabCall::max_slots)
      .def_readwrite("partial", &SlabCall::partial)
      .def_readwrite("slots", &SlabCall::slots)
      .def_readwrite("slot_stride", &SlabCall::slot_stride)
      .def_readwrite("exps", &SlabCall::exps)
      .def_readwrite("words", &SlabCall::words)
      .def_readwrite("fold_rows", &SlabCall::fold_rows)
      .def_readwrite("add_rows", &SlabCall::add_rows)
      .def_readwrite("scratch", &SlabCall::scratch)
      .def_readwrite("scratch_size", &SlabCall::scratch_size)
      .def_readwrite("slab_elems", &SlabCall::slab_elems)
      .def_readwrite("corr_elems", &SlabCall::corr_elems)
      .def_readwrite("partial_elems", &SlabCall::partial_elems)
      .def_readwrite("exps_elems", &SlabCall::exps_elems);
  m.def("update_slab_chunk_cuda", &update_slab_chunk_cuda,
        "Enqueues one chunk of the slab path on a CUDA stream (no host sync; the GEMMs follow in Python).");
  m.def(
      "slab_scratch_bytes",
      [](int64_t rows, int64_t dim, int64_t num_classes, int32_t feature_dtype, int32_t nan_policy,
         int64_t chunk_rows, bool small, int64_t padded_dim) {
        const UpdateShape shape = make_shape(rows, dim, num_classes, feature_dtype, nan_policy, 0, chunk_rows);
        py::gil_scoped_release no_gil;
        return slab_scratch_bytes(shape, chunk_rows, small, padded_dim);
      },
      "Device scratch bytes of the slab path for chunks of up to chunk_rows rows (queries the device).");
  m.def(
      "fold_slab_partial_cuda",
      [](uintptr_t scatter, int64_t dim, const SlabCall& call, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        fold_slab_partial(as_ptr<double>(scatter), dim, call, as_ptr<void>(stream));
      },
      "Folds the slab path's partial Gram into W and mirrors W's lower triangle (at a read).");
  m.def(
      "slab_exponent_window",
      [](int32_t slab_dtype) {
        int lo = 0, hi = 0;
        slab_exponent_window(static_cast<DType>(slab_dtype), &lo, &hi);
        return py::make_tuple(lo, hi);
      },
      "(lo, hi): the binary exponents of max |z| 2^-e a slab column keeps its scale for.");
  m.attr("slab_small_rows") = kSlabSmallRows;
}

}  // namespace

void register_cuda(py::module_& m) {
  register_slab(m);
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
