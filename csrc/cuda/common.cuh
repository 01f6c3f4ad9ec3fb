// Small pieces shared by the CUDA kernels: error checks, the device status words, element
// types and their widening, vector loads, finiteness tests.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../core/dtype.h"
#include "tiling.h"

namespace ncfast::cuda {

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("ncfast CUDA: ") + what + ": " + cudaGetErrorString(err));
  }
}

// After a launch: configuration errors surface here (no host synchronisation).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// ---------------------------------------------------------------------------------------------
// Device status: int64 words owned by Python (one buffer per statistics object, zero-filled at
// creation). Layout shared with ncfast/_cuda.py: keep both in step.
//
// kCode is sticky: once a batch is rejected, every later update leaves the statistics alone
// until the host has read the status and cleared it.
enum StatusWord : int {
  kCode = 0,            // 0 ok, 1 label out of range, 2 non-finite row (the UpdateStatus codes)
  kErrRow = 1,          // row of the rejected batch that holds the error
  kErrLabel = 2,        // the bad label (kCode == 1)
  kErrCall = 3,         // index of the rejected call, counted since the status was cleared
  kCalls = 4,           // update calls seen since the status was cleared
  kSkippedPending = 5,  // rows dropped under nan_policy="skip" by accepted calls
  kCallBadLabelRow = 8,   // per call: first row with a bad label, kNoRow if none
  kCallNonFiniteRow = 9,  // per call: first row holding NaN/Inf, kNoRow if none
  kCallSkipped = 10,      // per call: rows dropped under nan_policy="skip"
  kStatusWords = 16,
};

constexpr long long kNoRow = LLONG_MAX;

// Every kernel that changes the statistics starts with this test; it reads one word that the
// commit kernel wrote earlier in stream order.
__device__ __forceinline__ bool rejected(const long long* status) {
  return *reinterpret_cast<const volatile long long*>(status + kCode) != 0;
}

// ---------------------------------------------------------------------------------------------
// Element types. Storage types on the device: float, double, __half, __nv_bfloat16.
template <typename T>
struct Widen {
  using Acc = float;  // type of (x - shift) in the float32 paths
};
template <>
struct Widen<double> {
  using Acc = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ bool is_finite(float v) {
  return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}
__device__ __forceinline__ bool is_finite(double v) {
  return (static_cast<unsigned long long>(__double_as_longlong(v)) & 0x7ff0000000000000ull) !=
         0x7ff0000000000000ull;
}

// Rounds a float64 value to the accumulation type (round to nearest).
__device__ __forceinline__ float round_acc(double v, float) { return __double2float_rn(v); }
__device__ __forceinline__ double round_acc(double v, double) { return v; }

// V consecutive elements, aligned so that one load moves all of them.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// V elements starting at p: one vector load when kAligned, else V guarded scalar loads
// (elements at or past `valid` read as zero).
template <typename T, int V, bool kAligned>
__device__ __forceinline__ void load_vec(const T* p, int valid, T (&out)[V]) {
  if constexpr (kAligned) {
    const Vec<T, V> vec = *reinterpret_cast<const Vec<T, V>*>(p);
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = vec.v[v];
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = v < valid ? p[v] : T(0.0f);
  }
}

template <typename Label>
__device__ __forceinline__ long long read_label(const Label* labels, int64_t i) {
  return static_cast<long long>(labels[i]);
}

// Calls fn(T{}) with T the device storage type of a feature dtype.
template <typename Fn>
bool dispatch_device_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); return true;
    case DType::kFloat64: fn(double{}); return true;
    case DType::kFloat16: fn(__half{}); return true;
    case DType::kBFloat16: fn(__nv_bfloat16{}); return true;
    default: return false;
  }
}

template <typename Fn>
bool dispatch_label(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kInt32: fn(int32_t{}); return true;
    case DType::kInt64: fn(int64_t{}); return true;
    default: return false;
  }
}

}  // namespace ncfast::cuda
