// Element types accepted by the core and the scalar loads that widen them.
// The codes are shared with Python (ncfast/_dtypes.py): keep both in step.
#pragma once

#include <cstdint>
#include <cstring>

namespace ncfast {

enum class DType : int32_t {
  kFloat32 = 0,
  kFloat64 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kInt32 = 4,
  kInt64 = 5,
};

// IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN included).
// Branch-free so that loops over rows vectorise: the exponent and mantissa bits moved into
// place read as a float 2^-112 times the value (a float32 denormal for a half subnormal), and
// one exact multiply by 2^112 rebiases; inf/NaN keep their payload with the top exponent.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t magnitude = static_cast<uint32_t>(h & 0x7fffu) << 13;
  float scaled;
  std::memcpy(&scaled, &magnitude, sizeof(scaled));
  scaled *= 0x1p112f;
  uint32_t bits;
  std::memcpy(&bits, &scaled, sizeof(bits));
  bits = magnitude >= (0x7c00u << 13) ? (0x7f800000u | magnitude) : bits;
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// bfloat16 is the top half of a binary32: widening is a shift.
inline float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// Storage tags so kernels can be templated over the input element type.
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline double to_double(float v) { return v; }
inline double to_double(double v) { return v; }
inline double to_double(Half v) { return half_to_float(v.bits); }
inline double to_double(BFloat16 v) { return bfloat16_to_float(v.bits); }

// Calls fn(T{}) with T the storage type of `dtype`; returns false for an unknown code.
template <typename Fn>
bool dispatch_float_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); return true;
    case DType::kFloat64: fn(double{}); return true;
    case DType::kFloat16: fn(Half{}); return true;
    case DType::kBFloat16: fn(BFloat16{}); return true;
    default: return false;
  }
}

}  // namespace ncfast
