"""Benchmarks: conv2d forward and its backward (dx, dweight, dbias).

Each test_<op> times fastnn.<op> on the shapes of SHAPES (fastnn/bench.py) for every implementation;
bench/conftest.py does the parametrization. Run: python -m pytest bench/ --benchmark-only
"""


def test_conv2d(run_op, shape, impl):
    run_op("conv2d", shape, impl)


def test_conv2d_backward(run_op, shape, impl):
    run_op("conv2d_backward", shape, impl)
