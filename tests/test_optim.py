"""The fused optimizer steps (fastnn.sgd_step ... adam_step) on every backend against the reference, and the
drop-in classes of fastnn.optimizer against a NumPy rewrite of the books' classes (dict and list parameters)."""
import numpy as np
import pytest

import fastnn
from fastnn import optimizer as O
from fastnn import reference as R
from fastnn.optable import CASES, OPTIM_STATES, arrays
from test_ops import ALL_BACKENDS, HAVE_NUMBA, check, dtypes, f64, params

OPS = list(OPTIM_STATES)
STEPS = 3
# hyperparameters each op is called with unless the case sets them (lr large enough to move the params visibly)
DEFAULTS = {"sgd_step": dict(lr=0.1), "momentum_step": dict(lr=0.1), "nesterov_step": dict(lr=0.1),
            "adagrad_step": dict(lr=0.1), "rmsprop_step": dict(lr=0.1), "adam_step": dict(lr=0.01)}


def hyper(case):
    return {**DEFAULTS[case.op], **{k: v for k, v in case.p.items() if k != "params"}}


def run(op, lists, kw, step, backend=None):
    """One step; adam takes the step number after its lists."""
    extra = (step,) if op == "adam_step" else ()
    fn = getattr(R, op) if backend == "reference" else lambda *a, **k: getattr(fastnn, op)(*a, **k, backend=backend)
    fn(*lists, *extra, **kw)


def names(op):
    return ("params", "grads", *OPTIM_STATES[op])


STEP_PARAMS = [pytest.param(op, *p.values, marks=p.marks, id=f"{op}-{p.id}") for op in OPS for p in params(op)]


@dtypes
@pytest.mark.parametrize("op,backend,case", STEP_PARAMS)
def test_step_matches_reference(op, backend, case, dtype):
    """Three steps from a random state; params and state against the float64 reference, grads untouched."""
    a = arrays(case, dtype)
    lists = [a[n] for n in names(op)]
    ref = [[f64(x) for x in lst] for lst in lists]
    grads_before = [g.copy() for g in a["grads"]]
    ids = [[id(x) for x in lst] for lst in lists]
    kw = hyper(case)
    for step in range(1, STEPS + 1):
        run(op, lists, kw, step, backend)
        run(op, ref, kw, step, "reference")
    for name, got, want in zip(names(op), lists, ref):
        for i, (g, w) in enumerate(zip(got, want)):
            check(f"{name}[{i}]", g, w, dtype, 4 * STEPS)
    for g, b in zip(a["grads"], grads_before):
        np.testing.assert_array_equal(g, b, err_msg="grads were modified")
    assert [[id(x) for x in lst] for lst in lists] == ids, "the lists must keep their arrays (updated in place)"


@pytest.mark.parametrize("op", OPS)
def test_threads_give_the_same_bits(op):
    """Elementwise, so the split over threads (chunks crossing from one array into the next) changes nothing."""
    case = [c for c in CASES[op] if c.p["params"] == "threaded"][0]
    before = fastnn.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            fastnn.set_num_threads(threads)
            a = arrays(case, np.float32)
            lists = [a[n] for n in names(op)]
            for step in (1, 2):
                run(op, lists, hyper(case), step, "cpu")
            outs.append(lists)
    finally:
        fastnn.set_num_threads(before)
    for other in outs[1:]:
        for x, y in zip(sum(outs[0], []), sum(other, [])):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_grads_of_any_layout(op, backend):
    """Strided, transposed and read-only grads are read as they are (copied once where needed)."""
    case = CASES[op][0]
    a = arrays(case, np.float64)
    lists = [a[n] for n in names(op)]
    want = [[x.copy() for x in lst] for lst in lists]
    run(op, want, hyper(case), 1, "reference")
    odd = []
    for k, g in enumerate(a["grads"]):
        if k % 3 == 0:
            g = np.repeat(g, 2, axis=-1)[..., ::2]
        elif k % 3 == 1:
            g = np.asfortranarray(g)
            g.flags.writeable = False
        odd.append(g)
    lists[1] = odd
    run(op, lists, hyper(case), 1, backend)
    for got, w in zip(lists, want):
        for x, y in zip(got, w):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=ALL_BACKENDS[2].marks)])
@pytest.mark.parametrize("alias", ["same param twice", "state is a param", "grad overlaps a param"])
def test_shared_memory_is_refused_by_the_fast_backends(alias, backend):
    """The books' loop updates an array listed twice twice; a fused step cannot, so it refuses (the reference, the
    books' loop, accepts it), before writing anything."""
    big = np.arange(12.0).reshape(3, 4)
    p, q = big[0], np.ones(4)
    P, G, V = [p, q], [np.ones(4), np.ones(4)], [np.zeros(4), np.zeros(4)]
    if alias == "same param twice":
        P = [p, p]
    elif alias == "state is a param":
        V = [np.zeros(4), q]
    else:
        G = [np.ones(4), big.reshape(-1)[2:6]]      # read-only use, but it overlaps params[0], which is written
    before = [x.copy() for x in P + V]
    with pytest.raises(ValueError, match="share memory"):
        fastnn.momentum_step(P, G, V, 0.1, backend=backend)
    for x, b in zip(P + V, before):
        np.testing.assert_array_equal(x, b)
    fastnn.momentum_step(P, G, V, 0.1, backend="numpy")


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=ALL_BACKENDS[2].marks)])
def test_a_grad_shared_by_two_params_is_fine(backend):
    g = np.ones(5)
    P = [np.zeros(5), np.zeros(5)]
    fastnn.sgd_step(P, [g, g], 0.5, backend=backend)
    np.testing.assert_array_equal(P[0], -0.5 * g)
    np.testing.assert_array_equal(P[1], -0.5 * g)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_list_and_tuples(backend):
    fastnn.adam_step([], [], [], [], 1, backend=backend)
    P = (np.ones(3, np.float32),)
    fastnn.sgd_step(P, (np.ones(3, np.float32),), 0.25, backend=backend)
    np.testing.assert_array_equal(P[0], np.full(3, 0.75, np.float32))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba/numba-cuda not installed: no cuda backend")
@pytest.mark.parametrize("op", OPS)
def test_device_arrays_are_updated_in_place(op):
    from numba import cuda
    case = CASES[op][0]
    a = arrays(case, np.float32)
    lists = [a[n] for n in names(op)]
    want = [[f64(x) for x in lst] for lst in lists]
    dev = [[cuda.to_device(x) for x in lst] for lst in lists]
    for step in (1, 2):
        run(op, dev, hyper(case), step)              # GPU arrays pick the cuda backend
        run(op, want, hyper(case), step, "reference")
    for name, d, w in zip(names(op), dev, want):
        for i, (x, y) in enumerate(zip(d, w)):
            check(f"{name}[{i}]", x.copy_to_host(), y, np.float32, 8)


# The reference itself, against what one step from zero state must give (independent of its code).
def test_reference_first_steps_from_zero_state():
    g = np.array([-2.0, -1e-3, 0.5, 3.0])
    lr, m = 0.1, 0.9
    for op, state, want in [
        ("momentum_step", 1, -lr * g),
        ("nesterov_step", 1, -(1 + m + m * m) * lr * g),     # v = -lr g; p += m*m*v - (1+m)*lr*g
        ("adagrad_step", 1, -lr * g / (np.abs(g) + 1e-7)),
        ("rmsprop_step", 1, -lr * g / (np.sqrt(0.01) * np.abs(g) + 1e-7)),
    ]:
        p = [np.zeros(4)]
        getattr(R, op)(p, [g], [np.zeros(4)], lr)
        np.testing.assert_allclose(p[0], want, rtol=1e-12, err_msg=op)
    p = [np.zeros(4)]
    R.adam_step(p, [g], [np.zeros(4)], [np.zeros(4)], 1, lr=lr, eps=0.0)
    np.testing.assert_allclose(p[0], -lr * np.sign(g), rtol=1e-12)  # Adam's first step: lr * sign(g)


# ---------------------------------------------------------------------------------------------- the classes
# A NumPy rewrite of the books' optimizers (book 1 iterates dict keys, book 2 list positions; the formulas of the
# two books are the same), written here independently of fastnn.

class Book:
    def __init__(self, rule, **hp):
        self.rule, self.hp, self.state, self.iter = rule, hp, None, 0

    def update(self, params, grads):
        keys = list(params) if isinstance(params, dict) else list(range(len(params)))
        if self.state is None:
            self.state = [{k: np.zeros_like(params[k]) for k in keys} for _ in range(2)]
        self.iter += 1
        v, h = self.state
        hp = self.hp
        for k in keys:
            g = grads[k]
            if self.rule == "SGD":
                params[k] -= hp["lr"] * g
            elif self.rule == "Momentum":
                v[k] = hp["momentum"] * v[k] - hp["lr"] * g
                params[k] += v[k]
            elif self.rule == "Nesterov":
                v[k] *= hp["momentum"]
                v[k] -= hp["lr"] * g
                params[k] += hp["momentum"] * hp["momentum"] * v[k]
                params[k] -= (1 + hp["momentum"]) * hp["lr"] * g
            elif self.rule == "AdaGrad":
                v[k] += g * g
                params[k] -= hp["lr"] * g / (np.sqrt(v[k]) + 1e-7)
            elif self.rule == "RMSprop":
                v[k] *= hp["decay_rate"]
                v[k] += (1 - hp["decay_rate"]) * g * g
                params[k] -= hp["lr"] * g / (np.sqrt(v[k]) + 1e-7)
            else:
                b1, b2 = hp["beta1"], hp["beta2"]
                lr_t = hp["lr"] * np.sqrt(1.0 - b2 ** self.iter) / (1.0 - b1 ** self.iter)
                v[k] += (1 - b1) * (g - v[k])
                h[k] += (1 - b2) * (g ** 2 - h[k])
                params[k] -= lr_t * v[k] / (np.sqrt(h[k]) + 1e-7)


RULES = {"SGD": dict(lr=0.05), "Momentum": dict(lr=0.05, momentum=0.8), "Nesterov": dict(lr=0.05, momentum=0.7),
         "AdaGrad": dict(lr=0.05), "RMSprop": dict(lr=0.05, decay_rate=0.9),
         "Adam": dict(lr=0.01, beta1=0.8, beta2=0.95)}
STATE_ATTRS = {"SGD": (), "Momentum": ("v",), "Nesterov": ("v",), "AdaGrad": ("h",), "RMSprop": ("h",),
               "Adam": ("m", "v")}
SHAPES = {"W1": (7, 5), "b1": (5,), "W2": (5, 3), "b2": (3,), "s": (1,)}


def _net(dtype, layout, seed=0):
    rng = np.random.default_rng(seed)
    d = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    return d if layout == "dict" else list(d.values())


def _grads(dtype, layout, step):
    return _net(dtype, layout, seed=100 + step)


def _values(x):
    return list(x.values()) if isinstance(x, dict) else list(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["dict", "list"])
@pytest.mark.parametrize("rule", list(RULES))
def test_class_gives_the_books_numbers(rule, layout, dtype, monkeypatch):
    fused = []
    step_name = {"SGD": "sgd_step", "AdaGrad": "adagrad_step", "RMSprop": "rmsprop_step"}.get(rule, rule.lower() + "_step")
    real = getattr(O, step_name)
    monkeypatch.setattr(O, step_name, lambda *a: (real(*a), fused.append(1)))
    opt, book = getattr(O, rule)(**RULES[rule]), Book(rule, **RULES[rule])
    for attr, value in RULES[rule].items():
        assert getattr(opt, attr) == value
    for attr in STATE_ATTRS[rule]:
        assert getattr(opt, attr) is None                    # made on the first update, as the books do
    params, ref = _net(dtype, layout), _net(np.float64, layout)
    for step in range(5):
        opt.update(params, _grads(dtype, layout, step))
        book.update(ref, _grads(np.float64, layout, step))
    assert len(fused) == 5, "the fused step should have run every update"
    assert type(params) is (dict if layout == "dict" else list)
    for got, want in zip(_values(params), _values(ref)):
        check("param", got, want, dtype, 40)
    for attr, want in zip(STATE_ATTRS[rule], book.state if rule == "Adam" else book.state[:1]):
        st = getattr(opt, attr)
        assert type(st) is type(params) and (list(st) == list(params) if layout == "dict" else len(st) == len(params))
        for got, w in zip(_values(st), want.values()):
            check(attr, got, w, dtype, 40)
    if rule == "Adam":
        assert opt.iter == 5


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("odd", ["float64 grad", "mixed dtypes", "fortran param", "strided param", "param twice"])
def test_class_falls_back_to_the_books_loop(rule, odd):
    """Arrays the fused step cannot take get the books' own NumPy loop: the same numbers as the book."""
    params = _net(np.float32, "list")
    gmod = lambda g: g        # noqa: E731
    if odd == "float64 grad":
        gmod = lambda g: [g[0].astype(np.float64)] + g[1:]        # noqa: E731
    elif odd == "mixed dtypes":
        params[2] = params[2].astype(np.float64)
        gmod = lambda g: g[:2] + [g[2].astype(np.float64)] + g[3:]        # noqa: E731
    elif odd == "fortran param":
        params[0] = np.asfortranarray(params[0])
    elif odd == "strided param":
        view = np.zeros((14, 5), np.float32)[::2]
        view[...] = params[0]
        params[0] = view
    else:   # book 2 without remove_duplicate: the shared array is updated once per entry
        params = params + [params[1]]
        gmod = lambda g: g + [g[1]]        # noqa: E731
    ref = [p.copy() for p in params]
    if odd == "param twice":
        ref[-1] = ref[1]
    opt, book = getattr(O, rule)(**RULES[rule]), Book(rule, **RULES[rule])
    for step in range(3):
        g = gmod(_grads(np.float32, "list", step))
        opt.update(params, g)
        book.update(ref, [x.copy() for x in g])
    for got, want in zip(params, ref):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# PyTorch's optimizers are an independent implementation of the same rules: with the books' hyperparameters mapped
# (PyTorch's momentum keeps buf = -v/lr, the same trajectory for a constant lr) and eps = 0 (Adam adds eps after
# the bias correction), three steps give the same params. Not Nesterov: the books' form, p += m*m*v_new -
# (1+m)*lr*g, is not the paper's p += m*m*v_old - (1+m)*lr*g, which PyTorch follows (p += m*v_new - lr*g).
TORCH_SAME = {
    "sgd_step": lambda t, ps, kw: t.optim.SGD(ps, lr=kw["lr"]),
    "momentum_step": lambda t, ps, kw: t.optim.SGD(ps, lr=kw["lr"], momentum=kw["momentum"]),
    "adagrad_step": lambda t, ps, kw: t.optim.Adagrad(ps, lr=kw["lr"], eps=0.0),
    "rmsprop_step": lambda t, ps, kw: t.optim.RMSprop(ps, lr=kw["lr"], alpha=kw["decay_rate"], eps=0.0),
    "adam_step": lambda t, ps, kw: t.optim.Adam(ps, lr=kw["lr"], betas=(kw["beta1"], kw["beta2"]), eps=0.0),
}
TORCH_KW = {"sgd_step": dict(lr=0.1), "momentum_step": dict(lr=0.1, momentum=0.8),
            "adagrad_step": dict(lr=0.1, eps=0.0),
            "rmsprop_step": dict(lr=0.1, decay_rate=0.9, eps=0.0),
            "adam_step": dict(lr=0.01, beta1=0.8, beta2=0.9, eps=0.0)}


@pytest.mark.parametrize("op", list(TORCH_SAME))
def test_same_trajectory_as_pytorch(op):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    shapes = [(4, 3), (1,), (9,)]
    P = [rng.standard_normal(s) for s in shapes]
    gs = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    tp = [torch.tensor(p) for p in P]
    opt = TORCH_SAME[op](torch, tp, TORCH_KW[op])
    states = [[np.zeros(s) for s in shapes] for _ in OPTIM_STATES[op]]
    for step, g in enumerate(gs, 1):
        run(op, [P, g, *states], TORCH_KW[op], step, "cpu")
        for t, x in zip(tp, g):
            t.grad = torch.tensor(x)
        opt.step()
    for x, t in zip(P, tp):
        np.testing.assert_allclose(x, t.numpy(), rtol=1e-12, atol=1e-12)
