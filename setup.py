"""Build of ncfast._C: C++17 core with its own thread pool and OpenBLAS, plus CUDA kernels when nvcc
is found.

Environment switches:
  NCFAST_CUDA=1/0        force / disable the CUDA build (default: on when nvcc is found)
  NCFAST_CUDA_ARCHS      semicolon list of SM versions (default "80;90")
  NCFAST_NATIVE=0        do not tune the CPU code for the build machine (-march=native)
  NCFAST_BUILD_JOBS      parallel compile jobs (default: all cores)
  NCFAST_SANITIZE=1      build the C++ core with AddressSanitizer + UndefinedBehaviorSanitizer
                         (tools/sanitize.sh builds it aside and runs the CPU tests under it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value is not None and value.strip() != "" else None


def find_nvcc() -> str | None:
    wanted = _flag("NCFAST_CUDA")
    if wanted == "0":
        return None
    candidates = [shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    for nvcc in candidates:
        if nvcc and Path(nvcc).is_file():
            return nvcc
    if wanted == "1":
        sys.exit("NCFAST_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
    return None


def cuda_library_dirs(nvcc: str) -> list[str]:
    """Folders holding libcudart_static.a (nvcc may be a wrapper outside the toolkit)."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             str(Path(nvcc).resolve().parent.parent)]
    found = []
    for home in filter(None, homes):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
            folder = Path(home) / sub
            if (folder / "libcudart_static.a").is_file() and str(folder) not in found:
                found.append(str(folder))
    if not found:
        sys.exit(f"nvcc found at {nvcc} but no libcudart_static.a beside it; set CUDA_HOME")
    return found


def openblas_paths() -> tuple[str, str, str]:
    import scipy_openblas32

    return (
        scipy_openblas32.get_include_dir(),
        scipy_openblas32.get_lib_dir(),
        scipy_openblas32.get_library(),
    )


NVCC = find_nvcc()
CUDA_ARCHS = [a for a in (_flag("NCFAST_CUDA_ARCHS") or "80;90").split(";") if a]
# -fopenmp-simd: the `omp simd` loop hints only; threads are the core's own (csrc/cpu/thread_pool.h).
CXX_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno"]
if _flag("NCFAST_NATIVE") != "0":
    CXX_FLAGS.append("-march=native")
SANITIZERS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if _flag("NCFAST_SANITIZE") == "1" else []
if SANITIZERS:
    CXX_FLAGS = [f for f in CXX_FLAGS if f != "-O3"] + ["-O1", "-g", *SANITIZERS]
BLAS_INCLUDE, BLAS_LIBDIR, BLAS_LIB = openblas_paths()


class BuildExtWithCuda(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc and links the objects into the extension."""

    def build_extension(self, ext):
        if NVCC:
            ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(ext)
        super().build_extension(ext)

    def _compile_cuda(self, ext) -> list[str]:
        sources = sorted(CSRC.glob("cuda/*.cu"))
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        gencode = []
        for arch in CUDA_ARCHS:
            gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        common = [
            "-std=c++17", "-O3", "--use_fast_math", "-Xcompiler", "-fPIC",
            f"-I{CSRC}", "-DNCFAST_WITH_CUDA", *gencode,
        ]

        def compile_one(src: Path) -> str:
            obj = out_dir / (src.stem + ".o")
            cmd = [NVCC, *common, "-c", str(src), "-o", str(obj)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            return str(obj)

        jobs = int(_flag("NCFAST_BUILD_JOBS") or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(compile_one, sources))


def make_extension() -> Pybind11Extension:
    sources = ["csrc/bindings.cpp", *sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("cpu/*.cpp"))]
    macros = [("NCFAST_CXX_FLAGS", '"' + " ".join(CXX_FLAGS) + '"')]
    libraries = [BLAS_LIB]
    library_dirs = [BLAS_LIBDIR]
    link_args = ["-pthread", f"-Wl,-rpath,{BLAS_LIBDIR}", *SANITIZERS]
    if NVCC:
        # Host-side CUDA glue (pybind11 bindings, no CUDA headers) builds with the C++ compiler.
        sources += sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("cuda/*.cpp"))
        macros += [("NCFAST_WITH_CUDA", None), ("NCFAST_CUDA_ARCHS", '"' + ";".join(CUDA_ARCHS) + '"')]
        # The static runtime keeps the wheel importable on machines without libcudart.
        libraries += ["cudart_static", "dl", "rt", "pthread"]
        library_dirs += cuda_library_dirs(NVCC)
    return Pybind11Extension(
        "ncfast._C",
        sources=sources,
        include_dirs=[str(CSRC), BLAS_INCLUDE],
        define_macros=macros,
        libraries=libraries,
        library_dirs=library_dirs,
        extra_compile_args=CXX_FLAGS,
        extra_link_args=link_args,
        cxx_std=17,
    )


ParallelCompile("NCFAST_BUILD_JOBS").install()
setup(ext_modules=[make_extension()], cmdclass={"build_ext": BuildExtWithCuda})
