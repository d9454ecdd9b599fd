"""Benchmarks: max and average pooling, forward and backward.

Each test_<op> times fastnn.<op> on the shapes of SHAPES (fastnn/bench.py) for every implementation;
bench/conftest.py does the parametrization. Run: python -m pytest bench/ --benchmark-only
"""


def test_max_pool2d(run_op, shape, impl):
    run_op("max_pool2d", shape, impl)


def test_max_pool2d_backward(run_op, shape, impl):
    run_op("max_pool2d_backward", shape, impl)


def test_avg_pool2d(run_op, shape, impl):
    run_op("avg_pool2d", shape, impl)


def test_avg_pool2d_backward(run_op, shape, impl):
    run_op("avg_pool2d_backward", shape, impl)
