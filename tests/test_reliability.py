"""Threads, GIL release, leaks, large tensors: the things that make a kernel library trustworthy."""
import threading
import time

import numpy as np
import pytest

import fastnn
from test_errors import VALID


def _valid(fn, backend="cpu"):
    return VALID[fn](backend) if fn.startswith(("lstm", "rnn", "gru")) and fn.endswith("backward") else VALID[fn]()


def _call(fn, backend="cpu"):
    out = getattr(fastnn, fn)(**_valid(fn, backend), backend=backend)
    out = out if isinstance(out, tuple) else (out,)
    return [np.asarray(o) for o in out if isinstance(o, np.ndarray)]


OPS = sorted(VALID)


def test_threads_match_sequential():
    # 8 Python threads call every op at once; each result equals the sequential one exactly.
    expected = {fn: _call(fn) for fn in OPS}
    errors, results = [], {}

    def worker(k):
        try:
            for rep in range(5):
                for fn in OPS[k % len(OPS):] + OPS[:k % len(OPS)]:
                    results[(k, rep, fn)] = _call(fn)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8 * 5 * len(OPS)
    for (k, rep, fn), got in results.items():
        for a, b in zip(got, expected[fn]):
            np.testing.assert_array_equal(a, b, err_msg=f"{fn} in thread {k}")


def test_gil_is_released():
    # While a long C++ kernel runs in one thread, the main thread keeps running Python code.
    x = np.random.default_rng(0).standard_normal((16, 64, 56, 56)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    fastnn.conv2d(x, w, padding=1)  # warm up
    done = threading.Event()

    def run():
        for _ in range(3):
            fastnn.conv2d(x, w, padding=1)
        done.set()

    t = threading.Thread(target=run)
    ticks = 0
    t0 = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    elapsed = time.perf_counter() - t0
    # With the GIL held, the loop above would stall for the whole kernel (a handful of ticks per switch interval).
    assert ticks > 1000 * elapsed, (ticks, elapsed)


def test_set_num_threads():
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert fastnn.get_num_threads() == 1
        one = _call("conv2d")
        fastnn.set_num_threads(2)
        assert fastnn.get_num_threads() == 2
        for a, b in zip(one, _call("conv2d")):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    finally:
        fastnn.set_num_threads(before)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastnn.set_num_threads(0)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.parametrize("fn", OPS)
def test_no_leaks(fn):
    # 10 000 calls leave resident memory flat (after a warm-up that fills allocator caches).
    kwargs = _valid(fn)
    f = getattr(fastnn, fn)
    for _ in range(500):
        f(**kwargs, backend="cpu")
    before = _rss_mb()
    for _ in range(10_000):
        f(**kwargs, backend="cpu")
    assert _rss_mb() - before < 8, f"{fn}: resident memory grew by {_rss_mb() - before:.1f} MB"


@pytest.mark.slow
def test_im2col_past_2_31_elements():
    # The column buffer has more than 2**31 elements: every index is 64-bit end to end.
    H = W = 15_500
    x = np.random.default_rng(0).standard_normal((1, 1, H, W)).astype(np.float32)
    col = fastnn.im2col(x, 3, padding=1)
    assert col.shape == (H * W, 9) and col.size > 2**31
    for oh, ow in [(0, 0), (H - 1, W - 1), (H // 2, 123), (H - 1, 7), (12_000, W - 2)]:
        patch = [x[0, 0, ih, iw] if 0 <= ih < H and 0 <= iw < W else 0.0
                 for ih in range(oh - 1, oh + 2) for iw in range(ow - 1, ow + 2)]
        np.testing.assert_array_equal(col[oh * W + ow], np.array(patch, np.float32))
    del col
    back = fastnn.col2im(fastnn.im2col(x[:, :, :4, :], 3, padding=1), (1, 1, 4, W), 3, padding=1)
    np.testing.assert_allclose(back, fastnn.reference.col2im(fastnn.reference.im2col(x[:, :, :4, :], 3, 1, 1, 1),
                                                             (1, 1, 4, W), 3, 1, 1, 1), rtol=1e-5, atol=1e-5)


LAYOUTS = {
    "fortran": np.asfortranarray,
    "negative_strides": lambda a: a[::-1].copy()[::-1],
    "read_only": lambda a: _read_only(a),
    "strided_view": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
}


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("fn", OPS)
def test_any_memory_layout_gives_the_same_answer(fn, layout, backend):
    # Non-contiguous, Fortran-ordered, negatively strided and read-only inputs are accepted and copied once;
    # running stats are updated in place, so they are left as they are.
    kwargs = _valid(fn, backend)
    want = getattr(fastnn, fn)(**kwargs, backend=backend)
    moved = {k: LAYOUTS[layout](v) if isinstance(v, np.ndarray) and v.ndim > 1 and k != "indices" else v
             for k, v in _valid(fn, backend).items()}
    got = getattr(fastnn, fn)(**moved, backend=backend)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_read_only_running_stats_are_refused():
    kwargs = VALID["batch_norm"]()
    kwargs["running_var"] = _read_only(kwargs["running_var"])
    with pytest.raises(ValueError, match="running_var is updated in place"):
        fastnn.batch_norm(**kwargs)


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_nan_and_inf_propagate_as_in_the_reference(backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    x[0, 1, 2, 3], x[1, 2, 0, 0], x[1, 0, 5, 5] = np.nan, np.inf, -np.inf
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    # an LSTM whose inputs hold a NaN and an Inf (one row each): the activations must not clamp them away
    rng = np.random.default_rng(2)
    xs, w_ih, w_hh = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4, 5), (5, 24), (6, 24)))
    xs[0, 1, 2], xs[2, 0, 0] = np.nan, np.inf
    for fn, args in [("conv2d", (x, w)), ("max_pool2d", (x, 2)), ("avg_pool2d", (x, 3, 1, 1)),
                     ("batch_norm", (x,)), ("im2col", (x, 3)), ("lstm", (xs, None, None, w_ih, w_hh, None)),
                     ("lstm", (xs.astype(np.float64), None, None, w_ih.astype(np.float64), w_hh.astype(np.float64),
                               None))]:
        got = getattr(fastnn, fn)(*args, backend=backend)
        want = getattr(fastnn, fn)(*args, backend="numpy")
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            if not isinstance(b, np.ndarray):
                continue  # the LSTM's cache
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=fn)
            np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=fn)
