"""fastnn cuda pool2d / batch_norm / lstm on a real GPU: correctness at realistic sizes, then timings against
cuDNN / PyTorch on the same device.

    python3 dev/gpu_pool_bn_lstm.py [--reps 30] [--kernels] [--host-profile] [--only bn,pool,lstm]

(on the lent H100, whose numpy 2.5 breaks numba-cuda, first: python3 -m pip install -q --no-index --no-deps
 --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD)

Each row: median of CUDA-event timings of single calls (Python launch overhead included, on both sides) after
warm-up; GB/s counts compulsory traffic (each input read once, each output written once); "x torch" is
torch time / fastnn time (> 1: fastnn faster). Outputs come from PyTorch's allocator, poisoned with NaN first,
so an unwritten element fails the check. Tolerance: |out-ref| <= rtol*(max|ref| + |ref|) against float64.
With $OUT set, the table is also written to $OUT/misc_table.txt. What it measured is in docs/log.md.
"""
import argparse
import importlib
import importlib.metadata
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
P, B, L = (importlib.import_module("fastnn.cuda." + m) for m in ("pool2d", "batch_norm", "lstm"))
from numba import cuda  # noqa: E402
from _cuda_events import bench  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
aten = torch.ops.aten


def bench_loop(fn, n=20):
    """Per-call time of n back-to-back calls: max(host time, GPU time) when the host runs ahead."""
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) * 1e-3 / n


def kernel_times(fn, n=5):
    """{kernel name: mean device time per call (us)} of fn's GPU kernels, from the CUDA profiler."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            k = e.key[:40]
            out[k] = out.get(k, 0.0) + t / n      # names are cut: variants of one kernel add up
    return out


def poison():
    t = torch.full((torch.cuda.mem_get_info()[0] // 8 // 4,), float("nan"), device="cuda")
    del t


def check(out, ref, rtol):
    out, ref = torch.as_tensor(out, device="cuda").double(), ref.double()
    err = (out - ref).abs()
    ok = bool(torch.all(err <= rtol * (ref.abs().max() + ref.abs())).item()) and not torch.isnan(out).any().item()
    return ok, (err.max() / ref.abs().max()).item()


def resources(k):
    """Registers and local memory (spills show up there) of each compiled version of a kernel."""
    try:
        return "; ".join(f"regs {v.regs_per_thread} local {v.local_mem_per_thread}B" for v in k.overloads.values())
    except Exception as e:  # pragma: no cover - reporting only
        return f"({type(e).__name__}: {e})"


ROWS = []       # the table, printed last
KROWS = []      # per-kernel device times (--kernels)


def row(name, t_ours, t_torch, nbytes=None, ok=None, rel=None, f_ours=None, f_torch=None):
    """One table row; f_ours/f_torch (the calls) add back-to-back timings and the kernels' device times."""
    gbs = f"{nbytes / t_ours / 1e9:7.0f}" if nbytes else "      -"
    tgbs = f"{nbytes / t_torch / 1e9:7.0f}" if nbytes else "      -"
    okstr = "" if ok is None else f"{ok} {rel:.1e}"
    loop = ""
    if f_ours is not None:
        lo, lt = bench_loop(f_ours), bench_loop(f_torch)
        loop = f"{lo*1e6:8.1f} {lt*1e6:8.1f}"
        if ARGS.kernels:
            ko, kt = kernel_times(f_ours), kernel_times(f_torch)
            KROWS.append(f"{name}: fastnn " + ", ".join(f"{k} {v:.1f}" for k, v in ko.items())
                         + f" | torch {sum(kt.values()):.1f} us in {len(kt)} kernels")
    ROWS.append(f"{name:34s} {t_ours*1e6:9.1f} {gbs} {t_torch*1e6:9.1f} {tgbs} {t_torch/t_ours:7.2f} {loop:17s}  {okstr}")


def timed(name, f_ours, f_torch, nbytes=None, checks=None):
    row(name, bench(f_ours, ARGS.reps), bench(f_torch, ARGS.reps), nbytes,
        None if checks is None else all(o for o, _ in checks), None if checks is None else max(r for _, r in checks),
        f_ours, f_torch)


def bn_rows(shape, reps, split=False):
    """split=True: the stats/apply kernels even where a channel fits one block (the A/B of the one-block path)."""
    limit = B.BLOCK_MAX
    B.BLOCK_MAX = 0 if split else limit
    try:
        _bn_rows(shape, reps, " split" if split else "")
    finally:
        B.BLOCK_MAX = limit


def _bn_rows(shape, reps, tag):
    torch.manual_seed(0)
    C = shape[1]
    x = torch.randn(shape, device=dev) * 2 + 3
    g, b = torch.randn(C, device=dev), torch.randn(C, device=dev)
    rm, rv = torch.randn(C, device=dev), torch.rand(C, device=dev) + 0.5
    rm_t, rv_t = rm.clone(), rv.clone()
    x64 = x.double().requires_grad_()
    g64, b64 = g.double().requires_grad_(), b.double().requires_grad_()
    rm64, rv64 = rm.double(), rv.double()
    y64 = F.batch_norm(x64, rm64, rv64, g64, b64, True, 0.1, 1e-5)
    dy = torch.randn(shape, device=dev)
    dx64, dg64, db64 = torch.autograd.grad(y64, (x64, g64, b64), dy.double())
    poison()
    y, mean, invstd = B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
    oks = [check(y, y64.detach(), 1e-5), check(rm, rm64, 1e-5), check(rv, rv64, 1e-5),
           check(mean, x64.detach().mean((0, 2, 3)) if x.dim() == 4 else x64.detach().mean(0), 1e-6)]
    poison()
    dx, dg, db = B.batch_norm_backward(dy, x, g, mean, invstd, True)
    oks_b = [check(dx, dx64, 1e-4), check(dg, dg64, 1e-4), check(db, db64, 1e-5)]
    nb = x.numel() * 4
    name = "x".join(map(str, shape)) + tag
    timed(f"bn fwd train {name}", lambda: B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5),
          lambda: F.batch_norm(x, rm_t, rv_t, g, b, True, 0.1, 1e-5), 2 * nb, oks)
    xr = x.clone().requires_grad_()
    gr, br = g.clone().requires_grad_(), b.clone().requires_grad_()
    yt = F.batch_norm(xr, rm_t, rv_t, gr, br, True, 0.1, 1e-5)
    timed(f"bn bwd train {name}", lambda: B.batch_norm_backward(dy, x, g, mean, invstd, True),
          lambda: torch.autograd.grad(yt, (xr, gr, br), dy, retain_graph=True), 3 * nb, oks_b)
    timed(f"bn fwd eval {name}", lambda: B.batch_norm(x, g, b, rm, rv, False, 0.1, 1e-5),
          lambda: F.batch_norm(x, rm_t, rv_t, g, b, False, 0.1, 1e-5), 2 * nb)


def pool_rows(shape, k, s, p, reps):
    torch.manual_seed(1)
    x = torch.randn(shape, device=dev)
    yt, it = F.max_pool2d(x, k, s, p, return_indices=True)
    poison()
    y, ind = P.max_pool2d(x, (k, k), (s, s), (p, p))
    ok = torch.equal(y, yt) and torch.equal(ind, it)
    dy = torch.randn_like(yt)
    dxt = aten.max_pool2d_with_indices_backward(dy, x, [k, k], [s, s], [p, p], [1, 1], False, it)
    poison()
    dx1 = P.max_pool2d_backward(dy, ind, shape)
    poison()
    dx2 = P.max_pool2d_backward(dy, ind, shape, (k, k), (s, s), (p, p))
    ok1, r1 = check(dx1, dxt, 1e-6)
    ok2, r2 = check(dx2, dxt, 1e-6)
    name = f"{k}x{k}/{s} p{p} " + "x".join(map(str, shape))
    nx, ny = x.numel() * 4, yt.numel() * 4
    timed(f"maxpool fwd {name}", lambda: P.max_pool2d(x, (k, k), (s, s), (p, p)),
          lambda: F.max_pool2d(x, k, s, p, return_indices=True), nx + 3 * ny, [(ok, 0.0)])
    tbw = lambda: aten.max_pool2d_with_indices_backward(dy, x, [k, k], [s, s], [p, p], [1, 1], False, it)  # noqa
    timed(f"maxpool bwd(no geom) {name}", lambda: P.max_pool2d_backward(dy, ind, shape), tbw, nx + 3 * ny,
          [(ok1, r1)])
    timed(f"maxpool bwd(geom) {name}", lambda: P.max_pool2d_backward(dy, ind, shape, (k, k), (s, s), (p, p)),
          tbw, nx + 3 * ny, [(ok2, r2)])
    ya = F.avg_pool2d(x.double(), k, s, p)
    poison()
    oka, ra = check(P.avg_pool2d(x, (k, k), (s, s), (p, p), True), ya, 1e-6)
    dxa = aten.avg_pool2d_backward(dy.double(), x.double(), [k, k], [s, s], [p, p], False, True, None)
    poison()
    okb, rb = check(P.avg_pool2d_backward(dy, shape, (k, k), (s, s), (p, p), True), dxa, 1e-6)
    timed(f"avgpool fwd {name}", lambda: P.avg_pool2d(x, (k, k), (s, s), (p, p), True),
          lambda: F.avg_pool2d(x, k, s, p), nx + ny, [(oka, ra)])
    timed(f"avgpool bwd {name}", lambda: P.avg_pool2d_backward(dy, shape, (k, k), (s, s), (p, p), True),
          lambda: aten.avg_pool2d_backward(dy, x, [k, k], [s, s], [p, p], False, True, None), nx + ny, [(okb, rb)])


def lstm_rows(N, D, H, T, reps):
    torch.manual_seed(2)
    cell = torch.nn.LSTMCell(D, H, device=dev)
    wi = cell.weight_ih.detach().t().contiguous()
    wh = cell.weight_hh.detach().t().contiguous()
    bias = (cell.bias_ih + cell.bias_hh).detach()
    x, h, c = (torch.randn(N, D, device=dev), torch.randn(N, H, device=dev), torch.randn(N, H, device=dev))
    cell64 = torch.nn.LSTMCell(D, H, device=dev, dtype=torch.float64)
    cell64.load_state_dict(cell.state_dict())
    with torch.no_grad():
        h64, c64 = cell64(x.double(), (h.double(), c.double()))
        poison()
        hn, cn, _ = L.lstm_cell(x, h, c, wi, wh, bias, "ifgo")
        okh, rh = check(hn, h64, 1e-4)
        okc, rc = check(cn, c64, 1e-4)
        timed(f"lstm_cell fwd {N},{D},{H}", lambda: L.lstm_cell(x, h, c, wi, wh, bias, "ifgo"),
              lambda: cell(x, (h, c)), None, [(okh, rh), (okc, rc)])
    xs = torch.randn(N, T, D, device=dev)

    def torch_loop(xs, h, c, cell):
        out = []
        for t in range(xs.shape[1]):
            h, c = cell(xs[:, t], (h, c))
            out.append(h)
        return torch.stack(out, 1), h, c

    with torch.no_grad():
        hs64, _, _ = torch_loop(xs.double(), h.double(), c.double(), cell64)
        poison()
        hs, h_n, c_n, cache = L.lstm(xs, h, c, wi, wh, bias, "ifgo")
        oks, rs = check(hs, hs64, 1e-4)
        timed(f"lstm fwd T={T} {N},{D},{H}", lambda: L.lstm(xs, h, c, wi, wh, bias, "ifgo"),
              lambda: torch_loop(xs, h, c, cell), None, [(oks, rs)])
    # backward: fastnn's BPTT vs autograd through the LSTMCell loop (dx, dh0, dc0, dW, db)
    xr, hr, cr = xs.clone().requires_grad_(), h.clone().requires_grad_(), c.clone().requires_grad_()
    hs_t, _, _ = torch_loop(xr, hr, cr, cell)
    dhs = torch.randn_like(hs_t)
    params = (xr, hr, cr, cell.weight_ih, cell.weight_hh, cell.bias_ih)
    gref = torch.autograd.grad(hs_t, params, dhs, retain_graph=True)
    poison()
    dxs, dh0, dc0, dwi, dwh, db = L.lstm_backward(dhs, None, None, cache)
    okb = [check(dxs, gref[0], 1e-3), check(dh0, gref[1], 1e-3), check(dc0, gref[2], 1e-3),
           check(dwi, gref[3].t(), 1e-3), check(dwh, gref[4].t(), 1e-3), check(db, gref[5], 1e-3)]
    timed(f"lstm bwd T={T} {N},{D},{H}", lambda: L.lstm_backward(dhs, None, None, cache),
          lambda: torch.autograd.grad(hs_t, params, dhs, retain_graph=True), None, okb)


def host_profile():
    """Where the host time of a small call goes (launch overhead counts at these sizes)."""
    import cProfile
    import pstats
    x = torch.randn(32, 256, 14, 14, device=dev)
    g, b, rm, rv = (torch.rand(256, device=dev) + 0.5 for _ in range(4))
    xs = torch.randn(64, 4, 512, device=dev)
    wi, wh, bias = torch.randn(512, 2048, device=dev), torch.randn(512, 2048, device=dev), torch.randn(2048, device=dev)
    for f in (lambda: B.batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5), lambda: L.lstm(xs, None, None, wi, wh, bias)):
        f()
        torch.cuda.synchronize()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(50):
            f()
        torch.cuda.synchronize()
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(14)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--only", default="bn,pool,lstm")
    ap.add_argument("--kernels", action="store_true", help="per-kernel device times from the CUDA profiler")
    ap.add_argument("--host-profile", action="store_true", help="cProfile of the host path of small calls")
    global ARGS
    ARGS = args = ap.parse_args()
    print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| numba-cuda",
          importlib.metadata.version("numba-cuda"))
    a = torch.empty(256 * 2**20 // 4, device=dev)
    bb = torch.empty_like(a)
    tc = bench(lambda: bb.copy_(a), args.reps)
    print(f"device copy: {2 * a.numel() * 4 / tc / 1e9:.0f} GB/s")
    del a, bb
    only = args.only.split(",")
    t0 = time.time()
    jobs = []
    if "bn" in only:
        jobs += [(bn_rows, (shape, args.reps)) for shape in ((128, 64, 56, 56), (32, 256, 14, 14), (256, 1024))]
        jobs += [(bn_rows, (shape, args.reps, True)) for shape in ((32, 256, 14, 14), (256, 1024))]
    if "pool" in only:
        jobs += [(pool_rows, ((128, 64, 56, 56), 2, 2, 0, args.reps)), (pool_rows, ((128, 64, 56, 56), 3, 2, 1, args.reps))]
    if "lstm" in only:
        jobs += [(lstm_rows, (64, 512, 512, 32, args.reps))]
    for fn, a in jobs:           # one failure must not cost the rest of the (scarce) GPU run
        try:
            fn(*a)
        except Exception:
            traceback.print_exc()
            ROWS.append(f"{fn.__name__}{a[:-1]}: FAILED (traceback above)")
        torch.cuda.empty_cache()
    kern = [B.bn_fwd_stats, B.bn_fwd_apply, B.bn_bwd_stats, B.bn_bwd_apply, B.bn_fwd__block, B.bn_bwd__block,
            P.max_pool2d_fwd__k2s2,
            P.max_pool2d_fwd__naive, P.max_pool2d_bwd__cells, P.max_pool2d_bwd__gather, P.max_pool2d_bwd__scatter,
            P.avg_pool2d_fwd__k2s2, P.avg_pool2d_bwd__gather, P.max_pool2d_bwd__k2s2, P.max_pool2d_fwd__fixed(3, 3),
            P.avg_pool2d_fwd__fixed(3, 3), L.lstm_fwd_step, L.lstm_bwd_step, L.colsum]
    for k in kern:
        if k.overloads:
            print(f"{k.py_func.__name__:28s} {resources(k)}")
    print(f"checks+timings {time.time() - t0:.0f} s")
    if args.host_profile:
        host_profile()
    print("\n".join(KROWS))
    print(f"{'op':34s} {'fastnn us':>9s} {'GB/s':>7s} {'torch us':>9s} {'GB/s':>7s} {'x torch':>7s} "
          f"{'loop20: ours  torch':19s} ok rel-err")
    print("\n".join(ROWS))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "misc_table.txt"), "w") as fh:
            fh.write("\n".join(ROWS) + "\n")


if __name__ == "__main__":
    main()
