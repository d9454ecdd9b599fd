"""Benchmarks: every op of the op table (fastnn/optable.py), forward and backward, on its family's shapes.

One test, parametrised by bench/conftest.py over op x shape x implementation, so a new op in the table is timed
here with no new file. Run: python -m pytest bench/ --benchmark-only (-k conv2d for one op)
"""


def test_op(run_op, op, shape, impl):
    run_op(op.name, shape, impl)
