"""Benchmarks: the LSTM cell and the LSTM over a sequence, forward and backward.

Each test_<op> times fastnn.<op> on the shapes of SHAPES (fastnn/bench.py) for every implementation;
bench/conftest.py does the parametrization. Run: python -m pytest bench/ --benchmark-only
"""


def test_lstm_cell(run_op, shape, impl):
    run_op("lstm_cell", shape, impl)


def test_lstm_cell_backward(run_op, shape, impl):
    run_op("lstm_cell_backward", shape, impl)


def test_lstm(run_op, shape, impl):
    run_op("lstm", shape, impl)


def test_lstm_backward(run_op, shape, impl):
    run_op("lstm_backward", shape, impl)
