"""`python -m fastnn.bench --sweep [--png PATH]`: every op over a range of sizes, against the reference and PyTorch.

The benchmark table times each op on a few large shapes; users call fastnn on small and medium ones, between NumPy
calls of their own. The sweep covers batch 1, the textbook networks' sizes (28x28, 14x14 and 7x7 planes, 16-64
channels, an LSTM with H=100 at batch 20), odd planes and today's large shapes, and marks each point against the
goal: fastnn at least as fast as the reference; at least as fast as PyTorch where PyTorch takes 20 us or more,
within 1.5x of it below that.
"""
import math
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import bench
from .bench import CPU
from .optable import shape_id, shapes_for

TORCH_SMALL_MS = 0.020          # below this PyTorch time, within 1.5x of PyTorch is the goal
TORCH_SMALL_SLACK = 1.5


@dataclass
class Point:
    op: str
    shape: str
    numpy_ms: Optional[float] = None
    fastnn_ms: Optional[float] = None
    torch_ms: Optional[float] = None
    notes: list = field(default_factory=list)

    @property
    def vs_numpy(self):
        return self.numpy_ms / self.fastnn_ms if self.numpy_ms and self.fastnn_ms else None

    @property
    def vs_torch(self):
        return self.torch_ms / self.fastnn_ms if self.torch_ms and self.fastnn_ms else None

    @property
    def at_goal(self):
        """fastnn >= the reference; >= PyTorch where PyTorch takes 20 us or more, within 1.5x of it below."""
        if self.vs_numpy is None or self.vs_numpy < 1:
            return False
        if self.vs_torch is None:
            return True
        need = 1.0 if self.torch_ms >= TORCH_SMALL_MS else 1 / TORCH_SMALL_SLACK
        return self.vs_torch >= need


def measure_point(op, shape, dtype, torch, budget=0.2):
    args, kw = op.make(shape, np.dtype(dtype), np.random.default_rng(0))
    p = Point(op.name, shape_id(shape))
    for impl, column in (("numpy", "numpy_ms"), ("cpu", "fastnn_ms"), ("torch", "torch_ms")):
        if impl == "torch" and (torch is None or op.torch is None):
            continue
        try:
            fn = bench.bind(op, impl, shape, args, kw, CPU(), torch)
            # the median over the budget (one warm-up call first; slow calls are timed fewer times)
            setattr(p, column, bench.timeit(fn, budget if impl != "numpy" else budget / 2, repeat=2000)[1])
        except Exception as e:  # noqa: BLE001 - a failing cell is a note, the sweep goes on
            p.notes.append(f"{impl}: {bench._reason(e)}")
    return p


def run(cfg, torch, out=None, png=None):
    out = out or sys.stdout
    points = []
    for op in cfg.ops:
        for shape in shapes_for(op.family, "sweep"):
            if sys.stderr.isatty():
                print(f"\r\033[K{op.name} {shape_id(shape)}", end="", file=sys.stderr, flush=True)
            points.append(measure_point(op, shape, cfg.dtype, torch))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(format_points(points), file=out)
    ok = sum(p.at_goal for p in points)
    print(f"{ok} of {len(points)} points at goal (fastnn >= reference; >= PyTorch where PyTorch takes >= 20 us, "
          f"within 1.5x below)", file=out)
    if png:
        plot(points, png)
        print(f"plot: {png}", file=out)
    return points


def format_points(points):
    head = ["op", "shape", "numpy ms", "fastnn ms", "torch ms", "vs numpy", "vs torch", "goal", "notes"]
    body = [[p.op, p.shape, bench._ms(p.numpy_ms), bench._ms(p.fastnn_ms), bench._ms(p.torch_ms),
             bench._x(p.vs_numpy), bench._x(p.vs_torch), "ok" if p.at_goal else "MISS", "; ".join(p.notes)]
            for p in points]
    return bench.text_table(head, body, left={0, 1, 7, 8})


def plot(points, path):
    """One panel per op: fastnn/reference and fastnn/PyTorch speedups (log scale) at each sweep point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops = list(dict.fromkeys(p.op for p in points))
    cols = 4
    rows = math.ceil(len(ops) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, ops):
        ps = [p for p in points if p.op == name]
        xs = range(len(ps))
        ax.plot(xs, [p.vs_numpy or np.nan for p in ps], "o-", label="vs reference")
        ax.plot(xs, [p.vs_torch or np.nan for p in ps], "s-", label="vs PyTorch")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([p.shape.replace(" stride", "\ns").replace(" R", "\nR") for p in ps], fontsize=5,
                           rotation=60, ha="right")
        for i, p in enumerate(ps):
            if not p.at_goal:
                ax.annotate("x", (i, p.vs_torch or p.vs_numpy or 1), color="red", ha="center", fontsize=9)
    for ax in list(axes.flat)[len(ops):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("fastnn speedup (x times faster) per op and size; > 1 is faster; red x: below goal", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
