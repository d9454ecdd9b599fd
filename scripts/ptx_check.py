"""Compile every CUDA kernel the tests launch to machine code for a real GPU, on a machine without one.

    python scripts/ptx_check.py [--cc 9.0] [--tests tests/test_cuda_misc.py ...] [--keep DIR]

The simulator runs the kernels as Python and never compiles them, so a kernel that NVVM rejects, or one whose
registers spill, passes the normal test run. This script closes that gap without a GPU:
  1. a child process runs the CUDA tests in the simulator (NUMBA_ENABLE_CUDASIM=1) and records the argument
     types of every kernel launch (and, for kernels built by a cached factory such as gemm.gemm__tiled, the
     factory's arguments);
  2. this process compiles each (kernel, argument types) with numba-cuda's compile_ptx for compute capability
     --cc, and `ptxas -v` turns the PTX into machine code and reports registers, spills, shared memory, stack.
It prints one row per compiled kernel, counts the ones that spill registers to local memory, and exits 1 on any
compile error.
Needs the CUDA toolkit's libnvvm and ptxas, and NVRTC (`pip install "nvidia-cuda-nvrtc==13.*"`), which
numba-cuda asks for the architectures it may target. Not part of the test run: CI machines need not have these.
"""
import argparse
import importlib
import os
import pickle
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ("activations", "batch_norm", "conv2d", "dense", "gemm", "im2col", "lstm", "optim", "pool2d", "rnn")
TESTS = ["tests/test_cuda_misc.py", "tests/test_cuda_conv.py", "tests/test_activations.py", "tests/test_dense.py",
         "tests/test_optim.py", "tests/test_rnn.py"]


# ------------------------------------------------------------------------------- 1. record (in the simulator)

def _describe(a):
    import numpy as np
    a = getattr(a, "_ary", a)                       # the simulator's device arrays wrap a NumPy array
    if isinstance(a, np.ndarray):
        layout = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else "A"
        return ("array", a.dtype.str, a.ndim, layout)
    if isinstance(a, (bool, np.bool_)):
        return ("scalar", "boolean")
    if isinstance(a, (int, float)):                  # Numba types Python numbers as int64 / float64
        return ("scalar", "int64" if isinstance(a, int) else "float64")
    if isinstance(a, np.generic):
        return ("scalar", a.dtype.name)
    raise TypeError(f"cannot record an argument of type {type(a).__name__}")


def record(path, tests):
    import functools
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    mods = {m: importlib.import_module("fastnn.cuda." + m) for m in MODULES}
    made = {}                    # id(python function of a factory-built kernel) -> (module, factory, args)
    for m, mod in mods.items():
        for name, obj in list(vars(mod).items()):
            if isinstance(obj, functools._lru_cache_wrapper) and obj.__module__ == mod.__name__:
                def factory(*args, _f=obj, _where=(m, name)):
                    k = _f(*args)
                    if isinstance(k, FakeCUDAKernel) and not k._device:
                        made[id(k.fn)] = _where + (args,)
                    return k
                setattr(mod, name, factory)
    seen = {}
    call = FakeCUDAKernel.__call__

    def recording_call(self, *args):
        from numba.cuda.simulator import kernel as simkernel
        if not self._device and not simkernel._kernel_context:
            fn = self.fn
            where = made.get(id(fn)) or (fn.__module__.rsplit(".", 1)[-1], fn.__name__, None)
            seen.setdefault((where, tuple(_describe(a) for a in args)), None)
        return call(self, *args)

    FakeCUDAKernel.__call__ = recording_call
    import pytest
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-x", *tests])
    with open(path, "wb") as f:
        pickle.dump(list(seen), f)
    return int(rc)


# ------------------------------------------------------------------------------ 2. compile (the CUDA target)

def _numba_type(d):
    import numpy as np
    from numba import types
    from numba.np.numpy_support import from_dtype
    if d[0] == "array":
        return types.Array(from_dtype(np.dtype(d[1])), d[2], d[3])
    return getattr(types, d[1])


def compile_all(entries, cc, keep):
    from types import SimpleNamespace
    from numba import cuda
    from numba.cuda import dispatcher
    # device functions compiled for a kernel ask the current device for its compute capability: answer `cc`
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    rows, bad, spilled = [], 0, 0
    for (module, name, args), sig in sorted(entries, key=repr):
        mod = importlib.import_module("fastnn.cuda." + module)
        kern = getattr(mod, name) if args is None else getattr(mod, name)(*args)
        opts = {k: v for k, v in kern.targetoptions.items()
                if k in ("debug", "lineinfo", "fastmath", "opt", "launch_bounds")}
        label = name if args is None else f"{name}{args}"
        types = tuple(_numba_type(d) for d in sig)
        short = ",".join(("%s%d%s" % (d[1][1:], d[2], d[3])) if d[0] == "array" else d[1][:5] for d in sig)
        try:
            ptx, _ = cuda.compile_ptx(kern.py_func, types, cc=cc, **opts)
        except Exception as e:                 # noqa: BLE001 - report every failure, keep going
            rows.append((f"{module}.{label}", short, f"NVVM FAILED: {str(e).splitlines()[0][:120]}"))
            bad += 1
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", dir=keep, delete=keep is None) as f:
            f.write(ptx)
            f.flush()
            p = subprocess.run(["ptxas", f"-arch=sm_{cc[0]}{cc[1]}", "-v", "-o", os.devnull, f.name],
                               capture_output=True, text=True)
        info = p.stderr
        if p.returncode:
            rows.append((f"{module}.{label}", short, "PTXAS FAILED: " + info.strip().splitlines()[-1][:120]))
            bad += 1
            continue
        num = lambda pat: int((re.search(pat, info) or [0, 0])[1])   # noqa: E731
        regs, spill = num(r"Used (\d+) registers"), num(r"(\d+) bytes spill stores") + num(r"(\d+) bytes spill loads")
        smem, stack = num(r"(\d+) bytes smem"), num(r"(\d+) bytes stack frame")
        spilled += spill > 0
        rows.append((f"{module}.{label}", short,
                     f"{regs:3d} regs  {smem:6d} B smem  {stack:4d} B stack  {spill:4d} B spilled"))
    w0, w1 = max(len(r[0]) for r in rows), min(60, max(len(r[1]) for r in rows))
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1][:60]:<{w1}}  {r[2]}")
    print(f"{len(rows)} kernel instances for compute capability {cc[0]}.{cc[1]}: {bad} failed to compile, "
          f"{spilled} spill registers")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cc", default="9.0", help="compute capability to compile for (H100: 9.0)")
    ap.add_argument("--tests", nargs="*", default=TESTS, help="test files whose launches are compiled")
    ap.add_argument("--keep", help="keep the PTX files in this folder")
    ap.add_argument("--all-tiles", action="store_true", help="compile tiled kernels with every tile in gemm.TILES")
    ap.add_argument("--record", help=argparse.SUPPRESS)      # the child: record into this file
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    if a.record:
        sys.exit(record(a.record, a.tests))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "launches.pkl")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        rc = subprocess.run([sys.executable, __file__, "--record", path, "--tests", *a.tests], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL).returncode
        if rc:
            sys.exit(f"the simulator run of {' '.join(a.tests)} failed (rc={rc}): run it with pytest to see why")
        with open(path, "rb") as f:
            entries = pickle.load(f)
    if a.all_tiles:          # every factory kernel recorded with a tile, also with each of gemm.TILES
        from fastnn.cuda.gemm import TILES
        entries = list(dict.fromkeys(entries + [
            ((m, f, args[:-1] + (t,)), sig) for (m, f, args), sig in entries
            if args and isinstance(args[-1], str) and args[-1] in TILES for t in TILES]))
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    sys.exit(compile_all(entries, tuple(int(v) for v in a.cc.split(".")), a.keep))


if __name__ == "__main__":
    main()
