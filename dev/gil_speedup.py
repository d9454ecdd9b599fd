"""Two Python threads calling fastnn at once run in parallel: the C++ kernels release the GIL.

Each kernel runs on one thread (fastnn.set_num_threads(1)); the same 8 calls are made from one Python thread
and then split over two. On 2 cores the second should take about half the time.
    python dev/gil_speedup.py
"""
import threading
import time

import numpy as np

import fastnn


def main():
    fastnn.set_num_threads(1)
    rng = np.random.default_rng(0)
    cases = {
        "conv2d 8x64x56x56 3x3": (fastnn.conv2d, (rng.standard_normal((8, 64, 56, 56), np.float32),
                                                  rng.standard_normal((64, 64, 3, 3), np.float32)), {"padding": 1}),
        "max_pool2d 32x64x56x56 2x2": (fastnn.max_pool2d, (rng.standard_normal((32, 64, 56, 56), np.float32), 2), {}),
        "batch_norm 32x64x56x56": (fastnn.batch_norm, (rng.standard_normal((32, 64, 56, 56), np.float32),), {}),
    }
    print(f"{'op':28s} {'1 thread x 8 calls':>20s} {'2 threads x 4 calls':>20s} {'speedup':>8s}")
    for name, (f, args, kw) in cases.items():
        f(*args, **kw)

        def calls(n):
            for _ in range(n):
                f(*args, **kw)

        best1 = best2 = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            calls(8)
            best1 = min(best1, time.perf_counter() - t)
            threads = [threading.Thread(target=calls, args=(4,)) for _ in range(2)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            best2 = min(best2, time.perf_counter() - t)
        print(f"{name:28s} {best1 * 1e3:17.1f} ms {best2 * 1e3:17.1f} ms {best1 / best2:7.2f}x")


if __name__ == "__main__":
    main()
