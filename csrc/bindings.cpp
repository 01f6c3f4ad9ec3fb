// ncfast._C: plain functions over raw pointers, shapes and dtype codes. No libtorch here:
// Python validates inputs, owns every buffer and passes data_ptr() values in.
#include <pybind11/pybind11.h>

#include <cblas.h>

#include <chrono>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/class_stats.h"
#include "cpu/central_moments_cpu.h"
#include "cpu/class_stats_cpu.h"
#include "cpu/gram_accumulator.h"
#include "cpu/gram_kernels.h"
#include "cpu/sym_gram_cpu.h"
#include "cpu/thread_pool.h"

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
                                 int64_t block_rows, int32_t precision, int32_t path) {
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
    result = ncfast::cpu::update_class_stats(
        stats, batch, static_cast<ncfast::NanPolicy>(nan_policy), block_rows,
        static_cast<ncfast::cpu::CpuPrecision>(precision), static_cast<ncfast::cpu::BlockPath>(path));
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

// Which Gram each input dtype gets on the CPU, per precision: "exact" and "fast" differ only
// for 16-bit inputs on a build and CPU with the bfloat16 kernel.
py::dict cpu_gram_info() {
  using ncfast::DType;
  using ncfast::cpu::CpuPrecision;
  const auto narrow = std::string(ncfast::cpu::gram_kernel_name(0, false, 1));
  const auto wide = std::string(ncfast::cpu::gram_kernel_name(0, false, 1 << 20));
  const std::string f32 = narrow + " up to D = " + std::to_string(ncfast::cpu::tiled_gram_max_dim()) +
                          ", " + wide + " above";
  py::dict gram;
  const std::pair<const char*, DType> dtypes[] = {{"float32", DType::kFloat32},
                                                  {"float64", DType::kFloat64},
                                                  {"float16", DType::kFloat16},
                                                  {"bfloat16", DType::kBFloat16}};
  for (const auto& [name, dtype] : dtypes) {
    py::dict modes;
    for (const auto& [mode, precision] :
         {std::pair<const char*, CpuPrecision>{"exact", CpuPrecision::kExact}, {"fast", CpuPrecision::kFast}}) {
      if (dtype == DType::kFloat64) {
        modes[mode] = std::string(ncfast::cpu::gram_kernel_name(0, true, 0));
      } else if (const int bf16 = ncfast::cpu::bf16_gram_for(dtype, precision)) {
        modes[mode] = std::string(ncfast::cpu::gram_kernel_name(bf16, false, 0));
      } else {
        modes[mode] = f32;
      }
    }
    gram[name] = modes;
  }
  return gram;
}

py::dict build_info() {
  py::dict info;
  info["cxx_flags"] = std::string(NCFAST_CXX_FLAGS);
  info["isa"] = compiled_isa();
  info["openmp"] = false;
  info["threads"] = "ncfast thread pool (spin 50 us, then sleep)";
  info["blas"] = std::string(scipy_openblas_get_config());
  info["num_threads"] = ncfast::cpu::num_threads();
  info["cpu_gram"] = cpu_gram_info();
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

// Seconds for `blocks` blocks of `block_rows` random rows through the block Gram the CPU update
// runs (GramAccumulator: slabs x bands, the tree sum, the fold into a float64 W every 16384
// rows or 8 blocks): the benchmarks' "symmetric Gram alone". kind: 0 float32, 1 float64,
// 2 bfloat16 row pairs.
template <typename Z>
double time_block_gram(int64_t block_rows, int64_t dim, int64_t blocks) {
  using Acc = ncfast::cpu::GramAcc<Z>;
  ncfast::cpu::GramAccumulator<Z> gram(dim, block_rows);
  const bool pairs = std::is_same_v<Z, ncfast::cpu::Bf16Pair>;
  const int64_t lines = pairs ? (block_rows + 1) / 2 : block_rows;
  std::vector<Z> z(static_cast<size_t>(lines * gram.ld()));
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto& v : z) {
    if constexpr (std::is_same_v<Z, ncfast::cpu::Bf16Pair>) {
      const float a = normal(gen), b = normal(gen);
      uint32_t ua, ub;
      std::memcpy(&ua, &a, 4);
      std::memcpy(&ub, &b, 4);
      v.bits = (ua >> 16) | (ub & 0xffff0000u);
    } else {
      v = static_cast<Acc>(normal(gen));
    }
  }
  std::vector<double> w(static_cast<size_t>(dim * dim), 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t pending = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    gram.compute_partials(z.data(), block_rows);
    pending += block_rows;
    const bool fold = b + 1 == blocks || pending >= 16384 || (b + 1) % 8 == 0;
    gram.reduce(gram.slabs(block_rows), nullptr, 0, fold ? w.data() : nullptr, 1.0);
    if (fold) pending = 0;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ncfast core kernels (pointer-level API; use the ncfast package, not this module).";
  // The CPU kernels split their work over ncfast's own threads and call BLAS from inside each.
  scipy_openblas_set_num_threads(1);
  m.def("update_class_stats_cpu", &update_class_stats_cpu);
  m.def("default_block_rows", [](int64_t dim, int32_t dtype, int32_t precision) {
    return ncfast::cpu::default_block_rows(dim, static_cast<ncfast::DType>(dtype),
                                           static_cast<ncfast::cpu::CpuPrecision>(precision));
  });
  // (sum ||x - c||^4, and sum ||x - c||^2 (x - c) written to `third`) over a batch of rows: the
  // optional fourth moments' share of a CPU update (ncfast/_moments.py).
  m.def("central_moments_cpu", [](uintptr_t x, int64_t rows, int64_t dim, int64_t row_stride, int32_t dtype,
                                  uintptr_t centre, uintptr_t third) {
    py::gil_scoped_release no_gil;
    return ncfast::cpu::central_moments_cpu(reinterpret_cast<const void*>(x), rows, dim, row_stride,
                                            static_cast<ncfast::DType>(dtype), as_ptr<const double>(centre),
                                            as_ptr<double>(third));
  });
  m.def("build_info", &build_info);
  m.def("get_num_threads", &ncfast::cpu::num_threads);
  m.def("set_num_threads", &ncfast::cpu::set_num_threads);
  m.def("has_bf16_gram", &ncfast::cpu::has_bf16_gram);
  // The fast mode's library GEMM (see gram_kernels.h): addresses found by Python in a loaded
  // library; 0 unregisters.
  m.def("set_library_bf16_gemm", [](uintptr_t gemm, uintptr_t set_local_threads) {
    ncfast::cpu::set_library_bf16_gemm(reinterpret_cast<ncfast::cpu::LibraryBf16Gemm>(gemm),
                                       reinterpret_cast<ncfast::cpu::LibrarySetThreads>(set_local_threads));
  });
  m.def("set_bf16_gram_override", &ncfast::cpu::set_bf16_gram_override);
  m.def("set_tiled_gram_max_dim", &ncfast::cpu::set_tiled_gram_max_dim);
  m.def("tiled_gram_max_dim", &ncfast::cpu::tiled_gram_max_dim);
  m.def("bf16_gram_choice", [] { return static_cast<int>(ncfast::cpu::bf16_gram_choice()); });
  m.def("time_block_gram", [](int64_t block_rows, int64_t dim, int kind, int64_t blocks) {
    if (block_rows < 1 || dim < 1 || blocks < 1) throw std::invalid_argument("time_block_gram: bad shape");
    if (kind == 2 && !ncfast::cpu::has_bf16_gram()) {
      throw std::invalid_argument("time_block_gram: this build has no bfloat16 kernel");
    }
    py::gil_scoped_release no_gil;
    if (kind == 1) return time_block_gram<double>(block_rows, dim, blocks);
    if (kind == 2) return time_block_gram<ncfast::cpu::Bf16Pair>(block_rows, dim, blocks);
    return time_block_gram<float>(block_rows, dim, blocks);
  });
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
