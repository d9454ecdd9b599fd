"""Book 1 on fastnn: a small CNN in the style of *Deep Learning from Scratch* (SimpleConvNet with batch norm) on
scikit-learn's handwritten digits, every layer from fastnn.layers and Adam from fastnn.optimizer.

    Convolution 3x3 (32 filters, pad 1) -> BatchNormalization -> Relu -> Pooling 2x2 -> Affine -> SoftmaxWithLoss

The data (8x8 images, 1797 samples) ships with scikit-learn: nothing is downloaded. A stratified 20 % test split is
held out. The network is written as book 1 writes its networks (a dict of parameters, a list of layers, a
`gradient` pass in reverse, `optimizer.update(params, grads)`); the classes are book 1's, imported from fastnn.

After training, one more epoch of the *same* network (same weights, same batches) is timed on fastnn and with
``backend="numpy"`` (fastnn's NumPy reference kernels), batch by batch in turn, and the per-epoch times and the
speedup are printed.
The loss/accuracy curves go to a PNG (``--out``, default: next to this script).

    pip install 'fastnn[examples]'      # scikit-learn, matplotlib
    python examples/train_digits.py [--epochs 12] [--out curves.png]
"""
import argparse
import os
import sys
import time

import numpy as np

from common import Stopwatch, batches, limit_threads, plot_curves, progress
from fastnn.layers import Affine, BatchNormalization, Convolution, Pooling, Relu, SoftmaxWithLoss
from fastnn.optimizer import Adam


class ConvNet:
    def __init__(self, filters=32, classes=10, seed=0, dtype=np.float32, backend=None):
        rng = np.random.default_rng(seed)
        D = filters * 8 * 8            # batch norm is per activation (C*H*W), as in the book
        self.params = {
            "W1": (rng.standard_normal((filters, 1, 3, 3)) * np.sqrt(2 / 9)).astype(dtype),
            "b1": np.zeros(filters, dtype),
            "gamma": np.ones(D, dtype), "beta": np.zeros(D, dtype),
            "W2": (rng.standard_normal((filters * 4 * 4, classes)) * np.sqrt(2 / (filters * 16))).astype(dtype),
            "b2": np.zeros(classes, dtype),
        }
        self.build(backend)

    def build(self, backend):
        """(Re)create the layers on this backend; they share self.params and the batch norm running stats."""
        p = self.params
        old = getattr(self, "bn", None)
        self.conv = Convolution(p["W1"], p["b1"], stride=1, pad=1, backend=backend)
        self.bn = BatchNormalization(p["gamma"], p["beta"], momentum=0.9, backend=backend,
                                     running_mean=None if old is None else old.running_mean,
                                     running_var=None if old is None else old.running_var)
        self.pool = Pooling(2, 2, stride=2, backend=backend)
        self.affine = Affine(p["W2"], p["b2"], backend=backend)
        self.layers = [self.conv, self.bn, Relu(backend=backend), self.pool, self.affine]
        self.last_layer = SoftmaxWithLoss(backend=backend)

    def scores(self, x, train_flg):
        for layer in self.layers:
            x = layer.forward(x, train_flg) if getattr(layer, "layer", layer) is self.bn else layer.forward(x)
        return x

    def loss_and_grads(self, x, t):
        loss = self.last_layer.forward(self.scores(x, True), t)
        d = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            d = layer.backward(d)
        grads = {"W1": self.conv.dW, "b1": self.conv.db, "gamma": self.bn.dgamma, "beta": self.bn.dbeta,
                 "W2": self.affine.dW, "b2": self.affine.db}
        return loss, grads

    def accuracy(self, x, t, batch=512):
        hits = sum(int((self.scores(x[i:i + batch], False).argmax(axis=1) == t[i:i + batch]).sum())
                   for i in range(0, len(x), batch))
        return hits / len(x)


# ------------------------------------------------------------------------------------------------ progress bar

def run_epoch(net, opt, x, t, order, label):
    losses = []
    for b, state in progress(order, len(order), label):
        loss, grads = net.loss_and_grads(x[b], t[b])
        opt.update(net.params, grads)
        losses.append(loss)
        state["extra"] = f"loss {np.mean(losses):.4f}"
    return float(np.mean(losses))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_digits.png"))
    ap.add_argument("--no-compare", action="store_true", help="skip timing the NumPy reference")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for fastnn's C++ kernels and for NumPy's BLAS alike (default 1: these tensors are "
                         "small, and a shared machine punishes spinning threads)")
    args = ap.parse_args(argv)
    limit_threads(args.threads)

    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install 'fastnn[examples]'")
    import fastnn

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]        # (1797, 1, 8, 8) in [0, 1]
    x_train, x_test, t_train, t_test = train_test_split(x, digits.target, test_size=0.2, random_state=args.seed,
                                                        stratify=digits.target)
    print(f"digits: {len(x_train)} train / {len(x_test)} test images of 8x8; fastnn backends {fastnn.backends()}, "
          f"{args.threads} thread(s)")

    net = ConvNet(args.filters, seed=args.seed)
    opt = Adam(args.lr)
    rng = np.random.default_rng(args.seed)
    history = {"loss": [], "train": [], "test": [], "time": []}
    for epoch in range(1, args.epochs + 1):
        opt.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / args.epochs))    # cosine decay
        order = batches(len(x_train), args.batch_size, rng)
        start = time.perf_counter()
        loss = run_epoch(net, opt, x_train, t_train, order, f"epoch {epoch:2d}/{args.epochs}")
        history["time"].append(time.perf_counter() - start)
        history["loss"].append(loss)
        history["train"].append(net.accuracy(x_train, t_train))
        history["test"].append(net.accuracy(x_test, t_test))
        print(f"  loss {loss:.4f}  train acc {history['train'][-1]:.4f}  test acc {history['test'][-1]:.4f}  "
              f"({history['time'][-1]:.2f} s)")

    fast_epoch = float(np.median(history["time"]))
    print(f"final test accuracy: {history['test'][-1]:.4f} ({history['test'][-1] * len(x_test):.0f}/{len(x_test)})")
    if not args.no_compare:
        # One more epoch of the same network (same weights, same batches) on fastnn and on the NumPy reference,
        # batch by batch in turn, so that load from other processes hits both alike.
        order = batches(len(x_train), args.batch_size, rng)
        twins = {}
        for backend in ("numpy", None):
            twin = ConvNet(args.filters, seed=args.seed)
            twin.params = {k: v.copy() for k, v in net.params.items()}
            twin.bn = net.bn
            twin.build(backend)
            twin.layers = [Stopwatch(layer) for layer in twin.layers]
            twins[backend] = (twin, Adam(opt.lr))
        times = {backend: 0.0 for backend in twins}
        for b, state in progress(order, len(order), "timing fastnn vs NumPy reference"):
            for backend, (twin, twin_opt) in twins.items():
                start = time.perf_counter()
                _, grads = twin.loss_and_grads(x_train[b], t_train[b])
                twin_opt.update(twin.params, grads)
                times[backend] += time.perf_counter() - start
            state["extra"] = f"speedup {times['numpy'] / times[None]:.1f}x"
        print(f"time per epoch: fastnn {times[None]:.3f} s (median over training {fast_epoch:.3f} s), "
              f"NumPy reference {times['numpy']:.3f} s -> speedup {times['numpy'] / times[None]:.1f}x")
        inside = {backend: sum(getattr(layer, "seconds", 0.0) for layer in twin.layers)
                  for backend, (twin, _) in twins.items()}
        print(f"  of which in the layers' forward + backward: fastnn {inside[None]:.3f} s, "
              f"NumPy reference {inside['numpy']:.3f} s -> speedup {inside['numpy'] / inside[None]:.1f}x")
    plot_curves({"training loss": {"loss": history["loss"]},
                 "accuracy": {"train": history["train"], "test": history["test"]}},
                "fastnn.layers CNN (book 1 style) on sklearn digits", args.out)
    return history


if __name__ == "__main__":
    main()
