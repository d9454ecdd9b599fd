"""fastnn's thread pool in company with NumPy's BLAS (csrc/parallel.h), and after a fork.

The timed test asserts ratios measured side by side in one run, never times: each side in the alternating loop
against the same loop with the other side's threads taken away (fastnn.bench.measure_mixed). With the OpenMP pool
this replaced, the matmul ran 2.5-3x slower next to max_pool2d and max_pool2d 13-17x slower next to the matmul.
"""
import multiprocessing
import os

import numpy as np
import pytest

import fastnn

_C = pytest.importorskip("fastnn._C")
pytest.importorskip("threadpoolctl")
bench = pytest.importorskip("fastnn.bench")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs for two pools to meet")
def test_max_pool2d_and_a_matmul_in_turn_keep_their_speed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16, 28, 28), dtype=np.float32)
    a = rng.standard_normal((512, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 512), dtype=np.float32)
    before = fastnn.get_num_threads()
    try:
        r = bench.measure_mixed(lambda: fastnn.max_pool2d(x, 2), lambda: a @ b, threads=2, rounds=3, n=15)
    finally:
        fastnn.set_num_threads(before)
    # The matmul must not lose a core to a pool still spinning after fastnn's call (measured here 0.97-1.08).
    assert r["mm_company"] < 1.6 * r["mm_quiet"], r
    # fastnn next to OpenBLAS's worker, which spins ~0.1 s after each matmul, runs at about its one-thread speed
    # (1.1-1.3x its time after a one-thread matmul), never waiting a scheduler time slice for a worker.
    assert r["company"] < 2.2 * r["quiet"], r


def _plane_stack():
    return (np.arange(64 * 16 * 28 * 28, dtype=np.float32) % 1000).reshape(64, 16, 28, 28)  # big enough to share


def _child(q):
    y, _ = fastnn.max_pool2d(_plane_stack(), 2)
    q.put(float(y.sum(dtype=np.float64)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_a_forked_child_gets_a_working_pool():
    """The parent's workers do not exist in a forked child; its first parallel call must not wait for them."""
    fastnn.max_pool2d(np.ones((64, 16, 28, 28), np.float32), 2)   # the parent's pool is started
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.get(timeout=5) == float(fastnn.reference.max_pool2d(_plane_stack(), 2)[0].sum(dtype=np.float64))

