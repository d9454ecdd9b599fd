"""Which backend runs a call: `backend=` if given, else $FASTNN_BACKEND, else "cuda" for GPU arrays and "cpu"
(the C++ extension) for NumPy arrays."""
import importlib
import os

import numpy as np

_ndarray = np.ndarray

BACKENDS = ("numpy", "cpu", "cuda")


def is_gpu_array(a):
    if a is None:
        return False
    if type(a).__module__.split(".")[0] == "torch":
        # PyTorch builds a new dict on every read of __cuda_array_interface__ (~2 us; one lstm_cell check read it
        # 14 times) and raises for tensors that require grad, which _checks.array refuses by name instead.
        return bool(getattr(a, "is_cuda", False)) and not a.is_sparse
    # Numba's simulator device arrays have no __cuda_array_interface__ but stand for GPU arrays in tests.
    return hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"


def _load(name):
    if name == "numpy":
        return importlib.import_module("fastnn.reference")
    if name == "cpu":
        try:
            return importlib.import_module("fastnn._cpu")
        except ImportError as e:
            raise RuntimeError("backend='cpu' needs the compiled extension fastnn._C, which failed to import: "
                               f"{e}") from e
    try:
        return importlib.import_module("fastnn.cuda")
    except ImportError as e:
        raise RuntimeError(f"backend='cuda' needs numba-cuda (pip install 'fastnn[cuda]'): {e}") from e


_loaded = {}


def module(name):
    if name not in _loaded:
        _loaded[name] = _load(name)
    return _loaded[name]


# os.environ.get cost 0.67 us a call (it encodes the key and decodes the value), more than a tiny relu's kernel;
# on POSIX os.environ keeps its bytes dict `_data` in step with every assignment (monkeypatch.setenv included).
_ENV_DATA = getattr(os.environ, "_data", None) if os.name == "posix" else None


def _env_backend():
    if _ENV_DATA is None:
        return os.environ.get("FASTNN_BACKEND")
    v = _ENV_DATA.get(b"FASTNN_BACKEND")
    return v.decode() if v is not None else None


def pick(backend, *arrays):
    """The backend module for these arrays."""
    gpu = False
    for a in arrays:  # NumPy arrays first: they are the common case, and is_gpu_array is not free
        if a is not None and type(a) is not _ndarray and is_gpu_array(a):
            gpu = True
            break
    if backend is None:
        backend = _env_backend() or ("cuda" if gpu else "cpu")
    m = _loaded.get(backend) if type(backend) is str else None
    if m is None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        m = module(backend)
    if gpu and backend != "cuda":
        raise TypeError(f"GPU arrays need backend='cuda', got backend={backend!r}")
    return m


def available():
    """Names of the backends that load on this machine."""
    names = []
    for name in BACKENDS:
        try:
            module(name)
        except RuntimeError:
            continue
        if name == "cuda" and not module(name).available():
            continue
        names.append(name)
    return names
