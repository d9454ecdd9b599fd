"""Test configuration shared by every test module.

Without a GPU the CUDA kernels run in Numba's simulator: the variable must be set before numba is first imported,
which is why it happens here, at conftest import time, ahead of any `import fastnn`.
"""
import os

if not os.path.exists("/dev/nvidia0") and "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# the `gpu` marker (realistic-size CUDA tests, skipped in the simulator) is registered in pyproject.toml
