"""The rnn family (rnn_cell, rnn, gru_cell, gru; forward and backward): every backend against fastnn.reference on
float64 copies of the same inputs (cases in fastnn/optable.py), the reference against finite differences, book 2's
RNN/GRU code and PyTorch's nn.RNN/nn.GRU, and the cpu kernel's thread and SIMD paths."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import reference as R
from fastnn.optable import arrays
from test_ops import ALL_BACKENDS, assert_unchanged, check, dtypes, f64, params, snapshot
from test_reference import check_grads

rng = np.random.default_rng(7)


def randn(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ------------------------------------------------------------------------------------- backends vs reference

def check_cache(cache, ref, backend, dtype, k, fields):
    assert type(cache) is type(ref) and cache.backend == backend
    for name in fields:
        check(f"cache.{name}", getattr(cache, name), getattr(ref, name), dtype, k, on_host=False)


def _k(p):
    """The longest sum behind one output (gates: D+H terms, weight gradients N*T), compounded over the steps."""
    return p.get("t", 1) * (p["d"] + p["h"] + p["n"])


@dtypes
@pytest.mark.parametrize("backend,case", params("rnn_cell"))
def test_rnn_cell(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    fwd = [a[n] for n in ("x", "h", "w_ih", "w_hh", "bias")]
    h1, cache = fastnn.rnn_cell(*fwd, backend=backend)
    rh1, rcache = R.rnn_cell(*map(f64, fwd))
    check("h_next", h1, rh1, dtype, _k(p))
    check_cache(cache, rcache, backend, dtype, _k(p), ("x", "h", "w_ih", "w_hh", "hs"))
    grads = fastnn.rnn_cell_backward(a["dh_next"], cache)
    rgrads = R.rnn_cell_backward(f64(a["dh_next"]), rcache)
    assert len(grads) == 5
    for name, g, r in zip(("dx", "dh", "dw_ih", "dw_hh", "dbias"), grads, rgrads):
        check(name, g, r, dtype, _k(p))        # dh and dbias come back even when h or bias were None
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("rnn"))
def test_rnn(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    fwd = [a[n] for n in ("xs", "h0", "w_ih", "w_hh", "bias")]
    hs, h_n, cache = fastnn.rnn(*fwd, backend=backend)
    rhs, rh_n, rcache = R.rnn(*map(f64, fwd))
    check("hs", hs, rhs, dtype, _k(p))
    check("h_n", h_n, rh_n, dtype, _k(p))
    check_cache(cache, rcache, backend, dtype, _k(p), ("x", "h", "w_ih", "w_hh", "hs"))
    grads = fastnn.rnn_backward(a["dhs"], a["dh_n"], cache)
    rgrads = R.rnn_backward(f64(a["dhs"]), f64(a["dh_n"]), rcache)
    assert len(grads) == 5
    for name, g, r in zip(("dxs", "dh0", "dw_ih", "dw_hh", "dbias"), grads, rgrads):
        check(name, g, r, dtype, _k(p))
    assert_unchanged(before, a)


GRU_FIELDS = ("x", "h", "w_ih", "w_hh", "gates", "hs", "hn")


def check_gru_grads(grads, rgrads, a, dtype, k, names):
    assert len(grads) == 6
    for name, g, r in zip(names, grads, rgrads):
        if r is None:                          # db_* of a bias that was None
            assert g is None, f"{name} must be None when its bias was None"
        else:
            check(name, g, r, dtype, k)
    assert (grads[4] is None) == (a["b_ih"] is None) and (grads[5] is None) == (a["b_hh"] is None)


@dtypes
@pytest.mark.parametrize("backend,case", params("gru_cell"))
def test_gru_cell(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    fwd = [a[n] for n in ("x", "h", "w_ih", "w_hh", "b_ih", "b_hh")]
    h1, cache = fastnn.gru_cell(*fwd, gate_order=p["gate_order"], backend=backend)
    rh1, rcache = R.gru_cell(*map(f64, fwd), gate_order=p["gate_order"])
    check("h_next", h1, rh1, dtype, _k(p))
    check_cache(cache, rcache, backend, dtype, _k(p), GRU_FIELDS)
    assert cache.gate_order == p["gate_order"] and (cache.has_b_ih, cache.has_b_hh) == (rcache.has_b_ih,
                                                                                        rcache.has_b_hh)
    grads = fastnn.gru_cell_backward(a["dh_next"], cache)
    rgrads = R.gru_cell_backward(f64(a["dh_next"]), rcache)
    check_gru_grads(grads, rgrads, a, dtype, _k(p), ("dx", "dh", "dw_ih", "dw_hh", "db_ih", "db_hh"))
    assert_unchanged(before, a)


@dtypes
@pytest.mark.parametrize("backend,case", params("gru"))
def test_gru(backend, case, dtype):
    a, p = arrays(case, dtype), case.p
    before = snapshot(a)
    fwd = [a[n] for n in ("xs", "h0", "w_ih", "w_hh", "b_ih", "b_hh")]
    hs, h_n, cache = fastnn.gru(*fwd, gate_order=p["gate_order"], backend=backend)
    rhs, rh_n, rcache = R.gru(*map(f64, fwd), gate_order=p["gate_order"])
    check("hs", hs, rhs, dtype, _k(p))
    check("h_n", h_n, rh_n, dtype, _k(p))
    check_cache(cache, rcache, backend, dtype, _k(p), GRU_FIELDS)
    grads = fastnn.gru_backward(a["dhs"], a["dh_n"], cache)
    rgrads = R.gru_backward(f64(a["dhs"]), f64(a["dh_n"]), rcache)
    check_gru_grads(grads, rgrads, a, dtype, _k(p), ("dxs", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"))
    assert_unchanged(before, a)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs(backend):
    xs = randn(4, 2, 6).transpose(1, 0, 2).astype(np.float32)[:, :3]     # (2, 3, 6), strided
    wi, wh = randn(6, 9, scale=0.4).astype(np.float32), randn(9, 3, scale=0.4).astype(np.float32).T
    out = fastnn.gru(xs, None, wi, wh, gate_order="rzn", backend=backend)[0]
    ref = R.gru(*(np.ascontiguousarray(a) for a in (xs,)), None, wi, np.ascontiguousarray(wh), gate_order="rzn")[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    out = fastnn.rnn(xs, None, wi[:, ::3], wh[:, ::3], None, backend=backend)[0]
    ref = R.rnn(np.ascontiguousarray(xs), None, np.ascontiguousarray(wi[:, ::3]), np.ascontiguousarray(wh[:, ::3]),
                None)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- the reference: finite differences

@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_rnn_backward_fd(with_state, with_bias):
    n, t, d, h = 2, 3, 3, 4
    xs, wi, wh = randn(n, t, d), randn(d, h, scale=0.6), randn(h, h, scale=0.6)
    h0 = randn(n, h) if with_state else None
    bias = randn(h) if with_bias else None
    dhs, dh_n = randn(n, t, h), randn(n, h)

    def loss():
        hs, h_n, _ = R.rnn(xs, h0, wi, wh, bias)
        return np.sum(hs * dhs) + np.sum(h_n * dh_n)

    hs, h_n, cache = R.rnn(xs, h0, wi, wh, bias)
    np.testing.assert_array_equal(h_n, hs[:, -1])
    dxs, dh0, dwi, dwh, db = R.rnn_backward(dhs, dh_n, cache)
    pairs = [("dxs", xs, dxs), ("dw_ih", wi, dwi), ("dw_hh", wh, dwh)]
    pairs += [("dh0", h0, dh0)] if with_state else []
    pairs += [("dbias", bias, db)] if with_bias else []
    check_grads(loss, pairs)
    # the cell is the sequence's one step; None upstream gradients are zeros
    h1, c1 = R.rnn_cell(xs[:, 0], h0, wi, wh, bias)
    np.testing.assert_allclose(h1, R.rnn(xs[:, :1], h0, wi, wh, bias)[0][:, 0], rtol=1e-15)
    g1 = R.rnn_cell_backward(dh_n, c1)
    for a, b in zip(g1, R.rnn_backward(dh_n[:, None], None, R.rnn(xs[:, :1], h0, wi, wh, bias)[2])):
        np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-13, atol=1e-15)
    for a, b in zip(R.rnn_backward(None, None, cache), R.rnn_backward(0 * dhs, 0 * dh_n, cache)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gate_order", ["zrh", "rzn"])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("biases", ["both", "ih", "none"])
def test_gru_backward_fd(gate_order, with_state, biases):
    n, t, d, h = 2, 3, 3, 4
    xs, wi, wh = randn(n, t, d), randn(d, 3 * h, scale=0.6), randn(h, 3 * h, scale=0.6)
    h0 = randn(n, h) if with_state else None
    b_ih = randn(3 * h) if biases != "none" else None
    b_hh = randn(3 * h) if biases == "both" else None
    dhs, dh_n = randn(n, t, h), randn(n, h)

    def loss():
        hs, h_n, _ = R.gru(xs, h0, wi, wh, b_ih, b_hh, gate_order)
        return np.sum(hs * dhs) + np.sum(h_n * dh_n)

    hs, h_n, cache = R.gru(xs, h0, wi, wh, b_ih, b_hh, gate_order)
    assert cache.gates.shape == (n, t, 3 * h) and cache.hn.shape == (n, t, h)
    np.testing.assert_array_equal(h_n, hs[:, -1])
    dxs, dh0, dwi, dwh, dbi, dbh = R.gru_backward(dhs, dh_n, cache)
    pairs = [("dxs", xs, dxs), ("dw_ih", wi, dwi), ("dw_hh", wh, dwh)]
    pairs += [("dh0", h0, dh0)] if with_state else []
    pairs += [("db_ih", b_ih, dbi)] if b_ih is not None else []
    pairs += [("db_hh", b_hh, dbh)] if b_hh is not None else []
    check_grads(loss, pairs)
    assert (dbi is None) == (b_ih is None) and (dbh is None) == (b_hh is None)
    # the cell's gradients are the one-step sequence's
    h1, c1 = R.gru_cell(xs[:, 0], h0, wi, wh, b_ih, b_hh, gate_order)
    seq = R.gru(xs[:, :1], h0, wi, wh, b_ih, b_hh, gate_order)
    np.testing.assert_allclose(h1, seq[0][:, 0], rtol=1e-15)
    for a, b in zip(R.gru_cell_backward(dh_n, c1), R.gru_backward(dh_n[:, None], None, seq[2])):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a.reshape(b.shape), b, rtol=1e-13, atol=1e-15)


def test_gru_orders_differ_only_where_they_should():
    """Both layouts agree when r does not matter (U_h/U_n = 0): then zrh's h~ and rzn's n are tanh(x W + b), and
    with z swapped for 1-z (the two blend in opposite directions: sig(-a) = 1 - sig(a)) the outputs are equal."""
    n, d, h = 3, 4, 5
    x, h0 = randn(n, d), randn(n, h)
    wi, wh, b = randn(d, 3 * h), randn(h, 3 * h), randn(3 * h)
    wh[:, 2 * h:] = 0
    zrh = lambda w, u, bb: R.gru_cell(x, h0, w, u, bb, None, "zrh")[0]
    # rzn with blocks (r, z, n) = (r, -z, h~): its 1 - sig(-a) is zrh's z
    perm = lambda a: np.concatenate([a[..., h:2 * h], -a[..., :h], a[..., 2 * h:]], axis=-1)
    np.testing.assert_allclose(R.gru_cell(x, h0, perm(wi), perm(wh), perm(b), None, "rzn")[0], zrh(wi, wh, b),
                               rtol=1e-12)
    wh[:, 2 * h:] = randn(h, h)                   # now r enters, before (zrh) or after (rzn) the product
    assert not np.allclose(R.gru_cell(x, h0, perm(wi), perm(wh), perm(b), None, "rzn")[0], zrh(wi, wh, b))


# ------------------------------------------------------------------------------- book 2's code and PyTorch
# Book 2 (Deep Learning from Scratch 2, common/time_layers.py): RNN/TimeRNN and GRU/TimeGRU, written out again
# here in its layout (Wx (D, 3H) and Wh (H, 3H) with blocks z, r, h~; no bias in the GRU; h starts at zeros), one
# layer object per step, and its backward as it derives it. fastnn's "zrh" reference must give its numbers.

def _sig(a):
    return 1 / (1 + np.exp(-a))


class BookGRU:
    def __init__(self, Wx, Wh):
        self.Wx, self.Wh = Wx, Wh

    def forward(self, x, h_prev):
        H = self.Wh.shape[0]
        Wx, Wh = self.Wx, self.Wh
        z = _sig(x @ Wx[:, :H] + h_prev @ Wh[:, :H])
        r = _sig(x @ Wx[:, H:2 * H] + h_prev @ Wh[:, H:2 * H])
        h_hat = np.tanh(x @ Wx[:, 2 * H:] + (r * h_prev) @ Wh[:, 2 * H:])
        self.cache = (x, h_prev, z, r, h_hat)
        return (1 - z) * h_prev + z * h_hat

    def backward(self, dh_next):
        H = self.Wh.shape[0]
        Wx, Wh = self.Wx, self.Wh
        x, h_prev, z, r, h_hat = self.cache
        dt = dh_next * z * (1 - h_hat ** 2)                  # through h~
        dhr = dt @ Wh[:, 2 * H:].T
        dWx_h, dWh_h, dx = x.T @ dt, (r * h_prev).T @ dt, dt @ Wx[:, 2 * H:].T
        dh_prev = dh_next * (1 - z) + r * dhr
        dt = (dh_next * h_hat - dh_next * h_prev) * z * (1 - z)     # update gate
        dWx_z, dWh_z = x.T @ dt, h_prev.T @ dt
        dh_prev += dt @ Wh[:, :H].T
        dx += dt @ Wx[:, :H].T
        dt = dhr * h_prev * r * (1 - r)                      # reset gate
        dWx_r, dWh_r = x.T @ dt, h_prev.T @ dt
        dh_prev += dt @ Wh[:, H:2 * H].T
        dx += dt @ Wx[:, H:2 * H].T
        self.dWx = np.hstack((dWx_z, dWx_r, dWx_h))
        self.dWh = np.hstack((dWh_z, dWh_r, dWh_h))
        return dx, dh_prev


class BookRNN:
    def __init__(self, Wx, Wh, b):
        self.Wx, self.Wh, self.b = Wx, Wh, b

    def forward(self, x, h_prev):
        h_next = np.tanh(h_prev @ self.Wh + x @ self.Wx + self.b)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        x, h_prev, h_next = self.cache
        dt = dh_next * (1 - h_next ** 2)
        self.grads = (x.T @ dt, h_prev.T @ dt, dt.sum(axis=0))
        return dt @ self.Wx.T, dt @ self.Wh.T


def book_time_layer(make, xs, dhs, H):
    """TimeRNN / TimeGRU: forward from h = 0, backward of dhs; (hs, dxs, summed weight grads, final dh)."""
    N, T, _ = xs.shape
    layers, h, hs = [], np.zeros((N, H)), np.empty((N, T, H))
    for t in range(T):
        layers.append(make())
        h = hs[:, t] = layers[-1].forward(xs[:, t], h)
    dxs, dh, grads = np.empty_like(xs), 0, None
    for t in reversed(range(T)):
        dxs[:, t], dh = layers[t].backward(dhs[:, t] + dh)
        g = layers[t].grads if hasattr(layers[t], "grads") else (layers[t].dWx, layers[t].dWh)
        grads = g if grads is None else tuple(a + b for a, b in zip(grads, g))
    return hs, dxs, grads, dh


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_gru_zrh_gives_book2_numbers(backend):
    N, T, D, H = 3, 5, 4, 6
    xs, Wx, Wh, dhs = randn(N, T, D), randn(D, 3 * H, scale=0.5), randn(H, 3 * H, scale=0.5), randn(N, T, H)
    hs, dxs, (dWx, dWh), dh = book_time_layer(lambda: BookGRU(Wx, Wh), xs, dhs, H)
    out, h_n, cache = fastnn.gru(xs, None, Wx, Wh, gate_order="zrh", backend=backend)
    np.testing.assert_allclose(out, hs, rtol=1e-12, atol=1e-14)
    g = fastnn.gru_backward(dhs, None, cache)
    for name, mine, book in zip(("dxs", "dh0", "dw_ih", "dw_hh"), g, (dxs, dh, dWx, dWh)):
        np.testing.assert_allclose(mine, book, rtol=1e-11, atol=1e-13, err_msg=name)
    assert g[4] is None and g[5] is None            # the book's GRU has no bias


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_rnn_gives_book2_numbers(backend):
    N, T, D, H = 3, 5, 4, 6
    xs, Wx, Wh, b, dhs = randn(N, T, D), randn(D, H, scale=0.5), randn(H, H, scale=0.5), randn(H), randn(N, T, H)
    hs, dxs, (dWx, dWh, db), dh = book_time_layer(lambda: BookRNN(Wx, Wh, b), xs, dhs, H)
    out, h_n, cache = fastnn.rnn(xs, None, Wx, Wh, b, backend=backend)
    np.testing.assert_allclose(out, hs, rtol=1e-12, atol=1e-14)
    for name, mine, book in zip(("dxs", "dh0", "dw_ih", "dw_hh", "dbias"), fastnn.rnn_backward(dhs, None, cache),
                                (dxs, dh, dWx, dWh, db)):
        np.testing.assert_allclose(mine, book, rtol=1e-11, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("op", ["rnn", "gru"])
def test_rnn_gru_match_pytorch(op, backend):
    """The tanh RNN and the "rzn" GRU are nn.RNN / nn.GRU with weight_ih = w_ih.T, weight_hh = w_hh.T."""
    torch = pytest.importorskip("torch")
    N, T, D, H = 3, 4, 5, 6
    G = 3 * H if op == "gru" else H
    xs, h0, wi, wh = randn(N, T, D), randn(N, H), randn(D, G, scale=0.5), randn(H, G, scale=0.5)
    bi, bh = randn(G), randn(G)
    m = (torch.nn.GRU(D, H, batch_first=True) if op == "gru" else torch.nn.RNN(D, H, batch_first=True)).double()
    with torch.no_grad():
        for name, a in (("weight_ih_l0", wi.T), ("weight_hh_l0", wh.T), ("bias_ih_l0", bi), ("bias_hh_l0", bh)):
            getattr(m, name).copy_(torch.from_numpy(np.ascontiguousarray(a)))
    xt, ht = torch.from_numpy(xs).requires_grad_(), torch.from_numpy(h0[None].copy()).requires_grad_()
    out_t, hn_t = m(xt, ht)
    dhs, dh_n = randn(N, T, H), randn(N, H)
    tg = torch.autograd.grad((out_t, hn_t), (xt, ht, *m.parameters()),
                             (torch.from_numpy(dhs), torch.from_numpy(dh_n[None].copy())))
    if op == "gru":
        out, h_n, cache = fastnn.gru(xs, h0, wi, wh, bi, bh, "rzn", backend=backend)
        g = fastnn.gru_backward(dhs, dh_n, cache)
        expect = (tg[0], tg[1][0], tg[2].T, tg[3].T, tg[4], tg[5])
    else:   # fastnn's RNN has one bias: PyTorch's two enter as their sum, each with the same gradient
        out, h_n, cache = fastnn.rnn(xs, h0, wi, wh, bi + bh, backend=backend)
        g = fastnn.rnn_backward(dhs, dh_n, cache)
        expect = (tg[0], tg[1][0], tg[2].T, tg[3].T, tg[4])
        np.testing.assert_allclose(tg[4].numpy(), tg[5].numpy())
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, hn_t.detach().numpy()[0], rtol=1e-12, atol=1e-14)
    for i, (mine, theirs) in enumerate(zip(g, expect)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-11, atol=1e-13, err_msg=f"gradient {i}")


# ----------------------------------------------------------------------------------------- the cpu kernels

def test_cpu_same_bits_on_any_thread_count():
    """With 16+ batch rows per thread each thread runs its own rows through every step (csrc/recurrence.h); with
    fewer the threads share each step's GEMMs. Both split only independent work: the same bits either way."""
    N, T, D, H = 40, 6, 19, 21
    xs, h0 = randn(N, T, D).astype(np.float32), randn(N, H).astype(np.float32)
    wi, wh = randn(D, 3 * H, scale=0.3).astype(np.float32), randn(H, 3 * H, scale=0.3).astype(np.float32)
    b = randn(3 * H).astype(np.float32)
    dhs = randn(N, T, H).astype(np.float32)
    threads = fastnn.get_num_threads()
    try:
        for order in ("zrh", "rzn", "rnn"):
            runs = []
            for nt in (1, 2, 3):
                fastnn.set_num_threads(nt)
                if order == "rnn":
                    hs, _, c = fastnn.rnn(xs, h0, wi[:, :H], wh[:, :H], b[:H], backend="cpu")
                    runs.append((hs, *fastnn.rnn_backward(dhs, None, c)))
                else:
                    hs, _, c = fastnn.gru(xs, h0, wi, wh, b, b, order, backend="cpu")
                    runs.append((hs, *fastnn.gru_backward(dhs, None, c)))
            for other in runs[1:]:
                for a, b_ in zip(runs[0], other):
                    np.testing.assert_array_equal(a, b_)
    finally:
        fastnn.set_num_threads(threads)


@pytest.mark.skipif(os.environ.get("FASTNN_SIMD") is not None, reason="already a forced-variant run")
@pytest.mark.parametrize("simd", ["avx2", "scalar"])
def test_cpu_narrower_simd_subprocess(simd):
    """The cpu tests of this file once more with a narrower kernel variant (fixed at load time): AVX2/FMA without
    AVX-512, and the scalar fallback."""
    env = dict(os.environ, FASTNN_SIMD=simd)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "cpu and not subprocess and not cuda"], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
