// Registers the CUDA functions of ncfast._C (builds with NCFAST_WITH_CUDA only).
#pragma once

#include <pybind11/pybind11.h>

namespace ncfast::cuda {

void register_cuda(pybind11::module_& m);

}  // namespace ncfast::cuda
