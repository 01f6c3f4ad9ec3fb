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


def build_info() -> dict:
    """What this build of the core was compiled with: C++ flags, the CPU instruction sets they
    enabled (``isa``), OpenMP, the BLAS and its configuration, threads, CUDA and its archs."""
    return dict(_C.build_info())


def get_num_threads() -> int:
    """Threads used by the CPU kernels (OpenMP)."""
    return _C.get_num_threads()


def set_num_threads(num_threads: int) -> None:
    """Sets the threads used by the CPU kernels."""
    if not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads: expected a positive int, got {num_threads!r}")
    _C.set_num_threads(num_threads)


__all__ = ["_C", "build_info", "get_num_threads", "set_num_threads"]
