"""Benchmarks: im2col and its adjoint col2im.

Each test_<op> times fastnn.<op> on the shapes of SHAPES (fastnn/bench.py) for every implementation;
bench/conftest.py does the parametrization. Run: python -m pytest bench/ --benchmark-only
"""


def test_im2col(run_op, shape, impl):
    run_op("im2col", shape, impl)


def test_col2im(run_op, shape, impl):
    run_op("col2im", shape, impl)
