"""Dev timing for the CPU pool2d / batch_norm / lstm kernels against PyTorch, side by side in one process.

    PYTHONPATH=. python dev/cpu_pool_bn_lstm.py [--reps 7] [--only pool,bn,lstm]

Best of --reps runs (after one warm-up), fastnn and torch alternated so both see the same load; GB/s counts the
minimum bytes each op must read + write, next to a measured copy (read + write) of a same-size array. Same thread
count for both libraries (OMP_NUM_THREADS). LSTM times depend on fastnn::gemm (csrc/gemm.cpp).
The "step" and "fwd+bwd" rows time a forward and its backward as a training step runs them, PyTorch's through
autograd (torch.autograd.grad of the same gradients fastnn returns, nothing accumulated into .grad).
"""
import argparse
import time

import numpy as np

from fastnn import _C, _cpu

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def best(f, reps):
    return best_pair(f, None, reps)[0]


def best_pair(f, g, reps):
    """Best times of f and g over reps runs each, alternated so that both see the same load on a shared machine."""
    f(), g and g()
    tf, tg = [], []
    for _ in range(reps):
        for fn, ts in ((f, tf), (g, tg)):
            if fn:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
    return min(tf), (min(tg) if tg else float("nan"))


def row(name, f_fast, f_torch, nbytes, reps):
    a, b = best_pair(f_fast, f_torch or None, reps)
    gbs = f"{nbytes / a / 1e9:7.1f}" if nbytes else "      -"
    print(f"{name:<34} {a * 1e3:9.3f} {b * 1e3:9.3f} {b / a:7.2f}x {gbs}", flush=True)


def lstm_case(rng, Tn, torch):
    """LSTM forward + backward at B64 D=H=512: the cell (Tn == 0) or Tn steps. Returns (make(cpu) -> callable
    running it on a `_cpu`-like module, the PyTorch equivalent or None, its FLOPs: 3 x 2*B*T*(D+H)*4H)."""
    B, D, H = 64, 512, 512
    w_ih = rng.standard_normal((D, 4 * H), dtype=np.float32) * 0.05
    w_hh = rng.standard_normal((H, 4 * H), dtype=np.float32) * 0.05
    bias = rng.standard_normal(4 * H, dtype=np.float32) * 0.1
    h0, c0 = rng.standard_normal((B, H), dtype=np.float32), rng.standard_normal((B, H), dtype=np.float32)
    flop = 3 * 2.0 * B * max(Tn, 1) * (D + H) * 4 * H
    if Tn == 0:
        xin = rng.standard_normal((B, D), dtype=np.float32)
        dh, dc = rng.standard_normal((B, H), dtype=np.float32), rng.standard_normal((B, H), dtype=np.float32)

        def make(cpu):
            def f():
                _, _, cache = cpu.lstm_cell(xin, h0, c0, w_ih, w_hh, bias, "ifgo")
                cpu.lstm_cell_backward(dh, dc, cache)
            return f
    else:
        xin = rng.standard_normal((B, Tn, D), dtype=np.float32)
        dhs = rng.standard_normal((B, Tn, H), dtype=np.float32)

        def make(cpu):
            def f():
                _, _, _, cache = cpu.lstm(xin, h0, c0, w_ih, w_hh, bias, "ifgo")
                cpu.lstm_backward(dhs, None, None, cache)
            return f
    if not torch:
        return make, None, flop
    # PyTorch keeps (4H, D) weights and two biases: converted once, outside the timing
    mod = torch.nn.LSTMCell(D, H) if Tn == 0 else torch.nn.LSTM(D, H, batch_first=True)
    sfx = "" if Tn == 0 else "_l0"
    with torch.no_grad():
        getattr(mod, "weight_ih" + sfx).copy_(torch.from_numpy(w_ih.T.copy()))
        getattr(mod, "weight_hh" + sfx).copy_(torch.from_numpy(w_hh.T.copy()))
        getattr(mod, "bias_ih" + sfx).copy_(torch.from_numpy(bias))
        getattr(mod, "bias_hh" + sfx).zero_()
    txin = torch.from_numpy(xin).requires_grad_()
    th0, tc0 = torch.from_numpy(h0).requires_grad_(), torch.from_numpy(c0).requires_grad_()
    wrt = (txin, th0, tc0, *mod.parameters())  # the gradients fastnn returns; none accumulated into .grad
    if Tn == 0:
        tdh, tdc = torch.from_numpy(dh), torch.from_numpy(dc)

        def slow():
            h, c = mod(txin, (th0, tc0))
            torch.autograd.grad([h, c], wrt, [tdh, tdc])
    else:
        tdhs = torch.from_numpy(dhs)

        def slow():
            hs, _ = mod(txin, (th0[None], tc0[None]))
            torch.autograd.grad(hs, wrt, tdhs)
    return make, slow, flop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", default="pool,bn,lstm")
    args = ap.parse_args()
    only, reps = args.only.split(","), args.reps
    nt = _C.get_num_threads()
    if torch is not None:
        torch.set_num_threads(nt)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 56, 56), dtype=np.float32)
    dst = np.empty_like(x)
    copy = best(lambda: np.copyto(dst, x), reps)
    print(f"threads {nt}, simd {_C.config()['simd']}, torch {torch.__version__ if torch else 'absent'}; "
          f"copy of {x.nbytes / 1e6:.0f} MB: {2 * x.nbytes / copy / 1e9:.1f} GB/s (read + write)")
    print(f"{'case (float32)':<34} {'fastnn ms':>9} {'torch ms':>9} {'ratio':>8} {'GB/s':>7}")
    tx = torch.from_numpy(x) if torch else None
    S = x.nbytes

    if "pool" in only:
        for k, s, p in [(2, 2, 0), (3, 2, 1)]:
            y, idx = _cpu.max_pool2d(x, (k, k), (s, s), (p, p))
            dy = rng.standard_normal(y.shape, dtype=np.float32)
            ty, tidx = F.max_pool2d(tx, k, s, p, return_indices=True) if torch else (None, None)
            tdy = torch.from_numpy(dy) if torch else None
            row(f"max_pool2d fwd {k}x{k} s{s} p{p}", lambda: _cpu.max_pool2d(x, (k, k), (s, s), (p, p)),
                torch and (lambda: F.max_pool2d(tx, k, s, p, return_indices=True)), S + y.nbytes + idx.nbytes, reps)
            row(f"max_pool2d bwd {k}x{k} s{s} p{p}", lambda: _cpu.max_pool2d_backward(dy, idx, x.shape),
                torch and (lambda: torch.ops.aten.max_pool2d_with_indices_backward(tdy, tx, [k, k], [s, s], [p, p],
                                                                                    [1, 1], False, tidx)),
                S + dy.nbytes + idx.nbytes, reps)
            row(f"avg_pool2d fwd {k}x{k} s{s} p{p}", lambda: _cpu.avg_pool2d(x, (k, k), (s, s), (p, p), True),
                torch and (lambda: F.avg_pool2d(tx, k, s, p)), S + y.nbytes, reps)
            row(f"avg_pool2d bwd {k}x{k} s{s} p{p}",
                lambda: _cpu.avg_pool2d_backward(dy, x.shape, (k, k), (s, s), (p, p), True),
                torch and (lambda: torch.ops.aten.avg_pool2d_backward(tdy, tx, [k, k], [s, s], [p, p], False, True,
                                                                       None)), S + dy.nbytes, reps)

    if "bn" in only:
        C = x.shape[1]
        g, b = rng.standard_normal(C, dtype=np.float32), rng.standard_normal(C, dtype=np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        dy = rng.standard_normal(x.shape, dtype=np.float32)
        _, mean, invstd = _cpu.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
        if torch:
            tg, tb, trm, trv, tdy = map(torch.from_numpy, (g, b, rm.copy(), rv.copy(), dy))
            _, tmean, tinv = torch.ops.aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)
        row("batch_norm fwd train (32,64,56,56)", lambda: _cpu.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5),
            torch and (lambda: torch.ops.aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)), 2 * S, reps)
        row("batch_norm bwd train (32,64,56,56)", lambda: _cpu.batch_norm_backward(dy, x, g, mean, invstd, True),
            torch and (lambda: torch.ops.aten.native_batch_norm_backward(tdy, tx, tg, trm, trv, tmean, tinv, True,
                                                                          1e-5, [True, True, True])), 3 * S, reps)
        # Both as a training step runs them: PyTorch through autograd (fresh y and dx every call, as fastnn's).
        def bn_step():
            _, m, s = _cpu.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
            _cpu.batch_norm_backward(dy, x, g, m, s, True)

        if torch:
            wrt = (tx.detach().requires_grad_(), tg.requires_grad_(), tb.requires_grad_())

            def bn_step_torch():
                y = F.batch_norm(wrt[0], trm, trv, wrt[1], wrt[2], training=True)
                torch.autograd.grad(y, wrt, tdy)
        row("batch_norm step (32,64,56,56)", bn_step, torch and bn_step_torch, 5 * S, reps)
        x2 = rng.standard_normal((256, 1024), dtype=np.float32)
        g2, b2 = np.ones(1024, np.float32), np.zeros(1024, np.float32)
        tx2 = torch.from_numpy(x2) if torch else None
        row("batch_norm fwd train (256,1024)", lambda: _cpu.batch_norm(x2, g2, b2, None, None, True, 0.1, 1e-5),
            torch and (lambda: torch.ops.aten.native_batch_norm(tx2, torch.from_numpy(g2), torch.from_numpy(b2),
                                                                None, None, True, 0.1, 1e-5)), 2 * x2.nbytes, reps)

    if "lstm" in only:
        for name, Tn in [("lstm_cell fwd+bwd B64 D=H=512", 0), ("lstm fwd+bwd B64 T32 D=H=512", 32)]:
            fast, slow, _ = lstm_case(rng, Tn, torch)
            row(name, fast(_cpu), slow, 0, reps)

if __name__ == "__main__":
    main()
