# Builds the one C++ extension, fastnn._C, from csrc/. Portable flags only (no native-arch, no fast-math):
# the AVX2/AVX-512 kernels carry function-level target attributes and are chosen at run time (cpu_features.cpp).
import os
import sys
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("FASTNN_BUILD_JOBS", default=2).install()


def openmp_flags():
    """(compile, link) flags for OpenMP when the compiler accepts them, else empty (kernels then run serially)."""
    if sys.platform == "win32":
        return ["/openmp"], []
    import subprocess
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        ok = subprocess.run([cxx, "-fopenmp", src, "-o", os.path.join(d, "t")], capture_output=True).returncode == 0
    return (["-fopenmp"], ["-fopenmp"]) if ok else ([], [])


omp_c, omp_l = openmp_flags()
extra = os.environ.get("FASTNN_EXTRA_CFLAGS", "").split()  # e.g. sanitizers (scripts/asan.sh)
ext = Pybind11Extension(
    "fastnn._C",
    sorted(glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fno-math-errno", *omp_c, *extra],
    extra_link_args=[*omp_l, *[f for f in extra if f.startswith("-fsanitize")]],
    depends=sorted(glob("csrc/*.h")),
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
