"""The end-to-end benchmark's networks (bench/e2e.py: the books' networks written the books' way) compute the
same training step on the books' NumPy layers and on fastnn's drop-in layers: same weights after two steps."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import e2e  # noqa: E402  (bench/ is not a package)


def _params(net):
    p = net.params
    return [p[k] for k in sorted(p)] if isinstance(p, dict) else list(p)


@pytest.mark.parametrize("name", e2e.NETS)
def test_swapped_network_takes_the_books_steps(name):
    import fastnn.layers as FL
    import fastnn.optimizer as FO
    books = e2e.book_numpy.b1 if name in ("deep_convnet", "mlp_extend") else e2e.book_numpy.b2
    nets = []
    for L, O in ((books, e2e._NumpyOptimizers), (FL, FO)):
        step, net, _ = e2e.workload(name, L, O, np.dtype(np.float64))
        np.random.seed(7)                  # the Dropout layers draw their masks from np.random, as the books'
        step()
        step()
        nets.append(net)
    before = e2e.workload(name, books, e2e._NumpyOptimizers, np.dtype(np.float64))[1]
    for i, (a, b, p0) in enumerate(zip(*map(_params, nets), _params(before))):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert not np.array_equal(a, p0) or not np.any(a), f"{name}: parameter {i} did not move"
        tol = 1e-9 if a.dtype == np.float64 else 2e-5
        np.testing.assert_allclose(b, a, rtol=tol * 100, atol=tol * max(1.0, float(np.abs(a).max())),
                                   err_msg=f"{name}: parameter {i}")
