#include "central_moments_cpu.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "row_access.h"
#include "thread_pool.h"

namespace ncfast::cpu {
namespace {

// Rows per task: enough to amortise a task's start, few enough to spread a chunk-sized batch
// over the threads; the split is a function of the shape alone.
constexpr int64_t kChunkRows = 2048;

template <typename In>
double moments(const In* x, int64_t rows, int64_t dim, int64_t stride, const double* centre, double* third) {
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const bool aligned = is_aligned(x, alignof(In));
  std::vector<double> fourth_part(static_cast<size_t>(chunks), 0.0);
  std::vector<double> third_part(static_cast<size_t>(chunks * dim), 0.0);
  std::vector<std::vector<double>> centred(static_cast<size_t>(num_threads()),
                                           std::vector<double>(static_cast<size_t>(dim)));
  parallel_for(chunks, [&](int64_t chunk, int worker) {
    RowReader<In> reader(dim, aligned);
    double* z = centred[static_cast<size_t>(worker)].data();
    double* t = third_part.data() + chunk * dim;
    double f = 0.0;
    const int64_t end = std::min(rows, (chunk + 1) * kChunkRows);
    for (int64_t i = chunk * kChunkRows; i < end; ++i) {
      const Widened<In>* __restrict row = reader.load(x + i * stride, dim);
      const double* __restrict c = centre;
      double* __restrict zr = z;
      double q = 0.0;
#pragma omp simd reduction(+ : q)
      for (int64_t j = 0; j < dim; ++j) {
        const double v = static_cast<double>(row[j]) - c[j];
        zr[j] = v;
        q += v * v;
      }
      f += q * q;
      double* __restrict tr = t;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) tr[j] += q * zr[j];
    }
    fourth_part[static_cast<size_t>(chunk)] = f;
  });
  double fourth = 0.0;
  std::fill(third, third + dim, 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {  // in chunk order: the same sum for any thread count
    fourth += fourth_part[static_cast<size_t>(chunk)];
    const double* t = third_part.data() + chunk * dim;
    for (int64_t j = 0; j < dim; ++j) third[j] += t[j];
  }
  return fourth;
}

}  // namespace

double central_moments_cpu(const void* x, int64_t rows, int64_t dim, int64_t row_stride, DType dtype,
                           const double* centre, double* third) {
  if (rows < 0 || dim < 1 || row_stride < dim) throw std::invalid_argument("central_moments_cpu: bad shape");
  switch (dtype) {
    case DType::kFloat32:
      return moments(static_cast<const float*>(x), rows, dim, row_stride, centre, third);
    case DType::kFloat64:
      return moments(static_cast<const double*>(x), rows, dim, row_stride, centre, third);
    case DType::kFloat16:
      return moments(static_cast<const Half*>(x), rows, dim, row_stride, centre, third);
    case DType::kBFloat16:
      return moments(static_cast<const BFloat16*>(x), rows, dim, row_stride, centre, third);
    default:
      throw std::invalid_argument("central_moments_cpu: features must be float32, float64, float16 or bfloat16");
  }
}

}  // namespace ncfast::cpu
