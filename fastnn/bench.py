"""`python -m fastnn.bench`: one table of every op, fastnn against the NumPy reference and PyTorch.

Performance is a ratio measured side by side in one process (docs/internals.md, "Measuring"): for every op on the
shapes in SHAPES it times the NumPy reference, the fastnn backend and (when importable) PyTorch on the same inputs
and thread count, and prints the machine's own ceilings first (NumPy sgemm GFLOP/s and a memory copy GB/s on the
CPU; a device-to-device copy on the GPU) so that the GFLOP/s and GB/s columns can be read against them.

The story, in order: OPS and SHAPES from fastnn/optable.py (name, shape family, inputs, torch call, flop count;
also read by the tests and the bench/ pytest-benchmark suite) -> timing (`timeit`) -> one `Row` per (op, shape)
-> the table / JSON -> `main`.

A kernel that is not written yet (RuntimeError "not implemented yet"), or anything else that fails in one cell,
becomes "n/a" with the reason in the note column; the run goes on.
"""
import argparse
import io
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

import fastnn
# The op table (fastnn/optable.py): ops, shapes, input makers, PyTorch baselines, FLOP counts; the tests read it too.
from fastnn.optable import OPS, OPS_BY_NAME, Conv, Pool, gauss, shape_id, shapes_for

# ------------------------------------------------------------------------------------------------ op selection


def select_ops(names):
    """`--ops conv2d,max_pool2d`: a forward name selects its backward too; a `*_backward` name selects itself."""
    if not names:
        return list(OPS)
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - set(OPS_BY_NAME)
    if unknown:
        raise SystemExit(f"unknown op(s) {sorted(unknown)}; choose from {', '.join(OPS_BY_NAME)}")
    return [op for op in OPS if op.name in wanted or op.name.removesuffix("_backward") in wanted]


# -------------------------------------------------------------------------------------------------- devices

class CPU:
    """NumPy arrays; nothing to synchronise."""
    name, torch_device = "cpu", "cpu"

    def put(self, a):
        return a

    def sync(self):
        pass


class GPU:
    """CUDA arrays: CuPy if importable, else Numba device arrays; timing synchronises the device."""
    name, torch_device = "cuda", "cuda"

    def __init__(self):
        try:
            from numba import cuda
        except ImportError as e:
            raise SystemExit(f"--backend cuda needs numba-cuda: {e}") from e
        if not cuda.is_available():
            raise SystemExit("--backend cuda: no usable CUDA device (numba.cuda.is_available() is False)")
        self.cuda = cuda
        try:
            import cupy
            self.cupy = cupy
        except ImportError:
            self.cupy = None

    def put(self, a):
        return self.cupy.asarray(a) if self.cupy is not None else self.cuda.to_device(a)

    def sync(self):
        self.cuda.synchronize()


def on_device(device, args, backend):
    """The NumPy inputs on `device`; a cache (LSTMCache, RNNCache, GRUCache) is re-labelled for `backend` with its
    arrays moved too."""
    def move(a):
        if isinstance(a, np.ndarray):
            return device.put(a)
        if isinstance(a, tuple) and getattr(a, "_fields", ())[:1] == ("backend",):   # LSTMCache, RNNCache, ...
            return a._replace(backend=backend, **{f: move(getattr(a, f)) for f in a._fields[1:]})
        return a
    return tuple(move(a) for a in args)


# ---------------------------------------------------------------------------------------------------- timing

def timeit(fn, budget=0.3, repeat=10, sync=lambda: None, warmup=1):
    """Time `fn()`: `warmup` untimed calls, then timed calls until there are `repeat` of them or `budget` seconds
    are spent (at least one). `sync` runs before and after each timed call (a device synchronize on the GPU).
    Returns (best_ms, median_ms, number_of_timed_runs)."""
    def once():
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeat and (not times or time.perf_counter() - start < budget):
        times.append(once())
    return 1e3 * min(times), 1e3 * float(np.median(times)), len(times)


def nbytes(obj):
    """Bytes of the arrays in a (nested) result or argument list; caches and non-arrays count 0."""
    if isinstance(obj, tuple) and getattr(obj, "_fields", ())[:1] == ("backend",):
        return 0
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    return int(getattr(obj, "nbytes", 0) or 0) if hasattr(obj, "shape") else 0


def _reason(e):
    """One short line: the message of a RuntimeError (e.g. "conv2d: not implemented yet"), else type: message."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (msg if isinstance(e, RuntimeError) and msg else f"{type(e).__name__}: {msg}")[:80]


# ------------------------------------------------------------------------------------------------------ rows

@dataclass
class Row:
    """One (op, shape): times in ms (None = n/a, the reason in `notes`) and the work done."""
    op: str
    shape: str                              # shape_id(shape); `params` has the fields
    params: dict = field(default_factory=dict)
    numpy_ms: Optional[float] = None
    fastnn_ms: Optional[float] = None
    torch_ms: Optional[float] = None
    torch_train_ms: Optional[float] = None  # PyTorch's forward with autograd on (Op.torch_train)
    flops: Optional[float] = None           # compute-bound ops
    bytes: Optional[float] = None           # memory-bound ops: inputs read once + outputs written once
    runs: dict = field(default_factory=dict)    # per column: number of timed runs and their median ms
    notes: list = field(default_factory=list)

    @staticmethod
    def _ratio(other_ms, ms):
        return other_ms / ms if other_ms and ms else None

    @property
    def speedup_vs_numpy(self):
        return self._ratio(self.numpy_ms, self.fastnn_ms)

    @property
    def speedup_vs_torch(self):
        """fastnn speed / torch speed (torch ms / fastnn ms): > 1 means fastnn is faster."""
        return self._ratio(self.torch_ms, self.fastnn_ms)

    def rate(self, ms):
        """GFLOP/s (compute-bound) or GB/s (memory-bound) at `ms`."""
        work = self.flops if self.flops is not None else self.bytes
        return work / (ms * 1e6) if work and ms else None

    @property
    def unit(self):
        return "GFLOP/s" if self.flops is not None else "GB/s"

    def as_dict(self):
        d = asdict(self)
        d.update(speedup_vs_numpy=self.speedup_vs_numpy, speedup_vs_torch=self.speedup_vs_torch, unit=self.unit,
                 **{f"{c}_rate": self.rate(getattr(self, f"{c}_ms")) for c in ("numpy", "fastnn", "torch")})
        return d


@dataclass
class Config:
    """What one run measures: parsed from the command line."""
    backend: str = "cpu"
    dtype: str = "float32"
    sizes: str = "default"
    threads: Optional[int] = None
    repeat: int = 10
    budget: float = 0.3                     # seconds per cell (fastnn / torch)
    numpy_budget: float = 0.2               # the reference is slow: fewer runs
    numpy_max_bytes: float = 256e6          # on the GPU, skip the NumPy column above this input size
    torch: bool = True
    ops: list = field(default_factory=lambda: list(OPS))
    mixed: bool = False
    sweep: bool = False
    png: Optional[str] = None


def _cell(row, column, make_fn, budget, repeat, sync, slow_once=False):
    """Time one column of a row; any failure (kernel not written, torch missing an op...) is a note, not a crash.
    The first call is the warm-up and gives the result (returned; None on failure). With `slow_once` (the NumPy
    reference) a first call slower than the budget is the measurement itself, so slow references run once; other
    columns always get a timed call after the warm-up (which absorbs JIT compiles and cuDNN autotuning)."""
    try:
        fn = make_fn()
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        first = time.perf_counter() - t0
        if slow_once and first > budget:
            best = median = 1e3 * first
            runs = 1
        else:
            best, median, runs = timeit(fn, budget, repeat, sync, warmup=0)
    except Exception as e:  # noqa: BLE001 - report every failure in the table and carry on
        note = f"{column}: {_reason(e)}"
        if note not in row.notes:  # the second round fails the same way
            row.notes.append(note)
        return None
    prev = getattr(row, f"{column}_ms")
    if prev is None or best < prev:  # a later round of the same cell keeps the better time
        setattr(row, f"{column}_ms", best)
        row.runs[column] = {"runs": runs + row.runs.get(column, {}).get("runs", 0), "median_ms": median}
    else:
        row.runs[column]["runs"] += runs
    return result


def bind(op, impl, shape, args, kw, device, torch=None):
    """A zero-argument callable running `op` on `impl` ("numpy", "cpu", "cuda", "torch" or "torch_train") with the
    NumPy inputs `args, kw` from `op.make`; inputs are moved to `device` here, outside any timing."""
    if impl in ("torch", "torch_train"):
        return getattr(op, impl)(torch, device.torch_device, shape, args, kw)
    a = on_device(CPU() if impl == "numpy" else device, args, impl)
    return lambda: getattr(fastnn, op.name)(*a, backend=impl, **kw)


def algo_notes(op, shape, cfg, device):
    """What the cpu backend ran for this row, as the library names it (fastnn._cpu's *_algo queries), and the
    Winograd caveat: it does 16 multiplies per 2x2 outputs and channel pair where the FLOP count assumes 36."""
    if device.name != "cpu":
        return []
    try:
        from fastnn import _cpu
    except ImportError:
        return []
    if isinstance(shape, Conv):
        conv = ((shape.N, shape.C, shape.H, shape.W), (shape.K, shape.C, shape.R, shape.S), (shape.stride,) * 2,
                (shape.pad,) * 2, (1, 1), 1, cfg.dtype)
        parts = ["forward"] if op.name == "conv2d" else ["dweight", "dx"]
        algos = {part: _cpu.conv2d_algo(*conv, part=part) for part in parts}
        notes = [", ".join(f"{part} {a}" for part, a in algos.items())]
        if "winograd" in algos.values():
            notes.append("Winograd F(2x2,3x3): rate in direct-conv FLOPs")
        return notes
    if isinstance(shape, Pool) and op.name != "max_pool2d_backward":
        pass_ = "max" if op.name == "max_pool2d" else "avg_backward" if op.name.endswith("_backward") else "avg"
        return [_cpu.pool2d_algo(pass_, (shape.N, shape.C, shape.H, shape.W), (shape.k,) * 2, (shape.stride,) * 2,
                                 (shape.pad,) * 2, cfg.dtype)]
    return []


def measure(op, shape, cfg, device, torch=None):
    """One Row: the NumPy reference, the fastnn backend and (optionally) PyTorch on the same inputs."""
    args, kw = op.make(shape, np.dtype(cfg.dtype), np.random.default_rng(0))
    row = Row(op.name, shape_id(shape), shape._asdict(), flops=op.flops(shape) if op.flops else None)

    def cell(impl, column, budget, repeat, sync):
        return _cell(row, column, lambda: bind(op, impl, shape, args, kw, device, torch), budget, repeat, sync,
                     slow_once=impl == "numpy")

    out = None
    if device.name == "cpu" or nbytes(args) <= cfg.numpy_max_bytes:
        out = cell("numpy", "numpy", cfg.numpy_budget, max(1, cfg.repeat // 3), CPU().sync)
    else:
        row.notes.append("numpy: skipped (large shape on GPU)")
    # fastnn and PyTorch in two alternating rounds, the best of each kept: a transient at the start of one cell
    # (NumPy's BLAS threads still spinning after the reference made fastnn's first CPU row 6x slower in 2 of 4
    # runs) does not decide its ratio.
    fast_out = None
    for _ in range(2):
        got = cell(cfg.backend, "fastnn", cfg.budget, cfg.repeat, device.sync)
        fast_out = got if got is not None else fast_out
        for column in ("torch", "torch_train"):
            if torch is not None and getattr(op, column) is not None:
                cell(column, column, cfg.budget, cfg.repeat,
                     torch.cuda.synchronize if device.name == "cuda" else CPU().sync)
    out = out if out is not None else fast_out
    if row.torch_train_ms is not None and row.fastnn_ms:
        row.notes.append(f"torch with autograd on {_ms(row.torch_train_ms)} ms: "
                         f"{row.torch_train_ms / row.fastnn_ms:.2f}x")
    if row.fastnn_ms is not None:
        row.notes += algo_notes(op, shape, cfg, device)
    if op.flops is None and out is not None:
        row.bytes = float(nbytes(args) + nbytes(out))
    return row


# ------------------------------------------------------------------------------------------------- ceilings

def cpu_ceilings(repeat=3, n=2048, copy_elems=1 << 25, threads=1):
    """Measured in this run: NumPy sgemm GFLOP/s at n^3 (float32) and np.copyto GB/s (read + write), the copy split
    into `threads` parts copied at once from Python threads (np.copyto releases the GIL), as the kernels use them."""
    import threading
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    gemm_ms, _, _ = timeit(lambda: a @ b, budget=1.0, repeat=repeat)
    src, dst = np.ones(copy_elems, np.float32), np.empty(copy_elems, np.float32)
    parts = [(dst[i * copy_elems // threads:(i + 1) * copy_elems // threads],
              src[i * copy_elems // threads:(i + 1) * copy_elems // threads]) for i in range(threads)]

    def copy():
        ts = [threading.Thread(target=np.copyto, args=p) for p in parts[1:]]
        for t in ts:
            t.start()
        np.copyto(*parts[0])
        for t in ts:
            t.join()
    copy_ms, _, _ = timeit(copy, budget=1.0, repeat=repeat)
    return {"sgemm_gflops": 2 * n ** 3 / (gemm_ms * 1e6), "sgemm_n": n,
            "copy_gbs": 2 * src.nbytes / (copy_ms * 1e6), "copy_bytes": src.nbytes}


def gpu_ceilings(device, repeat=10, torch=None, elems=1 << 28, n=4096):
    """Measured in this run: a device-to-device copy GB/s (read + write) and, with PyTorch, cuBLAS sgemm GFLOP/s
    at n^3 (float32, TF32 off)."""
    src = device.cuda.device_array(elems, np.float32)
    dst = device.cuda.device_array(elems, np.float32)
    ms, _, _ = timeit(lambda: dst.copy_to_device(src), budget=1.0, repeat=repeat, sync=device.sync)
    out = {"device_copy_gbs": 2 * src.nbytes / (ms * 1e6), "copy_bytes": src.nbytes}
    if torch is not None:
        a = torch.randn(n, n, device="cuda")
        ms, _, _ = timeit(lambda: a @ a, budget=1.0, repeat=repeat, sync=torch.cuda.synchronize)
        out.update(sgemm_gflops=2 * n ** 3 / (ms * 1e6), sgemm_n=n)
    return out


# ------------------------------------------------------------------------------------------------- printing

def _ms(v):
    return "n/a" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _x(v):
    return "" if v is None else f"{v:.2f}x"


def _rate(row, ceilings):
    r = row.rate(row.fastnn_ms)
    if r is None:
        return ""
    peak = ceilings.get("sgemm_gflops") if row.flops is not None else (
        ceilings.get("copy_gbs") or ceilings.get("device_copy_gbs"))
    pct = f" ({100 * r / peak:.0f}%)" if peak else ""
    return f"{r:.1f} {row.unit}{pct}"


def format_table(rows, ceilings, with_torch):
    head = ["op", "shape", "numpy ms", "fastnn ms", "vs numpy"]
    head += ["torch ms", "fastnn/torch"] if with_torch else []
    head += ["fastnn rate (% of ceiling)", "notes"]
    body = []
    for r in rows:
        cells = [r.op, r.shape, _ms(r.numpy_ms), _ms(r.fastnn_ms), _x(r.speedup_vs_numpy)]
        cells += [_ms(r.torch_ms), _x(r.speedup_vs_torch)] if with_torch else []
        cells += [_rate(r, ceilings), "; ".join(r.notes)]
        body.append(cells)
    return text_table(head, body, left={0, 1, len(head) - 2, len(head) - 1})


def text_table(head, body, left):
    """Columns padded to their widest cell: the columns in `left` left-aligned, the others (numbers) right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(head, *body)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(c) for c in body])


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _load():
    """The 1-minute load average (other processes on a shared machine make every time noisier), or nan."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def machine_info(cfg, ceilings, torch, config):
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.platform(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "load_average": _load(), "fastnn_config": config,
            "python": sys.version.split()[0], "numpy": np.__version__,
            "torch": getattr(torch, "__version__", None), "backend": cfg.backend, "dtype": cfg.dtype,
            "sizes": cfg.sizes, "threads": cfg.threads, "repeat": cfg.repeat, "ceilings": ceilings}


# ----------------------------------------------------------------------------------------------------- --mixed
# fastnn in company: a training loop calls NumPy's BLAS and fastnn in turn. NumPy's OpenBLAS keeps a worker
# spinning for ~0.1 s after each parallel call, and a pool of fastnn's that spun after its work took the cores back
# from the next matmul (csrc/parallel.h). Each side is timed in the alternating loop ("company") and in the same
# loop with the other side's threads taken away ("quiet"): NumPy's BLAS on one thread (threadpoolctl) for the
# fastnn call, fastnn on one thread for the matmul. The loop and the caches it churns are the same in both, so
# company/quiet is what the two thread pools cost each other. "alone" is the call back to back with itself. The
# alone and quiet loops start after OpenBLAS's workers have stopped spinning: no earlier matmul's spin is in them.

MIXED_MATMUL = (512, 1024, 512)     # (M, K, N) of the NumPy matmul beside each call: ~1.7 ms on 2 threads here
OPENBLAS_SPIN_S = 0.15              # OpenBLAS's workers spin 2^28 TSC cycles (~0.1 s) after a call: wait them out


@dataclass
class MixedRow:
    op: str
    shape: str
    threads: int
    alone_ms: float = 0.0            # fastnn call back to back with itself
    quiet_ms: float = 0.0            # after a one-thread matmul
    company_ms: float = 0.0          # after a default matmul
    mm_quiet_ms: float = 0.0         # matmul after the fastnn call on one thread
    mm_company_ms: float = 0.0       # matmul after the fastnn call on `threads` threads

    @property
    def op_ratio(self):
        return self.company_ms / self.quiet_ms

    @property
    def mm_ratio(self):
        return self.mm_company_ms / self.mm_quiet_ms


def _loop(first, second, n):
    """Median ms of `second()` and of `first()` over n rounds of first(); second()."""
    a, b = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        b.append(time.perf_counter() - t1)
        a.append(t1 - t0)
    return 1e3 * float(np.median(b)), 1e3 * float(np.median(a))


def measure_mixed(fn, matmul, threads, rounds=3, n=15):
    """(alone, quiet, company, mm_quiet, mm_company) medians over `rounds` interleaved rounds of each loop."""
    from threadpoolctl import threadpool_limits
    got = {k: [] for k in ("alone", "quiet", "company", "mm_quiet", "mm_company")}
    fn()
    matmul()
    for _ in range(rounds):
        fastnn.set_num_threads(threads)
        time.sleep(OPENBLAS_SPIN_S)
        got["alone"].append(_loop(lambda: None, fn, n)[0])
        op_ms, mm_ms = _loop(matmul, fn, n)
        got["company"].append(op_ms)
        got["mm_company"].append(mm_ms)
        with threadpool_limits(1, user_api="blas"):
            time.sleep(OPENBLAS_SPIN_S)
            got["quiet"].append(_loop(matmul, fn, n)[0])
        fastnn.set_num_threads(1)
        got["mm_quiet"].append(_loop(matmul, fn, n)[1])
    fastnn.set_num_threads(threads)
    return {k: float(np.median(v)) for k, v in got.items()}


def run_mixed(cfg, out=None):
    """The --mixed table: every selected op on SHAPES["mixed"], fastnn on 1 and on cfg.threads threads."""
    out = out or sys.stdout
    try:
        import threadpoolctl  # noqa: F401
    except ImportError as e:
        raise SystemExit("--mixed needs threadpoolctl (pip install threadpoolctl): it runs NumPy's BLAS on one "
                         "thread for the quiet loop") from e
    dtype = np.dtype(cfg.dtype)
    rng = np.random.default_rng(0)
    m, k, n = MIXED_MATMUL
    a, b = gauss(rng, dtype, m, k), gauss(rng, dtype, k, n)
    matmul = lambda: a @ b  # noqa: E731
    counts = sorted({1, cfg.threads or fastnn.get_num_threads()})
    print(f"fastnn.bench --mixed: dtype={cfg.dtype}, each call after a NumPy matmul {m}x{k} @ {k}x{n} "
          f"(NumPy's BLAS on its default threads); load average {_load():.1f} on {os.cpu_count()} CPUs", file=out)
    rows = []
    for op in cfg.ops:
        for shape in shapes_for(op.family, "mixed"):
            args, kw = op.make(shape, dtype, rng)
            fn = bind(op, "cpu", shape, args, kw, CPU())
            for t in counts:
                if sys.stderr.isatty():
                    print(f"\r\033[K{op.name} {shape_id(shape)} threads={t}", end="", file=sys.stderr, flush=True)
                r = measure_mixed(fn, matmul, t)
                rows.append(MixedRow(op.name, shape_id(shape), t, *(r[c] for c in (
                    "alone", "quiet", "company", "mm_quiet", "mm_company"))))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(format_mixed(rows), file=out)
    print("op: the fastnn call's median ms back to back (alone), after a one-thread matmul (quiet), after the "
          "default matmul (company);\nmatmul: its median ms after the fastnn call on one thread (quiet) and on the "
          "row's threads (company). Ratios: company / quiet.", file=out)
    return rows


def format_mixed(rows):
    head = ["op", "shape", "threads", "alone", "quiet", "company", "op ratio", "matmul quiet", "matmul company",
            "matmul ratio"]
    body = [[r.op, r.shape, str(r.threads), _ms(r.alone_ms), _ms(r.quiet_ms), _ms(r.company_ms), _x(r.op_ratio),
             _ms(r.mm_quiet_ms), _ms(r.mm_company_ms), _x(r.mm_ratio)] for r in rows]
    return text_table(head, body, left={0, 1})



# ----------------------------------------------------------------------------------------------------- setup

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m fastnn.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="", help="comma-separated op names (a forward name includes its backward)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--sizes", choices=("small", "default"), default="default")
    p.add_argument("--threads", type=int, default=None, help="threads for fastnn, PyTorch and NumPy's BLAS")
    p.add_argument("--repeat", type=int, default=10, help="at most this many timed runs per cell (>= 1)")
    p.add_argument("--json", metavar="PATH", help="write every row and the machine info to PATH")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch columns")
    p.add_argument("--sweep", action="store_true",
                   help="every op over a range of sizes, batch 1 to the large shapes (fastnn/sweep.py), with goals")
    p.add_argument("--png", metavar="PATH", help="with --sweep: plot the speedups per op and size to PATH")
    p.add_argument("--mixed", action="store_true",
                   help="each cpu call in company with NumPy matmuls, on 1 and --threads threads (a table of its own)")
    a = p.parse_args(argv)
    cfg = Config(backend=a.backend, dtype=a.dtype, sizes=a.sizes, threads=a.threads, repeat=max(1, a.repeat),
                 torch=not a.no_torch, ops=select_ops(a.ops), mixed=a.mixed, sweep=a.sweep, png=a.png)
    if (cfg.mixed or cfg.sweep) and cfg.backend != "cpu":
        raise SystemExit("--mixed and --sweep time the cpu backend (drop --backend cuda)")
    return cfg, a.json


def import_torch(cfg):
    """PyTorch configured like fastnn (same threads; no TF32 on the GPU), or None."""
    if not cfg.torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    if cfg.backend == "cuda":
        if not torch.cuda.is_available():
            return None
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True          # cuDNN's best algorithm per shape (tuned in the warm-up)
    else:
        torch.set_num_threads(cfg.threads)
    return torch


def set_threads(cfg):
    """Use the same thread count everywhere: fastnn's (default: one per CPU), PyTorch, NumPy's BLAS."""
    try:
        if cfg.threads:
            fastnn.set_num_threads(cfg.threads)
        cfg.threads = fastnn.get_num_threads()
    except ImportError:                     # no C++ extension: keep the machine's count
        cfg.threads = cfg.threads or os.cpu_count()
    try:
        import threadpoolctl
        return threadpoolctl.threadpool_limits(cfg.threads)     # undone by main() when it returns
    except ImportError:
        return None


def run(cfg, torch=None, out=None):
    """Measure and print everything (to `out`, default stdout); returns (rows, ceilings, fastnn config)."""
    out = out or sys.stdout
    device = GPU() if cfg.backend == "cuda" else CPU()
    reps = min(3, cfg.repeat)
    ceilings = (gpu_ceilings(device, reps, torch) if device.name == "cuda" else
                cpu_ceilings(reps, threads=max(1, cfg.threads or 1)))
    print(f"fastnn.bench: backend={cfg.backend} dtype={cfg.dtype} sizes={cfg.sizes} threads={cfg.threads} "
          f"torch={getattr(torch, '__version__', 'no')} load average {_load():.1f} on {os.cpu_count()} CPUs", file=out)
    if device.name == "cuda":
        sgemm = (f"; cuBLAS sgemm {ceilings['sgemm_n']}^3 float32 (TF32 off) {ceilings['sgemm_gflops']:.0f} GFLOP/s"
                 if "sgemm_gflops" in ceilings else "")
        print(f"ceilings: device-to-device copy {ceilings['device_copy_gbs']:.0f} GB/s (read+write){sgemm}", file=out)
    else:
        print(f"ceilings: numpy sgemm {ceilings['sgemm_n']}^3 float32 {ceilings['sgemm_gflops']:.1f} GFLOP/s; "
              f"np.copyto {ceilings['copy_bytes'] >> 20} MiB on {cfg.threads} threads {ceilings['copy_gbs']:.1f} GB/s "
              f"(read+write)", file=out)
    config = fastnn.show_config(file=out)
    print(file=out)
    rows = []
    for op in cfg.ops:
        for shape in shapes_for(op.family, cfg.sizes, cfg.backend):
            if sys.stderr.isatty():         # progress while it runs (the table needs every row for its widths)
                print(f"\r\033[K{op.name} {shape_id(shape)}", end="", file=sys.stderr, flush=True)
            rows.append(measure(op, shape, cfg, device, torch))
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(format_table(rows, ceilings, torch is not None), file=out)
    print("vs numpy, fastnn/torch: how many times faster fastnn is (other ms / fastnn ms); "
          "times are the best of the timed runs.", file=out)
    return rows, ceilings, config


def main(argv=None):
    cfg, json_path = parse_args(argv)
    if cfg.mixed:  # NumPy's BLAS keeps its own threads: that is the company being measured
        if cfg.threads:
            fastnn.set_num_threads(cfg.threads)
        cfg.threads = fastnn.get_num_threads()
        rows = run_mixed(cfg)
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"machine": machine_info(cfg, {}, None, fastnn.show_config(file=io.StringIO())),
                           "mixed": [dict(asdict(r), op_ratio=r.op_ratio, matmul_ratio=r.mm_ratio) for r in rows]},
                          f, indent=1)
        return rows
    blas_limit = set_threads(cfg)
    if cfg.sweep:
        from fastnn import sweep
        try:
            points = sweep.run(cfg, import_torch(cfg), png=cfg.png)
        finally:
            if blas_limit is not None:
                blas_limit.restore_original_limits()
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"sweep": [dict(asdict(p), at_goal=p.at_goal) for p in points]}, f, indent=1)
        return points
    try:
        torch = import_torch(cfg)
        rows, ceilings, config = run(cfg, torch)
    finally:
        if blas_limit is not None:
            blas_limit.restore_original_limits()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"machine": machine_info(cfg, ceilings, torch, config), "rows": [r.as_dict() for r in rows]}, f,
                      indent=1)
    return rows


if __name__ == "__main__":
    main()
