"""What the build reports about itself matches how it was built and the machine it runs on."""

from __future__ import annotations

import platform

import pytest

import ncfast


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_build_info_names_the_compiled_instruction_sets():
    info = ncfast.build_info()
    assert {"cxx_flags", "isa", "openmp", "blas", "num_threads", "cuda", "cuda_archs"} <= set(info)
    assert isinstance(info["isa"], list)
    assert "OpenBLAS" in info["blas"] and info["num_threads"] >= 1
    if "-march=native" in info["cxx_flags"] and platform.machine() == "x86_64":
        flags = _cpu_flags()
        if not flags:
            pytest.skip("no /proc/cpuinfo")
        # -march=native enables exactly what this CPU has (the build ran on this machine)
        for ext, flag in (("avx2", "avx2"), ("fma", "fma"), ("f16c", "f16c"), ("avx512f", "avx512f")):
            assert (ext in info["isa"]) == (flag in flags), ext
