"""Small helpers shared by the CUDA kernels: device views of caller arrays, output allocation in the
caller's array type (CuPy in -> CuPy out, PyTorch in -> PyTorch out, otherwise Numba device arrays), grid sizes."""
import numpy as np
from numba import cuda


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
    d = cuda.as_cuda_array(a, sync=not _on_legacy_stream(mod) if mod in ("cupy", "torch") else True)
    if not d.is_c_contiguous():
        raise ValueError("non-contiguous Numba device arrays are not supported; pass a contiguous copy")
    return d


def _on_legacy_stream(mod):
    if mod == "torch":
        import torch
        return torch.cuda.current_stream().cuda_stream == 0
    import cupy
    return cupy.cuda.get_current_stream().ptr == 0


def empty(shape, dtype, kind="numba"):
    """An uninitialised C-contiguous Numba device array. For CuPy/PyTorch callers the memory comes from that
    library's caching allocator (no cudaMalloc/cudaFree, which synchronises, per call), and wrap() hands the
    same memory back zero-copy."""
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    if kind == "torch":
        import torch
        t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device="cuda")
        return cuda.as_cuda_array(t, sync=not _on_legacy_stream(kind))
    if kind == "cupy":
        import cupy
        return cuda.as_cuda_array(cupy.empty(shape, dtype=dtype), sync=not _on_legacy_stream(kind))
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
