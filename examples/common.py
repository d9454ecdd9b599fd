"""Helpers shared by the training examples: a progress bar, per-layer timing, thread limits, shuffled batches,
the training-curve PNG."""
import sys
import time


def progress(it, total, label, width=30, stream=sys.stdout):
    """Yield from `it`, drawing `label [=====>    ] i/total  elapsed  (extra)`; the caller may set .extra."""
    state = {"extra": ""}
    start = time.perf_counter()

    def draw(i):
        filled = width * i // total
        bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
        stream.write(f"\r{label} [{bar[:width]}] {i}/{total} {time.perf_counter() - start:5.1f}s {state['extra']}")
        stream.flush()

    draw(0)
    for i, item in enumerate(it, 1):
        yield item, state
        if i == total or i % max(1, total // 50) == 0:
            draw(i)
    stream.write("\n")


class Stopwatch:
    """Wraps a layer and adds the time spent in its forward/backward to ``seconds`` (everything else passes through)."""

    def __init__(self, layer):
        self.layer, self.seconds = layer, 0.0

    def __getattr__(self, name):
        return getattr(self.layer, name)

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.layer.forward(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out

    def backward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.layer.backward(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


def limit_threads(n):
    """The same thread count for fastnn's kernels and NumPy's BLAS (via threadpoolctl, a scikit-learn dependency)."""
    import fastnn
    fastnn.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def batches(n, batch_size, rng):
    idx = rng.permutation(n)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


def plot_curves(panels, title, path):
    """One panel per entry of `panels` ({panel title: {curve label: values per epoch}}), saved as a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install 'fastnn[examples]')")
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"curves written to {path}")
