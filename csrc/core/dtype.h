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
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {  // inf / NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: renormalise
    exponent = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
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
