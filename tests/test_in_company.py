"""fastnn's thread pool in company with NumPy's BLAS (csrc/parallel.h, csrc/blas_share.cpp), and after a fork.

The timed tests assert ratios measured side by side in one run, never times: each side in the alternating loop
against the same loop with the other side's threads taken away (fastnn.bench.measure_mixed). With the OpenMP pool
this replaced, the matmul ran 2.5-3x slower next to max_pool2d and max_pool2d 13-17x slower next to the matmul; with
OpenBLAS's own worker spinning after each matmul, conv2d on two threads ran 1.71x slower than after a one-thread
matmul.
"""
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

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
    # NumPy's threaded matmul ran on fastnn's pool: nothing spins after it (0.61-0.67x here; OpenBLAS's own
    # worker, spinning ~0.1 s after each matmul, made it 1.13-1.17x).
    assert r["company"] < 1.5 * r["quiet"], r


def _blas_shared():
    from fastnn import _cpu
    return bool(_cpu.BLAS_SHARED)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs for two pools to meet")
def test_conv2d_after_a_matmul_gets_both_cores():
    if not _blas_shared():
        pytest.skip("NumPy's BLAS is not an OpenBLAS with the threads callback (>= 0.3.28)")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16, 28, 28), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    a = rng.standard_normal((512, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 512), dtype=np.float32)
    before = fastnn.get_num_threads()
    try:
        r = bench.measure_mixed(lambda: fastnn.conv2d(x, w, padding=1), lambda: a @ b, threads=2, rounds=3, n=10)
    finally:
        fastnn.set_num_threads(before)
    # 0.94x here; 1.71x while OpenBLAS's own worker spun after each matmul on the second core.
    assert r["company"] < 1.4 * r["quiet"], r
    assert r["mm_company"] < 1.4 * r["mm_quiet"], r


def _matmul_after_python_work(a, b, gap_s, rounds=6, per=8):
    """Median seconds of a @ b, each after gap_s of Python work (a training step's loop), in rounds after 0.2 s
    idle (the workers asleep)."""
    times = []
    for _ in range(rounds):
        time.sleep(0.2)
        for _ in range(per):
            end = time.perf_counter() + gap_s
            while time.perf_counter() < end:
                pass
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_a_matmul_every_few_ms_finds_its_worker_awake():
    """With the workers asleep 1 ms after a call, OpenBLAS's gang found its worker placed on the caller's core
    (the caller's job spinning while the one it waits for queued behind it): 1.9x OpenBLAS's own threads for a
    0.25 ms matmul with 2 ms of Python between (FASTNN_BLAS_YIELD_US=0). After a BLAS call the workers stay awake
    (yielding) for 0.1 s: 0.92-1.02x."""
    if not _blas_shared():
        pytest.skip("NumPy's BLAS is not an OpenBLAS with the threads callback (>= 0.3.28)")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((100, 784)), rng.standard_normal((784, 100))
    try:
        fastnn.share_blas_threads(False)
        a @ b
        own = _matmul_after_python_work(a, b, 0.002)
    finally:
        fastnn.share_blas_threads(True)
    a @ b
    shared = _matmul_after_python_work(a, b, 0.002)
    assert shared < 1.5 * own, (shared, own)


def _blas_calls(rng):
    """NumPy calls that take OpenBLAS's threaded paths: GEMM of each type, SYRK, GEMV, LAPACK."""
    out = []
    for dt in (np.float32, np.float64, np.complex64, np.complex128):
        a = rng.standard_normal((300, 400)).astype(dt)
        b = rng.standard_normal((400, 500)).astype(dt)
        out += [a @ b, a @ a.T, a @ b[:, 0]]
    s = rng.standard_normal((300, 300))
    s = s @ s.T + 300 * np.eye(300)
    out += [np.linalg.inv(s), np.linalg.cholesky(s), np.linalg.solve(s, s[:, :7]), np.linalg.eigvalsh(s)]
    return out


def test_numpy_blas_on_fastnn_pool_gives_the_same_numbers():
    if not _blas_shared():
        pytest.skip("NumPy's BLAS is not an OpenBLAS with the threads callback (>= 0.3.28)")
    try:
        shared = _blas_calls(np.random.default_rng(1))
        assert fastnn.share_blas_threads(False)
        own = _blas_calls(np.random.default_rng(1))
    finally:
        assert fastnn.share_blas_threads(True)
    for s, o in zip(shared, own):   # the same jobs on other threads: bit for bit
        np.testing.assert_array_equal(s, o)
    with pytest.raises(TypeError, match="on"):
        fastnn.share_blas_threads("yes")


def test_numpy_blas_and_fastnn_from_several_python_threads():
    """Threads calling matmuls and fastnn at once: the pool runs one gang or one job at a time, others wait or go
    inline; a deadlock here hangs, so it runs in a child with a timeout."""
    if not _blas_shared():
        pytest.skip("NumPy's BLAS is not an OpenBLAS with the threads callback (>= 0.3.28)")
    code = textwrap.dedent("""
        import threading, numpy as np, fastnn
        from fastnn import _cpu
        assert _cpu.BLAS_SHARED
        rng = np.random.default_rng(0)
        a = rng.standard_normal((256, 512), dtype=np.float32); b = rng.standard_normal((512, 256), dtype=np.float32)
        x = rng.standard_normal((8, 16, 28, 28), dtype=np.float32); w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
        want_mm, want_conv = a @ b, fastnn.conv2d(x, w, padding=1)
        bad = []
        def work(k):
            for i in range(150):
                if not np.array_equal(a @ b, want_mm): bad.append(("matmul", k, i))
                if (i + k) % 3 == 0 and not np.array_equal(fastnn.conv2d(x, w, padding=1), want_conv):
                    bad.append(("conv2d", k, i))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        [t.start() for t in ts]; [t.join() for t in ts]
        assert not bad, bad[:5]
        print("ok")
    """)
    env = dict(os.environ, FASTNN_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _plane_stack():
    return (np.arange(64 * 16 * 28 * 28, dtype=np.float32) % 1000).reshape(64, 16, 28, 28)  # big enough to share


def _child(q):
    y, _ = fastnn.max_pool2d(_plane_stack(), 2)
    a = np.arange(256 * 256, dtype=np.float64).reshape(256, 256) % 7
    q.put((float(y.sum(dtype=np.float64)), float((a @ a).sum())))  # the matmul on the child's pool, if shared


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
    a = np.arange(256 * 256, dtype=np.float64).reshape(256, 256) % 7
    want = (float(fastnn.reference.max_pool2d(_plane_stack(), 2)[0].sum(dtype=np.float64)), float((a @ a).sum()))
    assert q.get(timeout=5) == want

