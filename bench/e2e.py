"""End to end: training steps of textbook networks, written the books' way, on the books' NumPy layers and on
fastnn's drop-in layers. The network code is the same; only the module its layer and optimizer classes come
from is swapped (what a user does with `from fastnn.layers import *`).

    python bench/e2e.py                       # every network, 2 threads, medians of interleaved rounds
    python bench/e2e.py --nets lstm_lm,gru_lm --steps 5 --rounds 5 --threads 1
    python bench/e2e.py --nets mlp_extend --swap BatchNormalization   # one class swapped: fastnn between NumPy's

Networks (random data of the books' shapes; the weights start equal on both sides):
  deep_convnet   book 1 ch08 DeepConvNet: 6 conv 3x3 (16,16,32,32,64,64) + ReLU, 3 max pools, Affine-ReLU-Dropout-
                 Affine-Dropout, SoftmaxWithLoss; batch 100, 1x28x28, Adam
  mlp_extend     book 1 MultiLayerNetExtend: 784-100x5-10, Affine-BatchNorm-ReLU-Dropout(0.2), weight decay 0.1,
                 SoftmaxWithLoss; batch 100, Adam
  lstm_lm        book 2 ch06 Rnnlm: TimeEmbedding(V=10000, D=100)-TimeLSTM(H=100, stateful)-TimeAffine-
                 TimeSoftmaxWithLoss; batch 20 x 35 steps, gradient clipping 0.25, SGD(lr=20)
  gru_lm         the same with TimeGRU

dtype: book 1's parameters are float64 (np.random.randn) and its data float32, so its networks compute in float64;
book 2 uses float32 throughout. --dtype float32 runs book 1's networks in float32 as well.
For each network the table gives ms per training step (forward, backward, optimizer update) on NumPy and on
fastnn, the speedup, and where fastnn's step spends its time (per layer class, forward + backward; "update" is
the optimizer; "other" the network's own Python and NumPy lines: weight decay, clipping, ...).
"""
import argparse
import os
import statistics
import sys
import time
from collections import OrderedDict, defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import book_numpy  # noqa: E402  (the books' NumPy layers: the baseline)


# ------------------------------------------------------------------------------------------- the books' networks
# Written after the books' network classes; `L` is the layer namespace, `O` the optimizer namespace.

class DeepConvNet:
    def __init__(self, L, dtype, input_dim=(1, 28, 28), hidden_size=50, output_size=10):
        convs = [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]     # (filter_num, pad), 3x3, stride 1
        pre = np.array([1 * 9, 16 * 9, 16 * 9, 32 * 9, 32 * 9, 64 * 9, 64 * 4 * 4, hidden_size])
        scales = np.sqrt(2.0 / pre)
        self.params = {}
        c = input_dim[0]
        for i, (fn, _) in enumerate(convs):
            self.params[f"W{i + 1}"] = (scales[i] * np.random.randn(fn, c, 3, 3)).astype(dtype)
            self.params[f"b{i + 1}"] = np.zeros(fn, dtype)
            c = fn
        self.params["W7"] = (scales[6] * np.random.randn(64 * 4 * 4, hidden_size)).astype(dtype)
        self.params["b7"] = np.zeros(hidden_size, dtype)
        self.params["W8"] = (scales[7] * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params["b8"] = np.zeros(output_size, dtype)
        self.Dropout = L.Dropout
        p = self.params
        self.layers = []
        for i, (_, pad) in enumerate(convs):
            self.layers += [L.Convolution(p[f"W{i + 1}"], p[f"b{i + 1}"], 1, pad), L.Relu()]
            if i % 2:
                self.layers.append(L.Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers += [L.Affine(p["W7"], p["b7"]), L.Relu(), L.Dropout(0.5), L.Affine(p["W8"], p["b8"]),
                        L.Dropout(0.5)]
        self.last_layer = L.SoftmaxWithLoss()
        self.weighted = [0, 2, 5, 7, 10, 12, 15, 18]

    def predict(self, x, train_flg=False):
        for layer in self.layers:
            x = layer.forward(x, train_flg) if isinstance(layer, self.Dropout) else layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x, train_flg=True), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        grads = {}
        for i, k in enumerate(self.weighted):
            grads[f"W{i + 1}"], grads[f"b{i + 1}"] = self.layers[k].dW, self.layers[k].db
        return grads


class MultiLayerNetExtend:
    def __init__(self, L, dtype, input_size=784, hidden_size_list=(100,) * 5, output_size=10,
                 weight_decay_lambda=0.1, dropout_ratio=0.2):
        sizes = [input_size, *hidden_size_list, output_size]
        self.n_hidden = len(hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.params = {}
        for i in range(1, len(sizes)):
            self.params[f"W{i}"] = (np.sqrt(2.0 / sizes[i - 1]) * np.random.randn(sizes[i - 1], sizes[i])).astype(dtype)
            self.params[f"b{i}"] = np.zeros(sizes[i], dtype)
        self.layers = OrderedDict()
        for i in range(1, self.n_hidden + 1):
            self.layers[f"Affine{i}"] = L.Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            self.params[f"gamma{i}"] = np.ones(sizes[i], dtype)
            self.params[f"beta{i}"] = np.zeros(sizes[i], dtype)
            self.layers[f"BatchNorm{i}"] = L.BatchNormalization(self.params[f"gamma{i}"], self.params[f"beta{i}"])
            self.layers[f"Activation_function{i}"] = L.Relu()
            self.layers[f"Dropout{i}"] = L.Dropout(dropout_ratio)
        i = self.n_hidden + 1
        self.layers[f"Affine{i}"] = L.Affine(self.params[f"W{i}"], self.params[f"b{i}"])
        self.last_layer = L.SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            x = layer.forward(x, train_flg) if "Dropout" in key or "BatchNorm" in key else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        y = self.predict(x, train_flg)
        weight_decay = 0
        for i in range(1, self.n_hidden + 2):
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(self.params[f"W{i}"] ** 2)
        return self.last_layer.forward(y, t) + weight_decay

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i in range(1, self.n_hidden + 2):
            grads[f"W{i}"] = self.layers[f"Affine{i}"].dW + self.weight_decay_lambda * self.params[f"W{i}"]
            grads[f"b{i}"] = self.layers[f"Affine{i}"].db
            if i != self.n_hidden + 1:
                grads[f"gamma{i}"] = self.layers[f"BatchNorm{i}"].dgamma
                grads[f"beta{i}"] = self.layers[f"BatchNorm{i}"].dbeta
        return grads


class Rnnlm:
    """Book 2's Rnnlm (cell="lstm") and the same model with a GRU (cell="gru")."""

    def __init__(self, L, cell="lstm", vocab_size=10000, wordvec_size=100, hidden_size=100):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = np.random.randn
        embed_W = (rn(V, D) / 100).astype("f")
        gates = 4 if cell == "lstm" else 3
        Wx = (rn(D, gates * H) / np.sqrt(D)).astype("f")
        Wh = (rn(H, gates * H) / np.sqrt(H)).astype("f")
        affine_W = (rn(H, V) / np.sqrt(H)).astype("f")
        affine_b = np.zeros(V).astype("f")
        if cell == "lstm":
            rnn = L.TimeLSTM(Wx, Wh, np.zeros(4 * H).astype("f"), stateful=True)
        else:
            rnn = L.TimeGRU(Wx, Wh, np.zeros(3 * H).astype("f"), stateful=True)
        self.layers = [L.TimeEmbedding(embed_W), rnn, L.TimeAffine(affine_W, affine_b)]
        self.loss_layer = L.TimeSoftmaxWithLoss()
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def forward(self, xs, ts):
        for layer in self.layers:
            xs = layer.forward(xs)
        return self.loss_layer.forward(xs, ts)

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout


def clip_grads(grads, max_norm):
    """Book 2's common/util.py clip_grads."""
    total_norm = 0
    for grad in grads:
        total_norm += np.sum(grad ** 2)
    total_norm = np.sqrt(total_norm)
    rate = max_norm / (total_norm + 1e-6)
    if rate < 1:
        for grad in grads:
            grad *= rate


class _NumpyOptimizers:
    """The books' SGD and Adam (common/optimizer.py): dict parameters in book 1, lists in book 2."""

    class SGD:
        def __init__(self, lr=0.01):
            self.lr = lr

        def update(self, params, grads):
            for key in (params.keys() if isinstance(params, dict) else range(len(params))):
                params[key] -= self.lr * grads[key]

    class Adam:
        def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
            self.lr, self.beta1, self.beta2, self.iter, self.m, self.v = lr, beta1, beta2, 0, None, None

        def update(self, params, grads):
            keys = list(params.keys() if isinstance(params, dict) else range(len(params)))
            if self.m is None:
                self.m = {k: np.zeros_like(params[k]) for k in keys}
                self.v = {k: np.zeros_like(params[k]) for k in keys}
            self.iter += 1
            lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
            for k in keys:
                self.m[k] += (1 - self.beta1) * (grads[k] - self.m[k])
                self.v[k] += (1 - self.beta2) * (grads[k] ** 2 - self.v[k])
                params[k] -= lr_t * self.m[k] / (np.sqrt(self.v[k]) + 1e-7)


# ------------------------------------------------------------------------------------------------ the workloads

def book1_step(net, opt, x, t):
    grads = net.gradient(x, t)
    opt.update(net.params, grads)


def book2_step(model, opt, xs, ts):
    model.forward(xs, ts)
    model.backward()
    clip_grads(model.grads, 0.25)
    opt.update(model.params, model.grads)


def workload(name, L, O, dtype):
    """(step function, network, optimizer): one training step on fixed random data, the weights from seed 0."""
    np.random.seed(0)
    rng = np.random.default_rng(1)
    if name in ("deep_convnet", "mlp_extend"):
        net = DeepConvNet(L, dtype) if name == "deep_convnet" else MultiLayerNetExtend(L, dtype)
        shape = (100, 1, 28, 28) if name == "deep_convnet" else (100, 784)
        x = rng.random(shape, dtype=np.float32)               # the books' MNIST: float32 in [0, 1]
        t = rng.integers(0, 10, 100)
        opt = O.Adam(lr=0.001)
        return (lambda: book1_step(net, opt, x, t)), net, opt
    model = Rnnlm(L, "lstm" if name == "lstm_lm" else "gru")
    xs = rng.integers(0, 10000, (20, 35))
    ts = rng.integers(0, 10000, (20, 35))
    opt = O.SGD(lr=20.0)
    return (lambda: book2_step(model, opt, xs, ts)), model, opt


NETS = ("deep_convnet", "mlp_extend", "lstm_lm", "gru_lm")


def _layers(net):
    layers = list(net.layers.values()) if isinstance(net.layers, dict) else list(net.layers)
    return layers + [net.last_layer if hasattr(net, "last_layer") else net.loss_layer]


def profile(step, net, opt, steps=5):
    """Seconds per step spent in each layer class (forward + backward) and the rest, over `steps` steps."""
    spent = defaultdict(float)

    def timed(fn, key):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[key] += time.perf_counter() - t0
            return out
        return run

    for layer in _layers(net):
        key = type(layer).__name__
        layer.forward, layer.backward = timed(layer.forward, key), timed(layer.backward, key)
    opt.update = timed(opt.update, "update")
    total = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        total += time.perf_counter() - t0
    for layer in _layers(net):   # back to the class's methods
        del layer.forward, layer.backward
    del opt.update
    out = {k: v / steps for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["other"] = total / steps - sum(spent.values()) / steps
    return total / steps, out


def measure(name, dtype, steps, rounds, swap=()):
    """swap: only these layer classes ("update": the optimizer) come from fastnn; () = all of them."""
    import types

    import fastnn.layers as FL
    import fastnn.optimizer as FO
    runs = {}
    books = book_numpy.b1 if name in ("deep_convnet", "mlp_extend") else book_numpy.b2
    if swap:   # the books' code with a few classes from fastnn: NumPy's BLAS and fastnn's threads in turn
        FL = types.SimpleNamespace(**{k: getattr(FL if k in swap else books, k) for k in dir(books)
                                      if not k.startswith("_")})
        FO = FO if "update" in swap else _NumpyOptimizers
    for side, (L, O) in (("numpy", (books, _NumpyOptimizers)), ("fastnn", (FL, FO))):
        step, net, opt = workload(name, L, O, dtype)
        step()          # warm-up (lazy state, caches)
        runs[side] = (step, net, opt, [])
    for _ in range(rounds):  # interleaved: both sides see the same machine state
        for side, (step, _, _, times) in runs.items():
            # NumPy's OpenBLAS workers spin ~0.1 s after each threaded call (README, "Threads, in company with
            # NumPy"): without a pause the first steps after the other side's would run beside its spinners,
            # which no user running one of the two networks sees.
            time.sleep(0.2)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - t0) / steps)
    med = {side: statistics.median(r[3]) for side, r in runs.items()}
    total, parts = profile(*runs["fastnn"][:3], steps=steps)
    return med, {k: v / total for k, v in parts.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="fastnn and NumPy BLAS threads (default: all cores)")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="book 1's networks")
    ap.add_argument("--swap", default="", help="comma-separated layer classes (and 'update' for the optimizer) "
                    "to take from fastnn, the rest staying the books' NumPy (default: all from fastnn)")
    a = ap.parse_args(argv)
    import fastnn
    if a.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(a.threads)
        fastnn.set_num_threads(a.threads)
    print(f"threads: fastnn {fastnn.get_num_threads()}; book 1 dtype {a.dtype}; medians of {a.rounds} rounds of "
          f"{a.steps} steps")
    print(f"{'network':<14} {'numpy ms':>9} {'fastnn ms':>9} {'speedup':>8}   where fastnn's step goes")
    for name in a.nets.split(","):
        med, parts = measure(name, np.dtype(a.dtype), a.steps, a.rounds, tuple(filter(None, a.swap.split(","))))
        where = ", ".join(f"{k} {100 * v:.0f}%" for k, v in parts.items())
        print(f"{name:<14} {1e3 * med['numpy']:9.2f} {1e3 * med['fastnn']:9.2f} {med['numpy'] / med['fastnn']:7.2f}x"
              f"   {where}", flush=True)


if __name__ == "__main__":
    main()
