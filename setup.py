# Builds the one C++ extension, fastnn._C, from csrc/. Portable flags only (no native-arch, no fast-math):
# the AVX2/AVX-512 kernels carry function-level target attributes and are chosen at run time (cpu_features.cpp).
import os
import sys
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("FASTNN_BUILD_JOBS", default=2).install()


def simd_pragma_flags():
    """`#pragma omp simd` only (no OpenMP runtime: the threads are fastnn's own pool, csrc/parallel.h)."""
    if sys.platform == "win32":
        return ["/openmp:experimental"]
    import subprocess
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("int main(){int s=0;\n#pragma omp simd reduction(+:s)\nfor(int i=0;i<8;++i)s+=i;return s!=28;}\n")
        ok = subprocess.run([cxx, "-fopenmp-simd", src, "-o", os.path.join(d, "t")], capture_output=True).returncode == 0
    return ["-fopenmp-simd"] if ok else []


extra = os.environ.get("FASTNN_EXTRA_CFLAGS", "").split()  # e.g. sanitizers (scripts/asan.sh)
ext = Pybind11Extension(
    "fastnn._C",
    sorted(glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno", *simd_pragma_flags(), *extra],
    extra_link_args=[*([] if sys.platform == "win32" else ["-pthread"]), *[f for f in extra if f.startswith("-fsanitize")]],
    depends=sorted(glob("csrc/*.h")),
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
