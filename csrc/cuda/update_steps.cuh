// Steps of the chunk update that the slab path (slab_update_cuda.cu) shares with the kernel path
// (class_stats_cuda.cu, where they are defined): the call's status bookkeeping and checks, and
// the sort of a chunk's rows into class order.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../core/class_stats.h"

namespace ncfast::cuda {

// Resets the call's status words (begin_update_kernel).
void enqueue_begin_call(long long* status, cudaStream_t stream);

// One read of the whole batch: label range, finiteness, keep flags under "skip" (`keep`, one
// byte per row, or null under "raise"), then the commit of the call (check_rows_kernel and
// commit_update_kernel).
void enqueue_call_checks(const BatchView& batch, int64_t dim, int64_t num_classes, NanPolicy nan_policy,
                         uint8_t* keep, long long* status, int sm_count, cudaStream_t stream);

// Buffers of the class sort (scratch owned by the caller).
struct ClassSortBuffers {
  int32_t* present = nullptr;        // [K]
  int32_t* slot_of_class = nullptr;  // [K]
  int32_t* slot_class = nullptr;     // [max_slots]
  int32_t* seg_begin = nullptr;      // [max_slots]
  int32_t* seg_end = nullptr;        // [max_slots]
  int32_t* num_slots = nullptr;      // [1]
  uint32_t* keys = nullptr;          // [rows]
  int32_t* vals = nullptr;           // [rows]
  uint32_t* sorted_keys = nullptr;   // [rows]
  int32_t* perm = nullptr;           // [rows]
  void* sort_temp = nullptr;
  size_t sort_bytes = 0;
  int key_bits = 1;
  uint32_t sentinel = 0;  // max_slots: the key of dropped rows
};

// Bit width of v (the sort's key bits for slots 0..v).
int slot_key_bits(uint64_t v);

// Temporary bytes of the radix sort of `rows` keys of `key_bits` bits (queries the device).
size_t class_sort_temp_bytes(int64_t rows, int key_bits);

// Slots of the classes present in the chunk (class order) and the chunk's rows sorted by slot
// (mark_present, assign_slots, make_keys, radix sort, segment_bounds). `labels` is the chunk's
// first label; `keep` (or null) its first keep flag; bad labels are recorded in the status when
// `check_labels`, with row numbers offset by `row_offset`.
void enqueue_class_sort(const void* labels, DType label_dtype, int64_t rows, int64_t row_offset,
                        int64_t num_classes, const uint8_t* keep, bool check_labels,
                        const ClassSortBuffers& buffers, long long* status, int sm_count, cudaStream_t stream);

}  // namespace ncfast::cuda
