"""Every kernel variant of the cpu backend, forced one at a time (fastnn._cpu's private _algo keywords), against the
NumPy reference in float64 on small awkward shapes; and the query functions (conv2d_algo, pool2d_algo) against what
runs. Only the SIMD level of this process is exercised: FASTNN_SIMD is read once, when fastnn._C loads."""
import numpy as np
import pytest

from fastnn import _C, _cpu, reference

SIMD = _C.config()["simd"]  # "avx512f", "avx2_fma" or "scalar"
AVX2 = SIMD in ("avx2_fma", "avx512f")
AVX512 = SIMD == "avx512f"
DTYPES = [np.float32, np.float64]

# (x shape, output channels, kernel, stride, padding, dilation, groups)
CONVS = [
    ((1, 1, 5, 7), 1, (3, 3), (1, 1), (1, 1), (1, 1), 1),       # batch 1, one channel, non-square
    ((2, 3, 9, 8), 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),      # stride 2 with padding
    ((3, 4, 7, 6), 64, (3, 3), (1, 1), (0, 1), (1, 1), 2),      # groups, uneven padding
    ((1, 2, 6, 11), 32, (2, 3), (1, 2), (1, 0), (2, 1), 1),     # dilation, non-square kernel and stride
    ((2, 5, 8, 8), 32, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # 1x1
    ((1, 6, 5, 5), 6, (1, 1), (1, 1), (0, 0), (1, 1), 3),       # 1x1 grouped
    ((2, 32, 10, 9), 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 3x3 s1, sizes not multiples of the tiles
    ((1, 3, 11, 13), 32, (5, 5), (2, 2), (2, 2), (1, 1), 1),    # 5x5 s2
    ((2, 8, 7, 9), 16, (3, 3), (1, 1), (2, 2), (1, 1), 1),      # padding past the kernel's reach
    ((2, 40, 7, 7), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # 7-wide rows in pairs, odd last row, 3 channel chunks
    ((1, 5, 13, 13), 32, (3, 3), (2, 2), (0, 0), (1, 1), 1),    # 6-wide rows in pairs at stride 2
    ((3, 6, 13, 14), 32, (3, 3), (2, 2), (1, 1), (1, 1), 1),    # 7 odd rows: last rows of two images paired, 3rd alone
    ((3, 20, 9, 8), 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # 8-wide rows: 16-position tiles, odd rows, 2 chunks
    ((2, 16, 13, 13), 24, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # 24 output channels: a 32-channel block, 8 padded
    ((1, 6, 9, 16), 40, (3, 3), (1, 1), (1, 1), (1, 1), 2),     # groups of 20 channels (12 padded), 16-wide rows
    ((2, 5, 9, 10), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),     # 16 output channels: dweight tiles of 2 input
    ((3, 6, 6, 7), 32, (3, 3), (1, 1), (1, 1), (1, 1), 2),      # channels (an odd last one alone), 2 groups of 16
    ((2, 5, 3, 4), 200, (1, 1), (1, 1), (0, 0), (1, 1), 1),     # 1x1 on few positions, many output channels
    ((1, 6, 3, 3), 400, (1, 1), (1, 1), (0, 0), (1, 1), 2),     # the same in 2 groups
    ((2, 6, 9, 8), 16, (1, 1), (2, 3), (0, 0), (1, 1), 2),      # 1x1 at stride > 1 (a strided copy), grouped
]


def _is_1x1(kernel, stride, padding):
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _fwd_runs(algo, dt, x_shape, K, kernel, stride, padding, dilation, groups):
    """Whether a forced forward variant can run (the contract the kernels document)."""
    f32 = dt == np.float32
    if algo == "winograd":
        return f32 and AVX2 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) \
            and groups == 1
    if algo == "direct":
        return f32 and AVX512 and stride[1] in (1, 2)
    if algo == "gemm_1x1":  # at stride > 1 on a strided copy of the input
        return tuple(kernel) == (1, 1) and tuple(padding) == (0, 0)
    if algo == "gemm_1x1_packed":
        return _is_1x1(kernel, stride, padding)
    return True  # polyphase_gemm, polyphase_packed, polyphase_batch


def _dw_runs(algo, dt, x_shape, K, kernel, stride, padding, dilation, groups):
    if algo == "direct":
        return dt == np.float32 and AVX512 and tuple(kernel) == (3, 3) and dilation[1] == 1 and (
            (K // groups) % 32 == 0 or K // groups == 16)
    return True


def _dx_runs(algo, dt, x_shape, K, kernel, stride, padding, dilation, groups):
    if algo == "forward_flipped":
        return tuple(stride) == (1, 1) and padding[0] <= dilation[0] * (kernel[0] - 1) and \
            padding[1] <= dilation[1] * (kernel[1] - 1)
    if algo == "gemm_1x1":
        return _is_1x1(kernel, stride, padding)
    return True


def _conv_data(dt, x_shape, K, kernel, groups, seed=0):
    """Small integers: every sum is exact in float32, so the variants must agree with the reference exactly."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, x_shape).astype(dt)
    w = rng.integers(-2, 3, (K, x_shape[1] // groups) + tuple(kernel)).astype(dt)
    b = rng.integers(-4, 5, K).astype(dt)
    return x, w, b


def _close(out, ref, dt):
    rtol = 1e-5 if dt == np.float32 else 1e-12
    atol = rtol * max(1.0, float(np.abs(ref).max(initial=0)))
    out = np.asarray(out, np.float64)
    assert out.shape == ref.shape
    bad = np.abs(out - ref) > atol + rtol * np.abs(ref)
    assert not bad.any(), f"{bad.sum()} of {bad.size} elements differ; max |diff| {np.abs(out - ref).max()}"


def _ids(cases):
    return [f"{c[0]}-K{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-g{c[6]}" for c in cases]


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONVS, ids=_ids(CONVS))
@pytest.mark.parametrize("algo", _C.conv2d_fwd_algos())
def test_conv2d_forward_variant(algo, case, dt):
    x_shape, K, kernel, stride, padding, dilation, groups = case
    x, w, b = _conv_data(dt, x_shape, K, kernel, groups)
    if not _fwd_runs(algo, dt, *case):
        with pytest.raises(ValueError, match=algo):
            _cpu.conv2d(x, w, b, stride, padding, dilation, groups, _algo=algo)
        return
    y = _cpu.conv2d(x, w, b, stride, padding, dilation, groups, _algo=algo)
    ref = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), stride, padding,
                           dilation, groups)
    _close(y, ref, dt)


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONVS, ids=_ids(CONVS))
@pytest.mark.parametrize("part,algo", [("dw", a) for a in _C.conv2d_dw_algos()] +
                         [("dx", a) for a in _C.conv2d_dx_algos()])
def test_conv2d_backward_variant(part, algo, case, dt):
    x_shape, K, kernel, stride, padding, dilation, groups = case
    x, w, _ = _conv_data(dt, x_shape, K, kernel, groups)
    y_shape = reference.conv2d(x, w, None, stride, padding, dilation, groups).shape
    dy = np.random.default_rng(1).integers(-3, 4, y_shape).astype(dt)
    kw = {"_dw_algo": algo} if part == "dw" else {"_dx_algo": algo}
    runs = (_dw_runs if part == "dw" else _dx_runs)(algo, dt, *case)
    if not runs:
        with pytest.raises(ValueError, match=algo):
            _cpu.conv2d_backward(dy, x, w, stride, padding, dilation, groups, **kw)
        return
    got = _cpu.conv2d_backward(dy, x, w, stride, padding, dilation, groups, **kw)
    ref = reference.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64), stride,
                                    padding, dilation, groups)
    for g, r in zip(got, ref):
        _close(g, r, dt)


# (x shape, kernel, stride, padding): the two fast geometries at widths below, at and past a vector of outputs
POOLS = [
    ((1, 1, 6, 8), (2, 2), (2, 2), (0, 0)),         # rows of fewer than 8 outputs: one masked vector each
    ((2, 3, 14, 15), (2, 2), (2, 2), (0, 0)),       # 14x14 -> 7x7, the textbook CNN's second pooling
    ((1, 2, 3, 3), (2, 2), (2, 2), (0, 0)),         # one output per row
    ((2, 3, 7, 19), (2, 2), (2, 2), (0, 0)),       # odd sizes: a row and a column past the last window
    ((1, 2, 9, 20), (3, 3), (2, 2), (1, 1)),
    ((2, 1, 6, 37), (3, 3), (2, 2), (1, 1)),
    ((2, 3, 7, 7), (3, 3), (2, 2), (1, 1)),         # rows of at most 16 inputs: one vector a row
    ((1, 2, 5, 16), (3, 3), (2, 2), (1, 1)),
    ((1, 2, 7, 5), (3, 2), (1, 2), (1, 1)),         # generic only
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
    ((2, 3, 13, 13), (3, 3), (2, 2), (0, 0)),       # separable: no fast path
    ((1, 2, 12, 21), (3, 3), (1, 1), (1, 1)),       # separable, stride 1 with padding
    ((1, 1, 150, 70), (3, 3), (1, 1), (1, 1)),      # separable, the plane split into bands of rows
    ((5, 4, 5, 6), (4, 4), (4, 4), (0, 0)),         # taps: 20 planes, groups of 8 (4 in float64), the last partial
]
PASSES = ["max", "avg", "avg_backward"]


def _pool_runs(algo, pass_, dt, x_shape, kernel, stride, padding):
    if algo in ("generic", "separable", "taps"):
        return True
    if pass_ != "avg_backward" and not (dt == np.float32 and AVX2):
        return False
    geometry = {"k2s2": ((2, 2), (2, 2), (0, 0)), "k3s2p1": ((3, 3), (2, 2), (1, 1))}[algo]
    return (tuple(kernel), tuple(stride), tuple(padding)) == geometry


@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOLS, ids=[f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}" for c in POOLS])
@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("algo", _C.pool2d_algos())
def test_pool2d_variant(algo, pass_, case, dt):
    x_shape, kernel, stride, padding = case
    rng = np.random.default_rng(2)
    x = (rng.permutation(int(np.prod(x_shape))) - 40).reshape(x_shape).astype(dt)  # distinct: no ties for max
    runs = _pool_runs(algo, pass_, dt, *case)
    x64 = x.astype(np.float64)
    for cip in ([None] if pass_ == "max" else [True, False]):
        if pass_ == "max":
            call = lambda: _cpu.max_pool2d(x, kernel, stride, padding, _algo=algo)  # noqa: E731
        elif pass_ == "avg":
            call = lambda: _cpu.avg_pool2d(x, kernel, stride, padding, cip, _algo=algo)  # noqa: E731
        else:
            oshape = reference.avg_pool2d(x64, kernel, stride, padding, cip).shape
            dy = rng.integers(-8, 9, oshape).astype(dt)
            call = lambda: _cpu.avg_pool2d_backward(dy, x_shape, kernel, stride, padding, cip, _algo=algo)  # noqa
        if not runs:
            with pytest.raises(ValueError, match=algo):
                call()
            continue
        got = call()
        if pass_ == "max":
            ref_y, ref_i = reference.max_pool2d(x64, kernel, stride, padding)
            _close(got[0], ref_y, dt)
            np.testing.assert_array_equal(got[1], ref_i)
        elif pass_ == "avg":
            _close(got, reference.avg_pool2d(x64, kernel, stride, padding, cip), dt)
        else:
            _close(got, reference.avg_pool2d_backward(dy.astype(np.float64), x_shape, kernel, stride, padding, cip),
                   dt)


def test_unknown_variant_names_are_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="unknown algorithm"):
        _cpu.conv2d(x, w, None, (1, 1), (0, 0), (1, 1), 1, _algo="fft")
    with pytest.raises(ValueError, match="unknown algorithm"):
        _cpu.conv2d_backward(np.zeros((1, 1, 2, 2), np.float32), x, w, (1, 1), (0, 0), (1, 1), 1, _dw_algo="fft")
    with pytest.raises(ValueError, match="unknown algorithm"):
        _cpu.max_pool2d(x, (2, 2), (2, 2), (0, 0), _algo="fft")


# Representative shapes: (x shape, weight shape, stride, padding, dilation, groups, dtype) -> the expected variants
# (forward, dweight, dx) on this machine.
def _expected(case):
    x_shape, w_shape, stride, padding, dilation, groups, dt = case
    f32 = dt == np.float32
    big3x3 = w_shape[2:] == (3, 3) and stride == (1, 1) and x_shape[1] >= 32 and w_shape[0] >= 32
    if f32 and AVX2 and big3x3:
        fwd = "winograd"
    elif f32 and AVX512 and w_shape[2:] == (7, 7):
        fwd = "direct"
    elif w_shape[2:] == (1, 1):
        fwd = "gemm_1x1"
    else:
        fwd = "polyphase_gemm"
    dw = "direct" if f32 and AVX512 and w_shape[2:] == (3, 3) and w_shape[0] % 32 == 0 else "gemm"
    dx = "gemm_1x1" if w_shape[2:] == (1, 1) and stride == (1, 1) else "forward_flipped" if stride == (1, 1) else "dcol"
    return fwd, dw, dx


QUERIES = [
    ((8, 64, 14, 14), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, np.float32),   # >= 32 channels, 392 tiles
    ((8, 64, 14, 14), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, np.float64),
    ((1, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1, np.float32),   # the ResNet stem
    ((2, 16, 20, 20), (24, 16, 1, 1), (1, 1), (0, 0), (1, 1), 1, np.float32),
    ((2, 32, 9, 9), (32, 32, 3, 3), (2, 2), (1, 1), (1, 1), 1, np.float64),
    ((8, 64, 14, 14), (128, 64, 1, 1), (2, 2), (0, 0), (1, 1), 1, np.float64),  # 1x1 /2: the strided copy
]


@pytest.mark.parametrize("case", QUERIES, ids=[f"{c[0]}-{c[1]}-s{c[2]}-{np.dtype(c[6]).name}" for c in QUERIES])
def test_query_names_the_variant(case):
    x_shape, w_shape, stride, padding, dilation, groups, dt = case
    fwd, dw, dx = _expected(case)
    args = (x_shape, w_shape, stride, padding, dilation, groups, dt)
    assert _cpu.conv2d_algo(*args) == fwd
    assert _cpu.conv2d_algo(*args, part="dweight") == dw
    assert _cpu.conv2d_algo(*args, part="dx") == dx


@pytest.mark.parametrize("case", [QUERIES[0], QUERIES[1], QUERIES[3], QUERIES[4]],
                         ids=["winograd-f32", "f64", "1x1", "s2-f64"])
def test_the_named_variant_is_the_one_that_runs(case):
    """The automatic choice gives the forced named variant's result to the bit."""
    x_shape, w_shape, stride, padding, dilation, groups, dt = case
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(x_shape).astype(dt), rng.standard_normal(w_shape).astype(dt)
    name = _cpu.conv2d_algo(x_shape, w_shape, stride, padding, dilation, groups, dt)
    auto = _cpu.conv2d(x, w, None, stride, padding, dilation, groups)
    forced = _cpu.conv2d(x, w, None, stride, padding, dilation, groups, _algo=name)
    np.testing.assert_array_equal(auto, forced)


def test_pool2d_query():
    fast = AVX2  # the forward fast paths are AVX2 float kernels; the average backward's are plain loops
    q = _cpu.pool2d_algo
    # no fast path: taps for a max and short rows given planes for two groups of 8 (float) or 4 (double)
    assert q("max", (2, 8, 8, 8), (2, 2), (2, 2), (0, 0), np.float32) == ("k2s2" if fast else "taps")
    assert q("avg", (2, 8, 8, 8), (3, 3), (2, 2), (1, 1), "float32") == ("k3s2p1" if fast else "taps")
    assert q("max", (2, 4, 8, 8), (2, 2), (2, 2), (0, 0), np.float64) == "taps"
    assert q("avg_backward", (2, 3, 8, 8), (3, 3), (2, 2), (1, 1), np.float64) == "k3s2p1"
    assert q("avg", (2, 8, 8, 8), (3, 3), (1, 1), (1, 1), np.float32) == "taps"
    assert q("avg", (2, 8, 40, 40), (3, 3), (1, 1), (1, 1), np.float32) == "separable"    # long rows
    assert q("max", (2, 8, 40, 40), (3, 3), (2, 2), (0, 0), np.float32) == "taps"
    assert q("max", (1, 3, 40, 40), (3, 3), (2, 2), (0, 0), np.float32) == "separable"    # too few planes
    # planes at most 5 wide: taps before the fast paths, except the 2x2/2 average
    assert q("max", (8, 8, 5, 5), (3, 3), (2, 2), (1, 1), np.float32) == "taps"
    assert q("avg", (8, 8, 4, 4), (2, 2), (2, 2), (0, 0), np.float32) == ("k2s2" if fast else "taps")
