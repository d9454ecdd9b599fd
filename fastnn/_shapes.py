"""Window geometry, written once: the output-size formula of docs/internals.md and the int-or-pair normaliser.

Imported by the reference (the spec), the checks, both backends, the op table and the tests, so a window op added
later cannot disagree with the others about its output size. Plain Python: no NumPy, no Numba."""


def pair(v):
    """An int or a pair -> a tuple (h, w) of Python ints (no validation: fastnn._checks.pair validates)."""
    if hasattr(v, "__len__"):
        h, w = v
        return int(h), int(w)
    return int(v), int(v)


def out_size(size, k, s, p, d=1):
    """Output length of a window op along one axis (floor mode, as PyTorch); <= 0 when the kernel does not fit."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def out_hw(hw, kernel_size, stride, padding, dilation=1):
    """(OH, OW) of a window over the spatial sizes hw = (H, W); the pair arguments may be ints."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    return out_size(hw[0], kh, sh, ph, dh), out_size(hw[1], kw, sw, pw, dw)
