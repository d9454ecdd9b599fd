"""Random "reasonable" shapes for the sweep's op families, timed like `python -m fastnn.bench --sweep`.

The sweep's points are fixed; the goal (at least the reference; at least PyTorch where PyTorch takes 20 us or
more, within 1.5x below) is meant for any reasonable shape. This draws shapes the sweep does not have (batch 1-128,
1-512 channels, 4x4 to 56x56 planes, 1x1 to 7x7 kernels, strides 1-2, LSTMs from batch 1 and H 16-512) and prints
the points that miss, then the count at goal.

    python dev/probe_shapes.py [--seed 1] [-n 80] [--families conv2d,pool2d,...] [--dtype float32]
"""
import argparse
import random

import numpy as np

from fastnn import optable, sweep
from fastnn.optable import BN, Cell, Conv, Pool, Seq, Unfold


def conv(r):
    while True:
        N = r.choice([1, 2, 4, 8, 16, 32, 64, 128])
        C = r.choice([1, 3, 4, 8, 16, 20, 24, 32, 48, 64, 96, 128, 256, 512])
        H = r.choice([5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 24, 27, 28, 31, 32, 56])
        W = H if r.random() < .8 else r.choice([7, 14, 20, 28])
        K = r.choice([1, 8, 10, 16, 20, 30, 32, 48, 64, 96, 128, 256])
        R, s = r.choice([1, 3, 3, 3, 5, 7]), r.choice([1, 1, 1, 2])
        p = r.choice([0, R // 2])
        OH, OW = (H + 2 * p - R) // s + 1, (W + 2 * p - R) // s + 1
        if OH >= 1 and OW >= 1 and 1e4 < 2 * N * K * C * R * R * OH * OW < 3e9:
            return Conv(N, C, H, W, K, R, R, s, p)


def pool(r):
    while True:
        N, C = r.choice([1, 4, 8, 16, 32, 64, 128]), r.choice([1, 3, 8, 16, 24, 32, 64, 128])
        H = r.choice([4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 24, 27, 28, 32, 56])
        k, s, p = r.choice([(2, 2, 0), (2, 2, 0), (3, 2, 1), (3, 2, 0), (3, 1, 1), (2, 1, 0), (4, 4, 0)])
        if H + 2 * p >= k and N * C * H * H < 3e7:
            return Pool(N, C, H, H, k, s, p)


def bn(r):
    while True:
        N = r.choice([1, 2, 4, 8, 16, 32, 64, 100, 128])
        C = r.choice([1, 3, 8, 16, 32, 50, 64, 100, 128, 256, 512, 1000])
        H = r.choice([1, 1, 4, 7, 8, 14, 28, 56])
        if N * C * H * H < 3e7 and N * H * H > 1:
            return BN(N, C, H, H)


def unfold(r):
    while True:
        N, C = r.choice([1, 4, 16, 32, 64]), r.choice([1, 3, 16, 32, 64])
        H, R, s = r.choice([7, 8, 13, 14, 28, 32, 56]), r.choice([1, 3, 5]), r.choice([1, 1, 2])
        p = r.choice([0, R // 2])
        if (H + 2 * p - R) // s + 1 >= 1 and N * C * H * H * R * R < 5e7:
            return Unfold(N, C, H, H, R, R, s, p)


def cell(r):
    H = r.choice([16, 32, 50, 64, 100, 128, 200, 256, 512])
    return Cell(r.choice([1, 2, 4, 8, 16, 20, 32, 64, 128]), r.choice([H, 16, 100, 300]), H)


def seq(r):
    while True:
        B, T = r.choice([1, 4, 8, 16, 20, 32, 64]), r.choice([5, 10, 20, 35, 50])
        H = r.choice([32, 64, 100, 128, 200, 256, 512])
        if B * T * H * H * 8 < 3e9:
            return Seq(B, T, r.choice([H, 50, 100]), H)


SHAPES = {"conv2d": conv, "pool2d": pool, "batch_norm": bn, "im2col": unfold, "lstm_cell": cell, "lstm": seq}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=80, help="points (op and shape drawn together)")
    ap.add_argument("--families", default=",".join(SHAPES))
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
    r = random.Random(a.seed)
    families = a.families.split(",")
    points = []
    for _ in range(a.n):
        family = r.choice(families)
        shape = SHAPES[family](r)
        op = r.choice([o for o in optable.OPS if o.family == family])
        p = sweep.measure_point(op, shape, a.dtype, torch, budget=0.15)
        points.append(p)
        if not p.at_goal:
            print(sweep.format_points([p]).splitlines()[-1], flush=True)
    print(f"{sum(p.at_goal for p in points)} of {len(points)} points at goal ({a.dtype}, seed {a.seed})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
