// Reading the caller's rows and labels. Rows come in as Widened<In> (float for every input
// but double): aligned float and double rows are used in place; 16-bit rows are widened to
// float32 into a per-thread buffer, through the F16C instruction (8 halves per vcvtph2ps)
// when the build targets it, since GCC does not vectorise the scalar conversion. A batch whose
// base address is not a multiple of the element size (a NumPy view at a byte offset) is read
// with memcpy into that buffer first: no misaligned load on any architecture.
#pragma once

#include <cstdint>
#include <cstring>
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

inline bool is_aligned(const void* p, size_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// The i-th label; memcpy because the caller's array may sit at any byte offset.
inline int64_t read_label(const void* labels, DType dtype, int64_t i) {
  if (dtype == DType::kInt32) {
    int32_t v;
    std::memcpy(&v, static_cast<const char*>(labels) + i * 4, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, static_cast<const char*>(labels) + i * 8, 8);
  return v;
}

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

// RowReader<In>::load(row, n) gives the first n elements of `row` as Widened<In>. One reader
// per thread: the returned pointer is valid until its next load.
template <typename In>
class RowReader {
 public:
  RowReader(int64_t n, bool aligned) : aligned_(aligned) {
    if (!in_place()) buffer_.resize(static_cast<size_t>(n));
    if (!aligned_ && !std::is_same_v<In, Widened<In>>) raw_.resize(static_cast<size_t>(n));
  }

  const Widened<In>* load(const In* row, int64_t n) {
    if constexpr (std::is_same_v<In, Widened<In>>) {
      if (aligned_) return row;
      std::memcpy(buffer_.data(), static_cast<const void*>(row), static_cast<size_t>(n) * sizeof(In));
      return buffer_.data();
    } else {
      const In* src = row;
      if (!aligned_) {
        std::memcpy(static_cast<void*>(raw_.data()), static_cast<const void*>(row),
                    static_cast<size_t>(n) * sizeof(In));
        src = raw_.data();
      }
      widen(src, buffer_.data(), n);
      return buffer_.data();
    }
  }

 private:
  bool in_place() const { return std::is_same_v<In, Widened<In>> && aligned_; }

  bool aligned_;
  std::vector<Widened<In>> buffer_;
  std::vector<In> raw_;
};

}  // namespace ncfast::cpu
