"""Benchmarks: batch norm in training mode, forward and backward.

Each test_<op> times fastnn.<op> on the shapes of SHAPES (fastnn/bench.py) for every implementation;
bench/conftest.py does the parametrization. Run: python -m pytest bench/ --benchmark-only
"""


def test_batch_norm(run_op, shape, impl):
    run_op("batch_norm", shape, impl)


def test_batch_norm_backward(run_op, shape, impl):
    run_op("batch_norm_backward", shape, impl)
