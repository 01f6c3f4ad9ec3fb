"""Loads the compiled core ``ncfast._C`` after the OpenBLAS library it links against.

The core links the OpenBLAS build shipped as the ``scipy-openblas32`` wheel. Loading that
library first (with RTLD_GLOBAL) lets the dynamic loader resolve it by soname wherever the
wheel was installed, whatever path was recorded at build time.
"""

from __future__ import annotations

import ctypes
import os

import scipy_openblas32
import torch  # noqa: F401  (torch's own libraries, OpenMP and CUDA runtime, load first)


def _preload_openblas() -> None:
    lib_dir = scipy_openblas32.get_lib_dir()
    stem = "lib" + scipy_openblas32.get_library()
    for name in sorted(os.listdir(lib_dir)):
        if name.startswith(stem) and ".so" in name:
            ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
            return


_preload_openblas()

from .. import _C  # noqa: E402  (must follow the preload)

# MKL's bfloat16 GEMM (float32 accumulation and output) in torch's CPU library, where torch was
# built with MKL: precision="fast" uses it for 16-bit inputs on CPUs with AMX-BF16 (MKL runs it
# on the AMX tiles). Found by name in the library torch has already loaded; the core links
# neither torch nor MKL.
_LIBRARY_GEMM = ("cblas_gemm_bf16bf16f32", "MKL_Set_Num_Threads_Local")


def _register_library_bf16_gemm() -> None:
    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        try:
            lib = ctypes.CDLL(os.path.join(folder, name))
            gemm, threads = (getattr(lib, symbol) for symbol in _LIBRARY_GEMM)
        except (OSError, AttributeError):
            continue
        _C.set_library_bf16_gemm(ctypes.cast(gemm, ctypes.c_void_p).value,
                                 ctypes.cast(threads, ctypes.c_void_p).value)
        return


_register_library_bf16_gemm()


def build_info() -> dict:
    """What this build of the core was compiled with and uses here: C++ flags, the CPU
    instruction sets they enabled (``isa``), the BLAS and its configuration, the CPU threads,
    ``cpu_gram`` (for each input dtype and precision, the Gram the CPU update runs), CUDA and
    its archs."""
    return dict(_C.build_info())


def get_num_threads() -> int:
    """Threads used by the CPU kernels (the core's own pool, the calling thread included)."""
    return _C.get_num_threads()


def set_num_threads(num_threads: int) -> None:
    """Sets the threads used by the CPU kernels, for the whole process: every later update, from
    any thread, uses this many. The default is ``OMP_NUM_THREADS`` when set, else the CPUs the
    process may run on. The statistics do not depend on it, to the bit."""
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int, got {num_threads!r}")
    _C.set_num_threads(num_threads)


__all__ = ["_C", "build_info", "get_num_threads", "set_num_threads"]
