"""Small calls of the textbook ops (rnn/gru cells, linear, dropout, embedding, tanh) against the books' NumPy code
and PyTorch (2 threads), side by side in one process: the median of many calls of each side, the three sides
interleaved over several rounds (best median kept), float32. Book code as book 1/2 write it (RNN.forward/backward,
Affine, Dropout with a stored mask, Embedding W[idx], np.tanh).
Run from the repository root: python dev/small_calls_vs_books.py [--quick] [filter ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastnn  # noqa: E402
from activations_vs_books import compare  # noqa: E402  (interleaved medians)

torch.set_num_threads(2)
F = torch.nn.functional
QUICK = "--quick" in sys.argv
FILTERS = [a for a in sys.argv[1:] if not a.startswith("--")]


def _t(a):
    return torch.from_numpy(a)


def cells(rng):
    out = []
    for N, D, H in [(1, 100, 100), (8, 64, 64), (20, 100, 100), (64, 512, 512)]:
        lab = f"B{N} D{D} H{H}"
        x = rng.standard_normal((N, D)).astype(np.float32)
        h = rng.standard_normal((N, H)).astype(np.float32)
        Wx = (rng.standard_normal((D, H)) * 0.1).astype(np.float32)
        Wh = (rng.standard_normal((H, H)) * 0.1).astype(np.float32)
        b = rng.standard_normal(H).astype(np.float32)
        dh = rng.standard_normal((N, H)).astype(np.float32)
        hn, cache = fastnn.rnn_cell(x, h, Wx, Wh, b)

        def book_f(x=x, h=h, Wx=Wx, Wh=Wh, b=b):
            return np.tanh(np.dot(h, Wh) + np.dot(x, Wx) + b)

        def book_b(x=x, h=h, Wx=Wx, Wh=Wh, hn=hn, dh=dh):
            dt = dh * (1 - hn ** 2)
            db = np.sum(dt, axis=0)
            dWh = np.dot(h.T, dt)
            dh_prev = np.dot(dt, Wh.T)
            dWx = np.dot(x.T, dt)
            dx = np.dot(dt, Wx.T)
            return db, dWh, dh_prev, dWx, dx
        cell = torch.nn.RNNCell(D, H)
        xt, ht = _t(x), _t(h)
        xg, hg = xt.clone().requires_grad_(True), ht.clone().requires_grad_(True)
        yg = cell(xg, hg)
        params = [xg, hg] + list(cell.parameters())
        out += [("rnn_cell", lab, lambda x=x, h=h, Wx=Wx, Wh=Wh, b=b: fastnn.rnn_cell(x, h, Wx, Wh, b), book_f,
                 lambda c=cell, xt=xt, ht=ht: c(xt, ht)),
                ("rnn_cell_backward", lab, lambda dh=dh, cache=cache: fastnn.rnn_cell_backward(dh, cache), book_b,
                 lambda yg=yg, p=params, d=_t(dh): torch.autograd.grad(yg, p, d, retain_graph=True))]
        if N == 64 or N == 20:
            Wx3 = (rng.standard_normal((D, 3 * H)) * 0.1).astype(np.float32)
            Wh3 = (rng.standard_normal((H, 3 * H)) * 0.1).astype(np.float32)
            b3 = rng.standard_normal(3 * H).astype(np.float32)
            _, gc = fastnn.gru_cell(x, h, Wx3, Wh3, b3, b3, gate_order="rzn")
            g = torch.nn.GRUCell(D, H)
            yg2 = g(xg, hg)
            p2 = [xg, hg] + list(g.parameters())

            def book_gru(x=x, h=h, Wx=Wx3, Wh=Wh3, b=b3, H=H):  # book 2's GRU.forward
                Wxz, Wxr, Wxh = Wx[:, :H], Wx[:, H:2 * H], Wx[:, 2 * H:]
                Whz, Whr, Whh = Wh[:, :H], Wh[:, H:2 * H], Wh[:, 2 * H:]
                z = 1 / (1 + np.exp(-(np.dot(x, Wxz) + np.dot(h, Whz))))
                r = 1 / (1 + np.exp(-(np.dot(x, Wxr) + np.dot(h, Whr))))
                hh = np.tanh(np.dot(x, Wxh) + np.dot(r * h, Whh))
                return (1 - z) * h + z * hh
            out += [("gru_cell", lab, lambda x=x, h=h, a=Wx3, c=Wh3, b=b3: fastnn.gru_cell(x, h, a, c, b, b, "rzn"),
                     book_gru, lambda c=g, xt=xt, ht=ht: c(xt, ht)),
                    ("gru_cell_backward", lab, lambda dh=dh, gc=gc: fastnn.gru_cell_backward(dh, gc), None,
                     lambda yg=yg2, p=p2, d=_t(dh): torch.autograd.grad(yg, p, d, retain_graph=True))]
    return out


def dense(rng):
    out = []
    for N, D, M in [(1, 784, 100), (20, 100, 100), (100, 100, 10), (100, 100, 100), (100, 784, 100)]:
        x = rng.standard_normal((N, D)).astype(np.float32)
        W = (rng.standard_normal((D, M)) * 0.1).astype(np.float32)
        b = rng.standard_normal(M).astype(np.float32)
        lin = torch.nn.Linear(D, M)
        out.append(("linear", f"{N}x{D}->{M}", lambda x=x, W=W, b=b: fastnn.linear(x, W, b),
                    lambda x=x, W=W, b=b: np.dot(x, W) + b, lambda lin=lin, xt=_t(x): lin(xt)))
    for shape in [(100, 100), (100, 784), (700, 650)]:
        x = rng.standard_normal(shape).astype(np.float32)
        mask = np.random.rand(*shape) > 0.5
        out.append(("dropout", "x".join(map(str, shape)), lambda x=x: fastnn.dropout(x, 0.5, 1),
                    lambda x=x: x * (np.random.rand(*x.shape) > 0.5), lambda xt=_t(x): F.dropout(xt, 0.5, True)))
        out.append(("dropout_backward", "x".join(map(str, shape)), lambda x=x: fastnn.dropout_backward(x, 0.5, 1),
                    lambda x=x, m=mask: x * m, lambda xt=_t(x), m=_t(mask): xt * m))
    for n, V, D in [(1, 10000, 100), (20, 10000, 100), (100, 10000, 100)]:
        W = rng.standard_normal((V, D)).astype(np.float32)
        idx = rng.integers(0, V, n)
        emb = torch.nn.Embedding(V, D)
        out.append(("embedding", f"{n} of {V}x{D}", lambda i=idx, W=W: fastnn.embedding(i, W),
                    lambda i=idx, W=W: W[i], lambda e=emb, i=_t(idx): e(i)))
    return out


def acts(rng):
    out = []
    for N, D in [(20, 100), (100, 100), (100, 1000)]:
        x = (rng.standard_normal((N, D)) * 3).astype(np.float32)
        out.append(("tanh", f"{N}x{D}", lambda x=x: fastnn.tanh(x), lambda x=x: np.tanh(x),
                    lambda xt=_t(x): torch.tanh(xt)))
    return out


def main():
    rng = np.random.default_rng(0)
    rows = cells(rng) + dense(rng) + acts(rng)
    print(f"{'op':22} {'shape':>16} {'fastnn us':>10} {'book us':>10} {'torch us':>10} {'book/fn':>8} "
          f"{'torch/fn':>8}  goal")
    for op, lab, fn, book, tor in rows:
        if FILTERS and not any(f in op for f in FILTERS):
            continue
        ctx = torch.no_grad() if not op.endswith("backward") else torch.enable_grad()
        with ctx:
            fns = [fn, book or fn, tor]
            a, b, c = compare(fns, rounds=2 if QUICK else 3)
        if book is None:
            b = float("nan")
        ok = not (b < a) and (c >= a if c >= 20 else c * 1.5 >= a)
        print(f"{op:22} {lab:>16} {a:10.1f} {b:10.1f} {c:10.1f} {b / a:8.2f} {c / a:8.2f}  {'ok' if ok else 'MISS'}",
              flush=True)


if __name__ == "__main__":
    main()
