// Device-side pieces of the slab path: slab element types, the power-of-two column scaling,
// where a sorted position lands in the slab, the exact shift, and the scratch layout.
//
// Column scaling: slab column j holds z_j 2^-e_j, so the partial Gram holds
// diag(2^-e) (Z^T Z - A^T A) diag(2^-e) and the fold multiplies entry (i, j) by 2^(e_i + e_j)
// (exact: powers of two). e_j stays fixed while the largest |z_j| 2^-e_j of a chunk has a
// binary exponent inside the slab type's window; a chunk outside it moves e_j to the exponent of
// that largest |z_j| (after folding the partial at the old exponents) and rewrites its slab.
// So finite rows of any float32 magnitude (1e-38 .. 3e38) never overflow or underflow the
// float32 products and sums of the GEMMs.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "slab_update_cuda.h"

namespace ncfast::cuda {

// Scratch words of one chunk (int32).
enum SlabFlag : int {
  kFlagDue = 0,     // fold the partial before this chunk's GEMMs
  kFlagRange = 1,   // some column left its exponent window: rescale
  kFlagTicket = 2,  // blocks of the moments pass done (the last one decides kFlagRange)
  kFlagWords = 16,
};

// Float64 -> slab element, round to nearest.
template <typename S>
__device__ __forceinline__ S to_slab(double v);
template <>
__device__ __forceinline__ float to_slab<float>(double v) {
  return __double2float_rn(v);
}
template <>
__device__ __forceinline__ double to_slab<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __half to_slab<__half>(double v) {
  return __double2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_slab<__nv_bfloat16>(double v) {
  return __double2bfloat16(v);
}

// A float32 rounded to TF32 (round to nearest even at mantissa bit 13), so that the TF32 GEMM's
// own operand conversion, whether it rounds or truncates, sees exact TF32 values.
__device__ __forceinline__ float round_tf32(float v) {
  unsigned bits = __float_as_uint(v);
  bits = (bits + 0xFFFu + ((bits >> 13) & 1u)) & ~0x1FFFu;
  return __uint_as_float(bits);
}

// The slab element of v: rounded to S, and for a TF32 slab to TF32.
template <typename S>
__device__ __forceinline__ S to_slab_entry(double v, bool tf32) {
  return to_slab<S>(v);
}
template <>
__device__ __forceinline__ float to_slab_entry<float>(double v, bool tf32) {
  const float f = __double2float_rn(v);
  return tf32 ? round_tf32(f) : f;
}

// A slab element as a float (float64 stays float64).
__device__ __forceinline__ float slab_value(float v) { return v; }
__device__ __forceinline__ double slab_value(double v) { return v; }
__device__ __forceinline__ float slab_value(__half v) { return __half2float(v); }
__device__ __forceinline__ float slab_value(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename S>
__device__ __forceinline__ S slab_zero() {
  return to_slab<S>(0.0);
}

// Host and device: the exponent window of each slab type (binary exponent of max |z| 2^-e).
// float32/bfloat16: products of two entries up to 2^48 (a correction row is at most
// sqrt(65536) = 2^8 times the largest |z|) summed over 2^16 rows stay below 2^128; entries down
// to 2^-40 keep their products normal. float16: entries and correction rows stay below 65504.
// float64: far inside its range.
NCFAST_HD inline void exponent_window(DType slab, int* lo, int* hi) {
  switch (slab) {
    case DType::kFloat16: *lo = -6; *hi = 6; return;
    case DType::kFloat64: *lo = -200; *hi = 200; return;
    default: *lo = -40; *hi = 40; return;
  }
}

// The exponent column j should have for a chunk whose largest finite |z_j| is `zmax`.
__device__ __forceinline__ int next_exponent(double zmax, int e, int lo, int hi) {
  if (!(zmax > 0.0) || !is_finite(zmax)) return e;
  const int k = ilogb(zmax);
  const int scaled = k - e;
  return scaled >= lo && scaled <= hi ? e : k;
}

// Element offset of (sorted position `pos`, column `col`) in a slab.
__device__ __forceinline__ int64_t slab_offset(int64_t pos, int64_t col, int64_t split_rows, int64_t padded_dim,
                                               int64_t ld) {
  const int64_t split = pos / split_rows;
  return (pos - split * split_rows) * ld + split * padded_dim + col;
}

// The shift of the slab path: a seen class's running mean, exactly (float64); a new class's
// first row in the chunk. Both the moments and the class update compute it this way.
template <typename In>
__device__ __forceinline__ double exact_shift(bool seen, double mean, In first_row_value) {
  return seen ? mean : static_cast<double>(to_acc(first_row_value));
}

// Largest finite |v| as the bits of a non-negative double (ordered like the values).
__device__ __forceinline__ void atomic_max_abs(unsigned long long* target, double v) {
  atomicMax(target, static_cast<unsigned long long>(__double_as_longlong(fabs(v))));
}

__device__ __forceinline__ double read_max_abs(const unsigned long long* source) {
  return __longlong_as_double(static_cast<long long>(*source));
}

// Byte offsets into the scratch buffer (host-computed, see slab_update_cuda.cu).
struct SlabScratch {
  int64_t flags = 0, num_slots = 0, slot_class = 0, seg_begin = 0, seg_end = 0, sorted_keys = 0, perm = 0,
          sum1 = 0, sum2 = 0, colmax = 0, keep = 0, present = 0, slot_of_class = 0, keys = 0, vals = 0,
          sort_temp = 0, total = 0;
  size_t sort_bytes = 0;
  int key_bits = 1;
};

}  // namespace ncfast::cuda
