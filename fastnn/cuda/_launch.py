"""The one way the CUDA kernels reach the GPU: device views of caller arrays, outputs in the caller's array type
(CuPy in -> CuPy out, PyTorch in -> PyTorch out, otherwise Numba device arrays), and kernel launches with a fraction
of Numba's host work.

Measured on the lent H100's host: Numba's dispatcher types, wraps and marshals every argument on every launch
(~100 us for a launch with ten arrays), and importing a torch tensor (as_cuda_array, with its stream sync) costs
tens of us more - far longer than most of these kernels run. Hence:
  View        (pointer, shape, dtype) of a C-contiguous GPU buffer: reshape is free, no Numba array is built
              unless a launch needs one (the first launch of a kernel, or the simulator).
  launch      the first launch of each (kernel, key) goes through Numba (which compiles); its argument list is
              then compared with the one built here, and if equal every later launch calls cuda.core's launch
              directly with a flat list. `key` must fix every argument's Numba type (array dtype/ndim, scalar
              Python types); all arrays must be C-contiguous.
Set FASTNN_CUDA_FAST_LAUNCH=0 to launch everything through Numba's dispatcher. The Numba-array helpers
(as_device, empty_device, wrap) serve im2col, which launches through Numba's dispatcher.
"""
import ctypes
import os

import numpy as np
from numba import config, cuda

FAST = os.environ.get("FASTNN_CUDA_FAST_LAUNCH", "1") != "0" and not config.ENABLE_CUDASIM
_TORCH_DT = {}


def _legacy_stream(mod):
    """True when the caller's current stream is the legacy default stream, the one our kernels run on."""
    if mod == "torch":
        import torch
        return torch.cuda.current_stream().cuda_stream == 0
    import cupy
    return cupy.cuda.get_current_stream().ptr == 0


# ------------------------------------------------------------------------------------------ Numba device arrays

def kind_of(*arrays):
    """'cupy', 'torch', 'numba' or 'numpy': the array type results are returned as (the first array decides)."""
    for a in arrays:
        if a is None:
            continue
        mod = type(a).__module__.split(".")[0]
        if mod in ("cupy", "torch", "numpy"):
            return mod
        return "numba"
    return "numba"


def as_device(a):
    """A C-contiguous Numba device array for `a`: zero-copy for contiguous GPU arrays, one copy otherwise.
    NumPy arrays are copied to the device (backend="cuda" with host arrays, and the simulator tests)."""
    if a is None:
        return None
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy
        a = cupy.ascontiguousarray(a)
    elif mod == "torch":
        a = a.contiguous()
    elif type(a).__name__ == "FakeCUDAArray":  # the simulator's device array
        return a
    elif mod == "numpy" or not cuda.is_cuda_array(a):
        return cuda.to_device(np.ascontiguousarray(a))
    # No stream sync when the caller works on the legacy default stream, the one our kernels run on (Numba's
    # default sync=True costs a cudaStreamSynchronize per array); other streams keep the sync.
    d = cuda.as_cuda_array(a, sync=not _legacy_stream(mod) if mod in ("cupy", "torch") else True)
    if not d.is_c_contiguous():
        raise ValueError("non-contiguous Numba device arrays are not supported; pass a contiguous copy")
    return d


def empty_device(shape, dtype, kind="numba"):
    """An uninitialised C-contiguous Numba device array (`empty` below gives a View). For CuPy/PyTorch callers
    the memory comes from that library's caching allocator (no cudaMalloc/cudaFree, which synchronises, per
    call), and wrap() hands the same memory back zero-copy."""
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    if kind == "torch":
        import torch
        t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device="cuda")
        return cuda.as_cuda_array(t, sync=not _legacy_stream(kind))
    if kind == "cupy":
        import cupy
        return cuda.as_cuda_array(cupy.empty(shape, dtype=dtype), sync=not _legacy_stream(kind))
    return cuda.device_array(shape, dtype=dtype)


def wrap(d, kind):
    """Return device array `d` in the caller's array type (zero-copy; NumPy in -> NumPy out copies back)."""
    if kind == "cupy":
        import cupy
        return cupy.asarray(d)
    if kind == "torch":
        import torch
        return torch.as_tensor(d, device="cuda")
    if kind == "numpy":
        return d.copy_to_host()
    return d


def blocks(n, threads=256):
    return max(1, (int(n) + threads - 1) // threads)


# ------------------------------------------------------------------------------------------------------- Views

class View:
    """A C-contiguous view (ptr, shape, dtype) of `src` (a Numba device array or any CUDA-array object)."""
    __slots__ = ("src", "ptr", "shape", "dtype", "size", "strides", "itemsize")

    def __init__(self, src, ptr, shape, dtype):
        self.src, self.ptr, self.shape, self.dtype = src, ptr, tuple(shape), dtype
        self.itemsize = dtype.itemsize
        st, acc = [], self.itemsize
        for n in reversed(self.shape):
            st.append(acc)
            acc *= n
        self.strides = tuple(reversed(st))
        self.size = acc // self.itemsize

    def reshape(self, *shape):
        return View(self.src, self.ptr, shape, self.dtype)

    def device(self):
        """A Numba device array of this view (costly; for first launches, GEMMs and host copies)."""
        d = self.src
        if type(d).__module__.split(".")[0] in ("torch", "cupy"):
            d = cuda.as_cuda_array(d, sync=False)
        return d.reshape(*self.shape) if tuple(d.shape) != self.shape else d


def view(a):
    """View of an input array: torch/CuPy C-contiguous tensors on the default stream directly (no Numba array,
    no stream sync needed: same stream); anything else through as_device (one copy if needed)."""
    if a is None:
        return None
    if isinstance(a, View):
        return a
    mod = type(a).__module__.split(".")[0]
    if FAST and mod == "torch" and a.is_cuda and a.is_contiguous() and _legacy_stream(mod):
        dt = _TORCH_DT.get(a.dtype)
        if dt is None:
            dt = _TORCH_DT[a.dtype] = np.dtype(str(a.dtype).replace("torch.", ""))
        return View(a, a.data_ptr(), a.shape, dt)
    if FAST and mod == "cupy" and a.flags.c_contiguous and _legacy_stream(mod):
        return View(a, a.data.ptr, a.shape, a.dtype)
    if mod != "numpy" and hasattr(a, "copy_to_host") and a.is_c_contiguous():    # a Numba device array
        return View(a, _ptr(a), a.shape, a.dtype)
    d = as_device(a)
    return View(d, _ptr(d), d.shape, d.dtype)


def empty(shape, dtype, kind):
    """(caller-type array or None, View): torch/CuPy outputs come from their caching allocators."""
    dtype = np.dtype(dtype)
    if kind == "torch":
        import torch
        t = torch.empty(shape, dtype=getattr(torch, dtype.name), device="cuda")
        return t, View(t, t.data_ptr(), shape, dtype)
    if kind == "cupy":
        import cupy
        t = cupy.empty(shape, dtype=dtype)
        return t, View(t, t.data.ptr, shape, dtype)
    d = cuda.device_array(shape, dtype=dtype)
    return None, View(d, _ptr(d), shape, dtype)


def of(d):
    """View of a Numba device array."""
    return View(d, _ptr(d), d.shape, d.dtype)


_dummies = {}


def dummy(dtype, ndim=1):
    """A one-element View standing in for an absent optional array (the kernels take a flag instead), one per
    device, dtype and ndim: made once, never read."""
    key = (getattr(cuda.get_current_device(), "id", 0), np.dtype(dtype), ndim)
    if key not in _dummies:
        _dummies[key] = of(cuda.device_array((1,) * ndim, dtype=dtype))
    return _dummies[key]


def _ptr(d):
    return (d.device_ctypes_pointer.value or 0) if FAST else 0      # unused by the dispatcher path


def result(pair, kind):
    """The caller-type output of an `empty` pair (NumPy: copied back to the host)."""
    return pair[0] if pair[0] is not None else wrap(pair[1].device(), kind)


def _real(a):
    return a.device() if isinstance(a, View) else a


# --------------------------------------------------------------------------------------------------- launch

GRID_MAX = (2**31 - 1, 65535, 65535)    # CUDA's limits on gridDim.x, .y, .z

_cache = {}      # (kernel, key) -> (cuda.core kernel, argument kinds) or None (use the dispatcher)
_configs = {}
_stream = None


def _kinds(argument_types):
    from numba.cuda import types as nbt
    kinds = []
    for t in argument_types:
        if isinstance(t, nbt.Array):
            kinds.append("array")
        elif t == nbt.boolean:
            kinds.append("bool")
        elif isinstance(t, nbt.Integer):
            kinds.append(getattr(ctypes, f"c_{t}"))
        elif t == nbt.float64:
            kinds.append(ctypes.c_double)
        elif t == nbt.float32:
            kinds.append(ctypes.c_float)
        else:
            raise NotImplementedError(t)
    return kinds


def _words(kinds, args):
    out = []
    for k, a in zip(kinds, args):
        if k == "array":
            ptr = a.ptr if isinstance(a, View) else _ptr(a)
            out += (0, 0, a.size, a.dtype.itemsize, ptr, *a.shape, *a.strides)
        elif k == "bool":
            out.append(bool(a))
        else:
            out.append(k(a))
    return out


def _same(mine, theirs):
    if len(mine) != len(theirs):
        return False
    for m, t in zip(mine, theirs):
        if hasattr(t, "value"):
            if type(m) is not type(t) or m.value != t.value:
                return False
        elif type(m) is not type(t) and not (isinstance(m, int) and isinstance(t, int)) or m != t:
            return False
    return True


def _dims(d):
    d = (d,) if isinstance(d, int) else tuple(d)
    return d + (1,) * (3 - len(d))


def _check(grid):
    """A grid beyond CUDA's limits fails to launch with an opaque driver error (and the simulator runs it): say
    which kernel grid dimension is too large instead. Callers split larger work into several launches."""
    for n, most, axis in zip(_dims(grid), GRID_MAX, "xyz"):
        if not 0 < n <= most:
            raise ValueError(f"grid.{axis} = {n} is outside CUDA's limit 1..{most}")


def _first(kern, key, grid, block, args):
    """Launch through Numba, then set up (or refuse) the direct path for this (kernel, key)."""
    _check(grid)
    real = [_real(a) for a in args]
    kern[grid, block](*real)
    entry = None
    if FAST:
        try:
            k = kern.overloads[tuple(kern.typeof_pyval(a) for a in real)]
            kinds = _kinds(k.argument_types)
            theirs = []
            for t, v in zip(k.argument_types, real):
                k._prepare_args(t, v, 0, [], theirs)
            if _same(_words(kinds, args), theirs):
                entry = (k._codelibrary.get_cufunc().kernel, kinds)
        except Exception:      # any surprise in Numba's internals: keep using its dispatcher
            entry = None
    _cache[(kern, key)] = entry


def launch(kern, key, grid, block, *args):
    """kern[grid, block](*args) with args Views / Numba arrays / scalars; see the module docstring."""
    global _stream
    ent = _cache.get((kern, key), False)
    if ent is False:
        return _first(kern, key, grid, block, args)
    if ent is None:
        _check(grid)
        return kern[grid, block](*[_real(a) for a in args])
    cfg = _configs.get((grid, block))
    if cfg is None:
        _check(grid)
        from cuda.core import LaunchConfig
        cfg = _configs[(grid, block)] = LaunchConfig(grid=_dims(grid), block=_dims(block), shmem_size=0)
    if _stream is None:
        from numba.cuda.cudadrv import driver
        _stream = driver._to_core_stream(0)
    from cuda.core import launch as core_launch
    try:
        core_launch(_stream, cfg, ent[0], *_words(ent[1], args))
    except Exception:           # nothing was launched: fall back to the dispatcher for good
        _cache[(kern, key)] = None
        kern[grid, block](*[_real(a) for a in args])
