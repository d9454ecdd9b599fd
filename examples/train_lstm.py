"""Book 2 on fastnn: a TimeLSTM model in the style of *Deep Learning from Scratch 2* learns to add two numbers
digit by digit, every layer from fastnn.layers and Adam from fastnn.optimizer.

Each example is two random ``--digits``-digit numbers a and b, written least significant digit first as the token
sequence ``a_0 a_1 .. + b_0 b_1 .. =``. Nothing is expected while a is read; on the step that reads b_t the model
must output the digit s_t of a + b, and on ``=`` the final carry. So the LSTM has to remember all of a for
digits + 1 steps and carry as it goes. Nothing is downloaded: the data is generated here.

    TimeEmbedding (12 tokens -> 16) -> TimeLSTM (128) -> TimeAffine (-> 10) -> TimeSoftmaxWithLoss (label -1 on
    a's steps: ignored, as book 2's ignore_label)

The model is written as book 2 writes its models (params/grads lists, layers in order, the loss layer last, the
trainer's gradient clipping, `optimizer.update(params, grads)`). A sum counts as correct only if every digit is.
After training, one more epoch of the same model is timed on fastnn and with ``backend="numpy"`` (the NumPy
reference kernels), batch by batch in turn. The loss and accuracy curves go to a PNG (``--out``).

    python examples/train_lstm.py [--epochs 12] [--digits 6] [--out curves.png]
"""
import argparse
import os
import time

import numpy as np

from common import Stopwatch, batches, limit_threads, plot_curves, progress
from fastnn.layers import TimeAffine, TimeEmbedding, TimeLSTM, TimeSoftmaxWithLoss
from fastnn.optimizer import Adam


class Adder:
    def __init__(self, embed=16, hidden=128, seed=0, dtype=np.float32, backend=None):
        rng = np.random.default_rng(seed)
        D, H = embed, hidden
        self.weights = [
            (rng.standard_normal((12, D)) * 0.1).astype(dtype),                  # embedding: 0-9, '+', '='
            (rng.standard_normal((D, 4 * H)) / np.sqrt(D)).astype(dtype),       # Wx (gate blocks f, g, i, o)
            (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(dtype),       # Wh
            np.zeros(4 * H, dtype),                                             # b
            (rng.standard_normal((H, 10)) / np.sqrt(H)).astype(dtype),
            np.zeros(10, dtype),
        ]
        self.build(backend)

    def build(self, backend):
        w = self.weights
        self.layers = [TimeEmbedding(w[0], backend=backend),
                       TimeLSTM(w[1], w[2], w[3], stateful=False, backend=backend),
                       TimeAffine(w[4], w[5], backend=backend)]
        self.loss_layer = TimeSoftmaxWithLoss(backend=backend)
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]

    def predict(self, xs):
        for layer in self.layers:
            xs = layer.forward(xs)
        return xs

    def forward_backward(self, xs, ts):
        loss = self.loss_layer.forward(self.predict(xs), ts)
        d = self.loss_layer.backward()
        for layer in reversed(self.layers):
            d = layer.backward(d)
        return loss


# ---------------------------------------------------------------------------------------------------- the task

PLUS, EQUALS, IGNORE = 10, 11, -1


def make_data(n, digits, rng):
    """Token sequences ``a_0 .. a_{k-1} + b_0 .. b_{k-1} =`` (digits least significant first, k = digits) and
    targets: nothing (IGNORE) while a is read, then the sum digit s_t on the step that reads b_t, and the final
    carry on ``=``. The LSTM must remember a for k + 1 steps and carry as it goes."""
    a = rng.integers(0, 10, (n, digits))
    b = rng.integers(0, 10, (n, digits))
    s = np.zeros((n, digits + 1), dtype=np.int64)
    carry = np.zeros(n, dtype=np.int64)
    for t in range(digits):
        total = a[:, t] + b[:, t] + carry
        s[:, t], carry = total % 10, total // 10
    s[:, digits] = carry
    col = lambda v: np.full((n, 1), v, dtype=np.int64)
    xs = np.concatenate([a, col(PLUS), b, col(EQUALS)], axis=1)
    ts = np.concatenate([np.full((n, digits + 1), IGNORE, dtype=np.int64), s], axis=1)
    return xs, ts


def as_number(digit_row):
    return "".join(str(d) for d in digit_row[::-1]).lstrip("0") or "0"


def accuracy(model, xs, ts, batch=1000):
    right = 0
    for i in range(0, len(xs), batch):
        pred = model.predict(xs[i:i + batch]).argmax(axis=2)
        t = ts[i:i + batch]
        right += int(((pred == t) | (t == IGNORE)).all(axis=1).sum())
    return right / len(xs)


# ------------------------------------------------------------------------------------------------ progress bar

def train_step(model, opt, xs, ts, max_norm=5.0):
    loss = model.forward_backward(xs, ts)
    norm = np.sqrt(sum(float((g * g).sum()) for g in model.grads))
    if norm > max_norm:                 # clip the global gradient norm, as book 2's trainer does
        for g in model.grads:
            g *= max_norm / norm
    opt.update(model.params, model.grads)
    return loss


def run_epoch(model, opt, xs, ts, order, label):
    losses = []
    for b, state in progress(order, len(order), label):
        losses.append(train_step(model, opt, xs[b], ts[b]))
        state["extra"] = f"loss {np.mean(losses[-50:]):.4f}"
    return float(np.mean(losses))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--digits", type=int, default=6)
    ap.add_argument("--train", type=int, default=20000, help="training examples")
    ap.add_argument("--test", type=int, default=2000, help="test examples")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_lstm.png"))
    ap.add_argument("--no-compare", action="store_true", help="skip timing the NumPy reference")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for fastnn's C++ kernels and for NumPy's BLAS alike (default 1: these tensors are "
                         "small, and a shared machine punishes spinning threads)")
    args = ap.parse_args(argv)
    limit_threads(args.threads)

    import fastnn
    rng = np.random.default_rng(args.seed)
    x_train, t_train = make_data(args.train, args.digits, rng)
    x_test, t_test = make_data(args.test, args.digits, rng)
    print(f"{args.digits}-digit addition: {args.train} train / {args.test} test sums; "
          f"fastnn backends {fastnn.backends()}, {args.threads} thread(s)")

    model = Adder(hidden=args.hidden, seed=args.seed)
    opt = Adam(args.lr)
    times, history = [], {"loss": [], "test": []}
    for epoch in range(1, args.epochs + 1):
        opt.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / args.epochs))    # cosine decay
        order = batches(args.train, args.batch_size, rng)
        start = time.perf_counter()
        loss = run_epoch(model, opt, x_train, t_train, order, f"epoch {epoch:2d}/{args.epochs}")
        times.append(time.perf_counter() - start)
        history["loss"].append(loss)
        history["test"].append(accuracy(model, x_test, t_test))
        print(f"  loss {loss:.4f}  test accuracy {history['test'][-1]:.4f} "
              f"(whole sums right)  ({times[-1]:.2f} s)")

    acc = accuracy(model, x_test, t_test)
    k = args.digits
    pred = model.predict(x_test[:4]).argmax(axis=2)[:, k + 1:]
    for x, p in zip(x_test[:4], pred):
        a, b, s = as_number(x[:k]), as_number(x[k + 1:2 * k + 1]), as_number(p)
        print(f"  {a:>{k}} + {b:>{k}} = {s:>{k + 1}}" + ("" if int(a) + int(b) == int(s) else "   (wrong)"))
    print(f"final test accuracy: {acc:.4f} of {args.test} {k}-digit sums entirely right")
    if not args.no_compare:
        # One more epoch of the same model (same weights, same batches) on fastnn and on the NumPy reference,
        # batch by batch in turn, so that load from other processes hits both alike.
        order = batches(args.train, args.batch_size, rng)
        twins = {}
        for backend in ("numpy", None):
            twin = Adder(hidden=args.hidden, seed=args.seed)
            twin.weights = [w.copy() for w in model.weights]
            twin.build(backend)
            twin.layers = [Stopwatch(layer) for layer in twin.layers]
            twin.loss_layer = Stopwatch(twin.loss_layer)
            twins[backend] = (twin, Adam(opt.lr))
        epoch_times = {backend: 0.0 for backend in twins}
        for b, state in progress(order, len(order), "timing fastnn vs NumPy reference"):
            for backend, (twin, twin_opt) in twins.items():
                start = time.perf_counter()
                train_step(twin, twin_opt, x_train[b], t_train[b])
                epoch_times[backend] += time.perf_counter() - start
            state["extra"] = f"speedup {epoch_times['numpy'] / epoch_times[None]:.1f}x"
        print(f"time per epoch: fastnn {epoch_times[None]:.3f} s (median over training {np.median(times):.3f} s), "
              f"NumPy reference {epoch_times['numpy']:.3f} s -> speedup "
              f"{epoch_times['numpy'] / epoch_times[None]:.1f}x")
        inside = {backend: sum(layer.seconds for layer in twin.layers + [twin.loss_layer])
                  for backend, (twin, _) in twins.items()}
        print(f"  of which in the layers' forward + backward: fastnn {inside[None]:.3f} s, NumPy reference "
              f"{inside['numpy']:.3f} s -> speedup {inside['numpy'] / inside[None]:.1f}x")

    plot_curves({"training loss": {"loss": history["loss"]}, "test accuracy (whole sums)": {"test": history["test"]}},
                f"fastnn.layers TimeLSTM (book 2 style): {k}-digit addition", args.out)


if __name__ == "__main__":
    main()
