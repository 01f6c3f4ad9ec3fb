// The chunk update with the Gram on cuBLAS ("slab" path, docs/CUDA.md): the class-moments pass
// also writes the centred rows z = (x - p[y]) 2^-e into a scratch slab, the class update writes
// the correction rows, and the caller (Python, through torch) multiplies the slab with cuBLAS
// GEMMs into a float32 (float64) partial Gram that these kernels fold into the float64 W.
// Plain C++ header (no CUDA types), so the bindings compile without the CUDA toolkit's headers.
#pragma once

#include <cstdint>

#include "../core/class_stats.h"
#include "class_stats_cuda.h"

namespace ncfast::cuda {

// Rows a call may have for the fused small-batch step (one prep kernel sorts them in one block).
constexpr int64_t kSlabSmallRows = 4096;

// Gram state words (int64, owned by Python; zero at creation).
enum GramWord : int {
  kGramCur = 0,          // which exponent row (0/1) the partial's contents are scaled by
  kGramNext = 1,         // the same after this call (differs after a rescale)
  kGramPartialRows = 2,  // rows accumulated in the fullest partial slot since the last fold
  kGramWords = 8,
};

// Everything one chunk of the slab path needs besides the statistics and the batch. Device
// buffers are addresses of tensors Python owns; sizes are in elements unless named bytes.
struct SlabCall {
  // The chunk: rows [row0, row0 + rows) of the batch.
  int64_t row0 = 0;
  int64_t rows = 0;
  int64_t chunk_rows = 0;     // the largest chunk of the call (sizes the scratch)
  bool small = false;         // fused small-batch step: the whole call, rows <= kSlabSmallRows
  bool first_chunk = true;    // resets the call's status words
  bool prevalidated = false;  // labels and values of the whole call were checked up front
  // Slab: rows of D_pad columns; `splits` groups of split_rows rows side by side (row r of split
  // s at slab_x + r * ld + s * padded_dim); dual: slab_y holds the same rows (and the negated
  // correction rows).
  int32_t slab_dtype = static_cast<int32_t>(DType::kBFloat16);  // a DType code
  bool tf32 = false;  // float32 slab multiplied on TF32 tensor cores: entries rounded to TF32 here
  uintptr_t slab_x = 0;
  uintptr_t slab_y = 0;  // 0 unless dual
  int64_t padded_dim = 0;
  int64_t ld = 0;
  int64_t split_rows = 0;
  int64_t splits = 1;
  // Correction rows, corr_ld elements each: corr_split blocks of max_slots rows (slot s in row
  // b * max_slots + s of block b). One block: a_c, GEMM'd against itself (corr_y == 0) or against
  // corr_y = -a_c (dual). Three blocks (16-bit and TF32 slabs): hi = round(a), lo = round(a - hi);
  // corr_x = [hi; lo; hi], corr_y = corr_sign [hi; hi; lo], so corr_x^T corr_y = corr_sign
  // (a a^T - lo lo^T): the correction keeps twice the slab's precision.
  uintptr_t corr_x = 0;
  uintptr_t corr_y = 0;
  int64_t corr_ld = 0;
  int64_t corr_split = 1;
  int32_t corr_sign = 1;  // -1 when corr_y rows are GEMM'd with alpha +1 (dual), +1 for alpha -1
  int64_t max_slots = 0;
  // Partial Gram (float32; float64 for a float64 slab): `slots` matrices of padded_dim^2 entries
  // (row stride padded_dim), slot_stride apart; exponents int32 [2, padded_dim]; words int64.
  uintptr_t partial = 0;
  int64_t slots = 1;
  int64_t slot_stride = 0;
  uintptr_t exps = 0;
  uintptr_t words = 0;
  int64_t fold_rows = 0;  // fold the partial before a slot would pass this many rows
  int64_t add_rows = 0;   // rows this chunk adds to the fullest slot
  // Scratch (256-byte aligned, at least slab_scratch_bytes).
  uintptr_t scratch = 0;
  int64_t scratch_size = 0;
  // Elements of the buffers above (checked against the layout before anything is enqueued).
  int64_t slab_elems = 0;     // each of slab_x and slab_y
  int64_t corr_elems = 0;     // from corr_x (and corr_y) on
  int64_t partial_elems = 0;
  int64_t exps_elems = 0;
};

// Bytes of scratch the slab path needs for chunks of up to `chunk_rows` rows of `shape`
// (queries the current device for the sort's temporary storage when not small).
int64_t slab_scratch_bytes(const UpdateShape& shape, int64_t chunk_rows, bool small, int64_t padded_dim);

// Enqueues one chunk on `stream`: (first chunk) the call's checks, the class sort, the moments and
// the slab, the class update and the correction rows, the due fold. Never synchronises the host
// and never allocates. The GEMMs of the slab are the caller's next step.
void update_slab_chunk(const StatsView& stats, const BatchView& batch, NanPolicy nan_policy,
                       const SlabCall& call, long long* status, void* stream);

// Folds the partial into W's upper triangle and mirrors W's lower triangle from it (at a read).
void fold_slab_partial(double* scatter, int64_t dim, const SlabCall& call, void* stream);

// The exponent window of a slab type: a column whose largest |z| 2^-e has a binary exponent in
// [lo, hi] keeps its e; otherwise e becomes the exponent of that largest |z|.
void slab_exponent_window(DType slab_dtype, int* lo, int* hi);

}  // namespace ncfast::cuda
