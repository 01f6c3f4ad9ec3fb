// What the CUDA runtime linked into ncfast._C reports; safe to call without a GPU or driver.
#pragma once

namespace ncfast::cuda {

// CUDA runtime version as major * 1000 + minor * 10, e.g. 13000.
int runtime_version();

// Number of visible devices, 0 when there is no driver or no GPU.
int device_count();

}  // namespace ncfast::cuda
