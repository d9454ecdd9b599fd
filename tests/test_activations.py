"""The activations family: relu, sigmoid, tanh, softmax and the fused softmax / sigmoid cross-entropy losses.

Every backend against fastnn.reference on float64 copies (the cases of fastnn/optable.py), the reference's
gradients against central finite differences, the conventions (NaN, saturation, huge logits, ignored rows,
label dtypes, one-hot targets), the errors, thread-count independence of the losses, and the AVX2 / scalar
kernels in subprocesses."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import reference as R
from fastnn.optable import arrays
from test_ops import ALL_BACKENDS, assert_unchanged, check, dtypes, f64, params, snapshot
from test_reference import numgrad

ELEMENTWISE = ("relu", "sigmoid", "tanh")


def close_loss(name, loss, ref, dtype, k):
    """The losses are Python floats; the same formula as check(): rtol = 8 eps sqrt(k)."""
    assert type(loss) is float, f"{name}: expected a Python float, got {type(loss).__name__}"
    rtol = 8 * np.finfo(dtype).eps * np.sqrt(k)
    assert abs(loss - ref) <= rtol * max(abs(ref), 1.0), f"{name}: {loss!r}, expected {ref!r} (rtol {rtol:.2g})"


# ------------------------------------------------------------------------------------------------ conformance

@dtypes
@pytest.mark.parametrize("op", ELEMENTWISE)
@pytest.mark.parametrize("backend,case", params("relu"))
def test_elementwise(op, backend, case, dtype):
    case = case._replace(op=op)
    a = arrays(case, dtype)
    before = snapshot(a)
    check("y", getattr(fastnn, op)(a["x"], backend=backend), getattr(R, op)(f64(a["x"])), dtype, 1)
    # the backward gets the reference's y, so it is tested on its own
    check("dx", getattr(fastnn, op + "_backward")(a["dy"], a["y"], backend=backend),
          getattr(R, op + "_backward")(f64(a["dy"]), f64(a["y"])), dtype, 2)
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("softmax"))
def test_softmax(backend, case, dtype):
    a = arrays(case, dtype)
    before = snapshot(a)
    V = a["x"].shape[-1]
    check("y", fastnn.softmax(a["x"], backend=backend), R.softmax(f64(a["x"])), dtype, V)
    check("dx", fastnn.softmax_backward(a["dy"], a["y"], backend=backend),
          R.softmax_backward(f64(a["dy"]), f64(a["y"])), dtype, V)
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("softmax_cross_entropy"))
def test_softmax_cross_entropy(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    x, t = a["x"], a["target"]
    V, R_ = x.shape[-1], x.size // x.shape[-1]
    loss, probs = fastnn.softmax_cross_entropy(x, t, ignore_index=-1, eps=p["eps"], backend=backend)
    rloss, rprobs = R.softmax_cross_entropy(f64(x), t if t.dtype.kind == "i" else f64(t), -1, p["eps"])
    close_loss("loss", loss, rloss, dtype, V * R_)
    check("probs", probs, rprobs, dtype, V)
    rp = rprobs.astype(dtype)
    dx = fastnn.softmax_cross_entropy_backward(rp, t, 0.7, ignore_index=-1, backend=backend)
    check("dx", dx, R.softmax_cross_entropy_backward(f64(rp), t if t.dtype.kind == "i" else f64(t), 0.7, -1),
          dtype, V)
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("sigmoid_cross_entropy"))
def test_sigmoid_cross_entropy(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    x, t = a["x"], a["target"]
    loss, y = fastnn.sigmoid_cross_entropy(x, t, eps=p["eps"], backend=backend)
    rloss, ry = R.sigmoid_cross_entropy(f64(x), t, p["eps"])
    close_loss("loss", loss, rloss, dtype, x.size)
    check("y", y, ry, dtype, 1)
    ry = ry.astype(dtype)
    check("dx", fastnn.sigmoid_cross_entropy_backward(ry, t, 1.5, backend=backend),
          R.sigmoid_cross_entropy_backward(f64(ry), t, 1.5), dtype, 2)
    assert_unchanged(before, a)


# ---------------------------------------------------------------------------- the reference's gradients (FD)

@pytest.mark.parametrize("op", ELEMENTWISE + ("softmax",))
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5), (1,)])
def test_reference_backward_fd(op, shape):
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    if op == "relu":
        x[np.abs(x) < 1e-3] = 0.5           # away from the kink
    dx = getattr(R, op + "_backward")(dy, getattr(R, op)(x))
    np.testing.assert_allclose(dx, numgrad(lambda: np.sum(getattr(R, op)(x) * dy), x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("target", ["ids", "dense", "probs"])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (6,)])
def test_reference_softmax_cross_entropy_fd(target, shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 2
    V = shape[-1]
    if target == "ids":
        t = rng.integers(0, V, shape[:-1])
        if t.size > 1:
            t.reshape(-1)[0] = -100                     # an ignored row
    elif target == "dense":
        t = np.eye(V)[rng.integers(0, V, shape[:-1])]
    else:
        w = rng.uniform(size=shape)
        t = w / w.sum(-1, keepdims=True)
    _, probs = R.softmax_cross_entropy(x, t)
    dx = R.softmax_cross_entropy_backward(probs, t, 1.3)
    np.testing.assert_allclose(dx, numgrad(lambda: 1.3 * R.softmax_cross_entropy(x, t)[0], x), rtol=1e-6, atol=1e-8)


def test_reference_sigmoid_cross_entropy_fd():
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((3, 5)) * 3, rng.uniform(size=(3, 5))
    _, y = R.sigmoid_cross_entropy(x, t)
    dx = R.sigmoid_cross_entropy_backward(y, t, 0.8)
    np.testing.assert_allclose(dx, numgrad(lambda: 0.8 * R.sigmoid_cross_entropy(x, t)[0], x), rtol=1e-6, atol=1e-8)


def test_reference_losses_match_the_books_formulas():
    """eps > 0: the books' -log(p[t] + eps) and -(t log(y+eps) + (1-t) log(1-y+eps)); eps = 0: the same numbers
    taken in the stable forms."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 7))
    t = rng.integers(0, 7, 6)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for eps in (0.0, 1e-7):
        assert R.softmax_cross_entropy(x, t, eps=eps)[0] == pytest.approx(-np.mean(np.log(p[np.arange(6), t] + eps)),
                                                                           rel=1e-13)
    xs, ts = rng.standard_normal(9) * 4, rng.integers(0, 2, 9)
    y = 1 / (1 + np.exp(-xs))
    for eps in (0.0, 1e-7):
        book = -np.mean(ts * np.log(y + eps) + (1 - ts) * np.log(1 - y + eps))
        assert R.sigmoid_cross_entropy(xs, ts, eps)[0] == pytest.approx(book, rel=1e-12)


# ------------------------------------------------------------------------------------------------ conventions

@pytest.mark.parametrize("backend", ALL_BACKENDS)
@dtypes
def test_special_values(backend, dtype):
    """NaN stays NaN in relu/sigmoid/tanh; +-inf saturate; relu's gradient is 0 at y = 0."""
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 1e-30, -100.0, 100.0], dtype)
    y = fastnn.relu(x, backend=backend)
    np.testing.assert_array_equal(y, np.array([np.nan, 0, np.inf, 0, 0, 1e-30, 0, 100], dtype))
    np.testing.assert_array_equal(fastnn.relu_backward(np.ones_like(x), y, backend=backend),
                                  np.array([0, 0, 1, 0, 0, 1, 0, 1], dtype))
    s = fastnn.sigmoid(x, backend=backend)
    assert np.isnan(s[0]) and s[2] == 1 and s[3] == 0.5 and s[7] == 1
    assert 0 <= s[1] < 1e-37 and 0 <= s[6] < 1e-37          # e^-100 (or a flush near the float32 limit)
    th = fastnn.tanh(x, backend=backend)
    assert np.isnan(th[0]) and th[1] == -1 and th[2] == 1 and th[3] == 0 and th[5] == dtype(1e-30)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@dtypes
def test_softmax_huge_logits(backend, dtype):
    """No overflow for logits far beyond exp's range; the loss of a label 300 below the max is ~300, finite."""
    x = np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0], [-300.0, 0.0, 0.0]], dtype)
    p = fastnn.softmax(x, backend=backend)
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3] * 3, [0, 0.5, 0.5]], atol=1e-30 if dtype == np.float64 else 1e-37,
                               rtol=1e-6)
    loss, _ = fastnn.softmax_cross_entropy(x, np.array([1, 0, 0]), backend=backend)
    assert loss == pytest.approx((1000 + np.log(3) + 300 + np.log(2)) / 3, rel=1e-6)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_ignored_rows_and_label_dtypes(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = np.array([1, -1, 3, -1, 0, 2])
    ref = R.softmax_cross_entropy(f64(x), t, -1)[0]
    for lab in (t, t.astype(np.int32), t.astype(np.int16), t.astype(np.int8)):
        loss, probs = fastnn.softmax_cross_entropy(x, lab, ignore_index=-1, backend=backend)
        assert loss == pytest.approx(ref, rel=1e-6)
        dx = fastnn.softmax_cross_entropy_backward(probs, lab, ignore_index=-1, backend=backend)
        assert not dx[[1, 3]].any() and dx[[0, 2, 4, 5]].sum() == pytest.approx(0, abs=1e-6)
        np.testing.assert_allclose(dx[0], (probs[0] - np.eye(4)[1]) / 4, rtol=1e-6)
    # all rows ignored: loss 0.0 and a zero gradient (no division by zero)
    loss, probs = fastnn.softmax_cross_entropy(x, np.full(6, -100), backend=backend)
    assert loss == 0.0 and type(loss) is float
    assert not fastnn.softmax_cross_entropy_backward(probs, np.full(6, -100), backend=backend).any()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_one_hot_int_and_scalar_targets(backend):
    """An integer array of x's shape is a one-hot target; a 1-D x takes a Python int label."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3))
    ids = rng.integers(0, 3, 5)
    onehot = np.eye(3, dtype=np.int64)[ids]
    a = fastnn.softmax_cross_entropy(x, onehot, backend=backend)[0]
    b = fastnn.softmax_cross_entropy(x, ids, backend=backend)[0]
    assert a == pytest.approx(b, rel=1e-12)
    l1, p1 = fastnn.softmax_cross_entropy(x[2], int(ids[2]), backend=backend)
    assert l1 == pytest.approx(-np.log(R.softmax(x[2])[ids[2]]), rel=1e-12)
    np.testing.assert_allclose(fastnn.softmax_cross_entropy_backward(p1, int(ids[2]), backend=backend),
                               p1 - np.eye(3)[ids[2]], rtol=1e-12, atol=1e-15)
    t = rng.integers(0, 2, (5, 3))
    for tt in (t, t.astype(bool), t.astype(np.float64)):
        assert fastnn.sigmoid_cross_entropy(x, tt, backend=backend)[0] == pytest.approx(
            R.sigmoid_cross_entropy(x, t)[0], rel=1e-12)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("tdtype", [np.int32, np.int64, np.float32])
@pytest.mark.parametrize("eps", [0.0, 1e-7])
def test_sigmoid_cross_entropy_target_dtypes(backend, tdtype, eps):
    """float32 x with each native target dtype, a length with a SIMD tail (the AVX-512 loop converts in registers)."""
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(37) * 4).astype(np.float32)
    t = rng.integers(0, 2, 37).astype(tdtype)
    loss, y = fastnn.sigmoid_cross_entropy(x, t, eps, backend=backend)
    rloss, ry = R.sigmoid_cross_entropy(f64(x), t, eps)
    close_loss("loss", loss, rloss, np.float32, x.size)
    check("y", y, ry, np.float32, 1)
    check("dx", fastnn.sigmoid_cross_entropy_backward(y, t, backend=backend),
          R.sigmoid_cross_entropy_backward(f64(y), t), np.float32, 2)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("fn", ["softmax_cross_entropy", "softmax_cross_entropy_backward"])
@pytest.mark.parametrize("bad,where", [(4, 0), (-2, 3), (1 << 40, 5)])
def test_label_outside_the_classes_is_refused(backend, fn, bad, where):
    x = np.random.default_rng(7).standard_normal((6, 4))
    t = np.array([0, 1, 2, 3, -1, 1])
    t[where] = bad
    before = t.copy()
    with pytest.raises(ValueError) as e:
        getattr(fastnn, fn)(R.softmax(x), t, ignore_index=-1, backend=backend)
    assert str(e.value) == f"target: label {bad} at position {where} is outside [0, 4) and is not ignore_index (-1)"
    np.testing.assert_array_equal(t, before)


# ------------------------------------------------------------------------------------ cpu kernel properties

def test_losses_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((300, 2000)).astype(np.float32)
    t = rng.integers(0, 2000, 300)
    xs, ts = rng.standard_normal(300_000).astype(np.float32), rng.integers(0, 2, 300_000)
    n = fastnn.get_num_threads()
    try:
        out = []
        for threads in (1, 2, 3):
            fastnn.set_num_threads(threads)
            out.append((fastnn.softmax_cross_entropy(x, t)[0], fastnn.sigmoid_cross_entropy(xs, ts)[0]))
    finally:
        fastnn.set_num_threads(n)
    assert out[0] == out[1] == out[2]


@pytest.mark.parametrize("op", ELEMENTWISE + ("softmax",))
def test_cpu_threaded_sizes_and_tails(op):
    """Sizes across the threading threshold, rows not a multiple of the SIMD width, non-contiguous input."""
    rng = np.random.default_rng(9)
    for shape in [(1, 1), (3, 17), (257, 301), (40, 4099)]:
        for dt in (np.float32, np.float64):
            x = (rng.standard_normal(shape) * 4).astype(dt)
            check(op, getattr(fastnn, op)(x, backend="cpu"), getattr(R, op)(f64(x)), dt, shape[-1])
    x = rng.standard_normal((20, 30)).T
    np.testing.assert_allclose(getattr(fastnn, op)(x, backend="cpu"), getattr(R, op)(x.copy()), rtol=1e-13,
                               atol=1e-15)


def test_vmath_accuracy_in_ulps():
    """sigmoid and tanh (vmath.h) against float64 over a dense range: within 4 ulps of the float result."""
    x = np.concatenate([np.linspace(-30, 30, 200_001), np.geomspace(1e-30, 1, 1000),
                        -np.geomspace(1e-30, 1, 1000)]).astype(np.float32)
    for op, ref in (("sigmoid", lambda a: 1 / (1 + np.exp(-a))), ("tanh", np.tanh)):
        y = getattr(fastnn, op)(x, backend="cpu").astype(np.float64)
        r = ref(x.astype(np.float64))
        ulp = np.spacing(np.abs(r).astype(np.float32)).astype(np.float64)
        keep = np.abs(r) > 1e-37                       # sigmoid far below: exp's clamp, not an ulp question
        assert np.max(np.abs(y - r)[keep] / ulp[keep]) <= 4, op


@pytest.mark.skipif(os.environ.get("FASTNN_SIMD") in ("scalar", "avx2"), reason="already a fallback run")
@pytest.mark.parametrize("simd", ["avx2", "scalar"])
def test_fallback_kernels_subprocess(simd):
    """The cpu tests above once more with the AVX-512 (avx2) or all SIMD (scalar) kernels switched off."""
    env = dict(os.environ, FASTNN_SIMD=simd)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "(cpu or vmath) and not subprocess"], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
