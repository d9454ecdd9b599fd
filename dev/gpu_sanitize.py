"""Run every CUDA kernel once on small shapes (for compute-sanitizer memcheck/racecheck) and check the results.

    compute-sanitizer --tool memcheck python3 dev/gpu_sanitize.py
Shapes are small but cover several tiles/blocks and the edge paths (padding, stride > kernel, odd sizes)."""
import sys

import numpy as np
from numba import cuda

import fastnn
from fastnn import reference as ref


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def check(name, got, want, tol=1e-4):
    got, want = host(got).astype(np.float64), np.asarray(want, np.float64)
    err = np.max(np.abs(got - want) / (1 + np.abs(want))) if want.size else 0.0
    ok = err <= tol
    print(f"{name:28s} {'ok' if ok else 'FAIL'} {err:.1e}")
    return ok


def main():
    rng = np.random.default_rng(0)
    f = np.float32
    ok = True
    for (N, C, H, W, K, R, S, st, pd, dl, g) in [(2, 16, 19, 17, 24, 3, 3, 1, 1, 1, 1), (3, 8, 11, 13, 8, 1, 1, 2, 0, 1, 1),
                                                 (2, 8, 12, 10, 12, 3, 2, 3, 1, 2, 2)]:
        x, w, b = (rng.standard_normal(s).astype(f) for s in ((N, C, H, W), (K, C // g, R, S), (K,)))
        y = fastnn.conv2d(dev(x), dev(w), dev(b), st, pd, dl, g)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        ok &= check(f"conv2d {N,C,H,W,K,R,S}", y, ref.conv2d(x64, w64, b.astype(np.float64), st, pd, dl, g))
        dy = rng.standard_normal(host(y).shape).astype(f)
        for nm, got, want in zip(("dx", "dw", "db"), fastnn.conv2d_backward(dev(dy), dev(x), dev(w), st, pd, dl, g),
                                 ref.conv2d_backward(dy.astype(np.float64), x64, w64, st, pd, dl, g)):
            ok &= check(f"conv2d_backward {nm}", got, want)
        col = fastnn.im2col(dev(x), (R, S), st, pd, dl)
        ok &= check("im2col", col, ref.im2col(x64, (R, S), st, pd, dl))
        ok &= check("col2im", fastnn.col2im(col, x.shape, (R, S), st, pd, dl),
                    ref.col2im(host(col).astype(np.float64), x.shape, (R, S), st, pd, dl))
    x = rng.standard_normal((2, 5, 13, 11)).astype(f)
    for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 3, 1)]:
        y, idx = fastnn.max_pool2d(dev(x), k, s, p)
        wy, widx = ref.max_pool2d(x, k, s, p)
        ok &= check(f"max_pool2d k{k}s{s}p{p}", y, wy) & check("  indices", idx, widx, 0)
        dy = rng.standard_normal(wy.shape).astype(f)
        ok &= check("  max_pool2d_backward", fastnn.max_pool2d_backward(dev(dy), dev(widx), x.shape),
                    ref.max_pool2d_backward(dy, widx, x.shape))
        ok &= check("  avg_pool2d", fastnn.avg_pool2d(dev(x), k, s, p), ref.avg_pool2d(x, k, s, p))
        ok &= check("  avg_pool2d_backward", fastnn.avg_pool2d_backward(dev(dy), x.shape, k, s, p),
                    ref.avg_pool2d_backward(dy, x.shape, k, s, p))
    for shape in [(64, 7, 9, 9), (33, 5), (128, 3, 9, 9)]:       # one block per channel; the last: split
        x = rng.standard_normal(shape).astype(f)
        C = shape[1]
        g, b, rm, rv = (rng.standard_normal(C).astype(f) for _ in range(4))
        rv = np.abs(rv) + 0.5
        drm, drv = dev(rm), dev(rv)
        y, mean, invstd = fastnn.batch_norm(dev(x), dev(g), dev(b), drm, drv)
        rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
        wy, wm, wi = ref.batch_norm(x.astype(np.float64), g, b, rm64, rv64, True, 0.1, 1e-5)  # updates rm64, rv64
        ok &= check(f"batch_norm {shape}", y, wy) & check("  running_mean", drm, rm64) & check("  running_var", drv, rv64)
        dy = rng.standard_normal(shape).astype(f)
        for nm, got, want in zip(("dx", "dgamma", "dbeta"),
                                 fastnn.batch_norm_backward(dev(dy), dev(x), dev(g), dev(wm.astype(f)), dev(wi.astype(f))),
                                 ref.batch_norm_backward(dy.astype(np.float64), x.astype(np.float64), g, wm, wi, True)):
            ok &= check(f"  batch_norm_backward {nm}", got, want)
    N, T, D, H = 5, 4, 7, 33
    xs = rng.standard_normal((N, T, D)).astype(f)
    w_ih, w_hh, bias = (0.3 * rng.standard_normal(s).astype(f) for s in ((D, 4 * H), (H, 4 * H), (4 * H,)))
    hs, h_n, c_n, cache = fastnn.lstm(dev(xs), None, None, dev(w_ih), dev(w_hh), dev(bias))
    whs, _, _, wcache = ref.lstm(xs.astype(np.float64), None, None, w_ih, w_hh, bias)
    ok &= check("lstm", hs, whs)
    dhs = rng.standard_normal(whs.shape).astype(f)
    for nm, got, want in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "dbias"),
                             fastnn.lstm_backward(dev(dhs), None, None, cache),
                             ref.lstm_backward(dhs.astype(np.float64), None, None, wcache)):
        ok &= check(f"  lstm_backward {nm}", got, want)
    h, c, cc = fastnn.lstm_cell(dev(xs[:, 0]), None, None, dev(w_ih), dev(w_hh), dev(bias))
    ok &= check("lstm_cell", h, whs[:, 0])
    fastnn.lstm_cell_backward(dev(dhs[:, 0]), None, cc)
    cuda.synchronize()
    print("ALL OK" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
