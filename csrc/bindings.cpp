// ncfast._C: plain functions over raw pointers, shapes and dtype codes. No libtorch here:
// Python validates inputs, owns every buffer and passes data_ptr() values in.
#include <pybind11/pybind11.h>

#include <cblas.h>

#include <stdexcept>
#include <string>

#include "core/class_stats.h"
#include "cpu/class_stats_cpu.h"
#include "cpu/sym_gram_cpu.h"

#ifdef NCFAST_WITH_CUDA
#include "cuda/bindings_cuda.h"
#include "cuda/cuda_info.h"
#endif

namespace py = pybind11;

namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

py::tuple update_class_stats_cpu(uintptr_t counts, uintptr_t means, uintptr_t scatter,
                                 uintptr_t class_scatter, uintptr_t class_diag,
                                 int64_t num_classes, int64_t dim, uintptr_t features,
                                 int32_t feature_dtype, int64_t rows, int64_t row_stride,
                                 uintptr_t labels, int32_t label_dtype, int32_t nan_policy,
                                 int64_t block_rows) {
  ncfast::StatsView stats;
  stats.num_classes = num_classes;
  stats.dim = dim;
  stats.counts = as_ptr<int64_t>(counts);
  stats.means = as_ptr<double>(means);
  stats.scatter = as_ptr<double>(scatter);
  stats.class_scatter = as_ptr<double>(class_scatter);
  stats.class_diag = as_ptr<double>(class_diag);

  ncfast::BatchView batch;
  batch.features = as_ptr<const void>(features);
  batch.feature_dtype = static_cast<ncfast::DType>(feature_dtype);
  batch.rows = rows;
  batch.row_stride = row_stride;
  batch.labels = as_ptr<const void>(labels);
  batch.label_dtype = static_cast<ncfast::DType>(label_dtype);

  ncfast::UpdateResult result;
  {
    py::gil_scoped_release no_gil;
    result = ncfast::cpu::update_class_stats(stats, batch,
                                             static_cast<ncfast::NanPolicy>(nan_policy),
                                             block_rows);
  }
  return py::make_tuple(static_cast<int>(result.status), result.row, result.label,
                        result.skipped_rows);
}

// The instruction-set extensions the compiler was allowed to use (from its predefined macros,
// so the answer follows -march whatever its value was).
py::list compiled_isa() {
  py::list isa;
#ifdef __SSE4_2__
  isa.append("sse4.2");
#endif
#ifdef __AVX__
  isa.append("avx");
#endif
#ifdef __AVX2__
  isa.append("avx2");
#endif
#ifdef __FMA__
  isa.append("fma");
#endif
#ifdef __F16C__
  isa.append("f16c");
#endif
#ifdef __AVX512F__
  isa.append("avx512f");
#endif
#ifdef __AVX512BF16__
  isa.append("avx512bf16");
#endif
#ifdef __ARM_NEON
  isa.append("neon");
#endif
  return isa;
}

py::dict build_info() {
  py::dict info;
  info["cxx_flags"] = std::string(NCFAST_CXX_FLAGS);
  info["isa"] = compiled_isa();
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<int>(_OPENMP);
#else
  info["openmp"] = false;
#endif
  info["blas"] = std::string(scipy_openblas_get_config());
  info["num_threads"] = ncfast::cpu::num_threads();
#ifdef NCFAST_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(NCFAST_CUDA_ARCHS);
  info["cuda_runtime_version"] = ncfast::cuda::runtime_version();
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ncfast core kernels (pointer-level API; use the ncfast package, not this module).";
  // The CPU kernels parallelise with OpenMP themselves and call BLAS from inside each thread.
  scipy_openblas_set_num_threads(1);
  m.def("update_class_stats_cpu", &update_class_stats_cpu);
  m.def("default_block_rows", [](int64_t dim, int32_t dtype) {
    return ncfast::cpu::default_block_rows(dim, static_cast<ncfast::DType>(dtype));
  });
  m.def("build_info", &build_info);
  m.def("get_num_threads", &ncfast::cpu::num_threads);
  m.def("set_num_threads", &ncfast::cpu::set_num_threads);
#ifdef NCFAST_WITH_CUDA
  ncfast::cuda::register_cuda(m);
#endif
  // C(upper) = alpha * Z^T Z + beta * C for a row-major float32/float64 Z (rows x dim, leading
  // dimension ld) and a row-major dim x dim C of the same dtype; entries below the diagonal are
  // neither read nor written, unless fill_lower copies the upper triangle there afterwards.
  // Used by ncfast.nn (VCReg's batch covariance).
  m.def("sym_gram", [](uintptr_t z, int64_t rows, int64_t dim, int64_t ld, int32_t dtype,
                       double alpha, double beta, uintptr_t c, bool fill_lower) {
    if (rows < 0 || dim < 1 || ld < dim) throw std::invalid_argument("sym_gram: bad shape");
    const auto type = static_cast<ncfast::DType>(dtype);
    if (type != ncfast::DType::kFloat32 && type != ncfast::DType::kFloat64) {
      throw std::invalid_argument("sym_gram: dtype must be float32 or float64");
    }
    py::gil_scoped_release no_gil;
    if (type == ncfast::DType::kFloat32) {
      ncfast::cpu::sym_gram_upper(as_ptr<const float>(z), rows, dim, ld, static_cast<float>(alpha),
                                  static_cast<float>(beta), as_ptr<float>(c));
      if (fill_lower) ncfast::cpu::mirror_upper(as_ptr<float>(c), dim);
    } else {
      ncfast::cpu::sym_gram_upper(as_ptr<const double>(z), rows, dim, ld, alpha, beta,
                                  as_ptr<double>(c));
      if (fill_lower) ncfast::cpu::mirror_upper(as_ptr<double>(c), dim);
    }
  });
}
