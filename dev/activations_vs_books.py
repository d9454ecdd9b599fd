"""fastnn's activations family against the books' NumPy code and PyTorch (2 threads), side by side in one process.

Each row: the median of many calls of each side, the three sides interleaved over several rounds (best median
kept), float32. Book code as the books write it: book 1's Relu/Sigmoid layers, book 2's tanh in the RNN, Softmax
layer, TimeSoftmaxWithLoss (ignore_label -1) and SigmoidWithLoss (np.c_ + cross_entropy_error, eps 1e-7).
Run from the repository root: python dev/activations_vs_books.py [--quick]
"""
import sys
import time

import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastnn  # noqa: E402

torch.set_num_threads(2)
F = torch.nn.functional
QUICK = "--quick" in sys.argv


def median_us(fn, budget=0.15, most=2000):
    fn()
    ts, t_end = [], time.perf_counter() + budget
    while len(ts) < 5 or (time.perf_counter() < t_end and len(ts) < most):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(ts))


def compare(fns, rounds=3):
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, f in enumerate(fns):
            best[i] = min(best[i], median_us(f))
    return best


def book_cases(rng):
    """(op, shape label, fastnn call, book call, torch call)."""
    out = []
    for N, D in [(20, 100), (100, 100), (100, 1000), (64, 12544), (100, 17280), (2048, 4096)]:
        out += _elementwise(rng, N, D)
    for R_, V in [(1, 10), (100, 10), (100, 100), (20, 10000), (100, 10000), (700, 10000)]:
        out += _rows(rng, R_, V)
    for n in [100, 600, 10000, 1000000]:
        out += _binary(rng, n)
    return out


def _elementwise(rng, N, D):
    out = []
    x = (rng.standard_normal((N, D)) * 3).astype(np.float32)
    dy = rng.standard_normal((N, D)).astype(np.float32)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    lab = f"{N}x{D}"
    mask = x <= 0
    y = fastnn.relu(x)

    def book_relu():
        m = (x <= 0)
        o = x.copy()
        o[m] = 0
    d_in = dy.copy()

    def book_relu_b():
        d_in[mask] = 0
    xg = xt.clone().requires_grad_(True)
    yr = F.relu(xg)
    out += [("relu", lab, lambda: fastnn.relu(x), book_relu, lambda: F.relu(xt)),
            ("relu_backward", lab, lambda: fastnn.relu_backward(dy, y), book_relu_b,
             lambda: torch.autograd.grad(yr, xg, dyt, retain_graph=True))]
    ys = fastnn.sigmoid(x)
    ysg = torch.sigmoid(xg)
    out += [("sigmoid", lab, lambda: fastnn.sigmoid(x), lambda: 1 / (1 + np.exp(-x)), lambda: torch.sigmoid(xt)),
            ("sigmoid_backward", lab, lambda: fastnn.sigmoid_backward(dy, ys), lambda: dy * (1.0 - ys) * ys,
             lambda: torch.autograd.grad(ysg, xg, dyt, retain_graph=True))]
    yt = fastnn.tanh(x)
    ytg = torch.tanh(xg)
    out += [("tanh", lab, lambda: fastnn.tanh(x), lambda: np.tanh(x), lambda: torch.tanh(xt)),
            ("tanh_backward", lab, lambda: fastnn.tanh_backward(dy, yt), lambda: dy * (1 - yt ** 2),
             lambda: torch.autograd.grad(ytg, xg, dyt, retain_graph=True))]
    return out


def _rows(rng, R_, V):
    out = []
    x = (rng.standard_normal((R_, V)) * 3).astype(np.float32)
    dy = rng.standard_normal((R_, V)).astype(np.float32)
    t = rng.integers(0, V, R_)
    t[::50] = -1
    xt, dyt, tt = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(t)
    lab = f"{R_}x{V}"
    p = fastnn.softmax(x)

    def book_softmax():
        a = x - x.max(axis=1, keepdims=True)
        a = np.exp(a)
        a /= a.sum(axis=1, keepdims=True)

    def book_softmax_b():
        dx = p * dy
        s = np.sum(dx, axis=1, keepdims=True)
        dx -= p * s

    def book_xent():
        mask = (t != -1)
        ys = x - x.max(axis=1, keepdims=True)
        ys = np.exp(ys)
        ys /= ys.sum(axis=1, keepdims=True)
        ls = np.log(ys[np.arange(R_), t])
        ls *= mask
        return -np.sum(ls) / mask.sum()
    ys_book = p.copy()

    def book_xent_b():
        mask = (t != -1)
        dx = ys_book
        dx[np.arange(R_), t] -= 1
        dx *= 1
        dx /= mask.sum()
        dx *= mask[:, np.newaxis]
    xg = xt.clone().requires_grad_(True)
    sg = F.softmax(xg, -1)
    lg = F.cross_entropy(xg, tt, ignore_index=-1)
    out += [("softmax", lab, lambda: fastnn.softmax(x), book_softmax, lambda: F.softmax(xt, -1)),
            ("softmax_backward", lab, lambda: fastnn.softmax_backward(dy, p), book_softmax_b,
             lambda: torch.autograd.grad(sg, xg, dyt, retain_graph=True)),
            ("softmax_cross_entropy", lab, lambda: fastnn.softmax_cross_entropy(x, t, ignore_index=-1), book_xent,
             lambda: F.cross_entropy(xt, tt, ignore_index=-1)),
            ("softmax_cross_entropy_backward", lab,
             lambda: fastnn.softmax_cross_entropy_backward(p, t, ignore_index=-1), book_xent_b,
             lambda: torch.autograd.grad(lg, xg, retain_graph=True)),
            ("softmax_xent fwd+bwd", lab,
             lambda: fastnn.softmax_cross_entropy_backward(fastnn.softmax_cross_entropy(x, t, -1)[1], t,
                                                           ignore_index=-1),
             lambda: (book_xent(), book_xent_b()),
             lambda: torch.autograd.grad(F.cross_entropy(xg, tt, ignore_index=-1), xg))]
    return out


def _binary(rng, n):
    out = []
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    t = rng.integers(0, 2, n).astype(np.int32)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t.astype(np.float32))
    lab = f"{n}"
    _, y = fastnn.sigmoid_cross_entropy(x, t, 1e-7)

    def book_sxent():
        yy = 1 / (1 + np.exp(-x))
        y2 = np.c_[1 - yy, yy]
        return -np.sum(np.log(y2[np.arange(n), t] + 1e-7)) / n
    xg = xt.clone().requires_grad_(True)
    lg = F.binary_cross_entropy_with_logits(xg, tt)
    out += [("sigmoid_cross_entropy", lab, lambda: fastnn.sigmoid_cross_entropy(x, t, 1e-7), book_sxent,
             lambda: F.binary_cross_entropy_with_logits(xt, tt)),
            ("sigmoid_cross_entropy_backward", lab, lambda: fastnn.sigmoid_cross_entropy_backward(y, t),
             lambda: (y - t) * 1 / n, lambda: torch.autograd.grad(lg, xg, retain_graph=True))]
    return out


def main():
    rows = book_cases(np.random.default_rng(0))
    print(f"{'op':32} {'shape':>10} {'fastnn us':>10} {'book us':>10} {'torch us':>10} {'book/fn':>8} "
          f"{'torch/fn':>8}  goal")
    for op, lab, fn, book, tor in rows:
        with torch.no_grad() if not op.endswith(("backward", "bwd")) else torch.enable_grad():
            a, b, c = compare([fn, book, tor], rounds=2 if QUICK else 3)
        ok = b >= a and (c >= a if c >= 20 else c * 1.5 >= a)
        print(f"{op:32} {lab:>10} {a:10.1f} {b:10.1f} {c:10.1f} {b / a:8.2f} {c / a:8.2f}  {'ok' if ok else 'MISS'}",
              flush=True)


if __name__ == "__main__":
    main()
