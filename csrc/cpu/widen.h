// Row loads for the element-wise passes: float and double rows are used in place; float16 and
// bfloat16 rows are widened to float32 into a small per-thread buffer first. GCC does not
// vectorise scalar half conversions, so the F16C instruction (8 halves per vcvtph2ps) is
// called directly when the build targets it.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "../core/dtype.h"

namespace ncfast::cpu {

// float for every input except double.
template <typename In>
using Widened = std::conditional_t<std::is_same_v<In, double>, double, float>;

inline void widen(const Half* in, float* out, int64_t n) {
  int64_t j = 0;
#if defined(__F16C__) && defined(__AVX__)
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + j));
    _mm256_storeu_ps(out + j, _mm256_cvtph_ps(h));
  }
#endif
  for (; j < n; ++j) out[j] = half_to_float(in[j].bits);
}

inline void widen(const BFloat16* in, float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = bfloat16_to_float(in[j].bits);
}

// RowLoader<In>::load(row, n) gives the first n elements of `row` as Widened<In>.
template <typename In>
class RowLoader {
 public:
  explicit RowLoader(int64_t n) {
    if constexpr (!std::is_same_v<In, Widened<In>>) buffer_.resize(static_cast<size_t>(n));
  }

  const Widened<In>* load(const In* row, int64_t n) {
    if constexpr (std::is_same_v<In, Widened<In>>) {
      return row;
    } else {
      widen(row, buffer_.data(), n);
      return buffer_.data();
    }
  }

 private:
  std::vector<float> buffer_;
};

}  // namespace ncfast::cpu
