"""pytest-benchmark suites for fastnn: `python -m pytest bench/ --benchmark-only` (see bench/README.md).

bench/test_bench_ops.py has one test; `pytest_generate_tests` below parametrizes it over the ops of the op table
(fastnn/optable.py), each op's shapes and the implementations (the NumPy reference, the `cpu` backend, and PyTorch
as a comparison entry when it imports). Inputs, PyTorch equivalents and the shape list are those of
`python -m fastnn.bench`, so the two always time the same thing.

Environment: FASTNN_BENCH_SIZES=small|default (default: default), FASTNN_BENCH_DTYPE=float32|float64.
"""
import importlib.util
import os

import numpy as np
import pytest

import fastnn
from fastnn import bench, optable

SIZES = os.environ.get("FASTNN_BENCH_SIZES", "default")
DTYPE = np.dtype(os.environ.get("FASTNN_BENCH_DTYPE", "float32"))
IMPLS = ["numpy", "cpu"] + (["torch"] if importlib.util.find_spec("torch") else [])


def pytest_generate_tests(metafunc):
    if "op" in metafunc.fixturenames:        # ids "<op>-<shape>", e.g. conv2d_backward-N4-C3-H16-...
        pairs = [(op, s) for op in optable.OPS for s in optable.shapes_for(op.family, SIZES, "cpu")]
        metafunc.parametrize("op,shape", pairs,
                             ids=[f"{op.name}-{optable.shape_id(s).replace(' ', '-')}" for op, s in pairs])
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", IMPLS)


@pytest.fixture(scope="session")
def torch():
    """PyTorch with fastnn's thread count, or None."""
    if "torch" not in IMPLS:
        return None
    import torch
    torch.set_num_threads(fastnn.get_num_threads())
    return torch


@pytest.fixture
def run_op(benchmark, torch):
    """run_op(name, shape, impl): benchmark `fastnn.<name>` (or its PyTorch equivalent) on one shape.
    A kernel that is not written yet is a skip, with its message."""
    def run(name, shape, impl):
        op = optable.OPS_BY_NAME[name]
        args, kw = op.make(shape, DTYPE, np.random.default_rng(0))
        try:
            fn = bench.bind(op, impl, shape, args, kw, bench.CPU(), torch)
            fn()
        except RuntimeError as e:
            pytest.skip(f"{impl}: {e}")
        benchmark.group = f"{name} {optable.shape_id(shape)}"
        if impl == "numpy":
            benchmark.pedantic(fn, rounds=3, warmup_rounds=1)    # the reference is slow: a few rounds
        else:
            benchmark(fn)
    return run
