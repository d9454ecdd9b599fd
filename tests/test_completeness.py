"""Every op of the op table (fastnn/optable.py) exists everywhere an op must: the public API, the NumPy reference,
the cpu and cuda backends and docs/internals.md; and every public op has a table entry (so it is tested and timed).
A new op that is half added fails here, naming what is missing."""
import importlib.util
import pathlib

import pytest

import fastnn
from fastnn import optable

OPS = [op.name for op in optable.OPS]
# Public names that are not ops: the cache type and the utilities.
NOT_OPS = {"LSTMCache", "RNNCache", "GRUCache", "backends", "show_config", "set_num_threads", "get_num_threads",
           "share_blas_threads", "empty_cache"}
INTERNALS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "internals.md"


def _backend(name):
    if name == "cpu" and importlib.util.find_spec("fastnn._C") is None:
        pytest.skip("the C++ extension is not built")
    if name == "cuda" and not all(importlib.util.find_spec(m) for m in ("numba", "numba_cuda")):
        pytest.skip("numba/numba-cuda not installed: no cuda backend")
    return importlib.import_module({"numpy": "fastnn.reference", "cpu": "fastnn._cpu", "cuda": "fastnn.cuda"}[name])


@pytest.mark.parametrize("op", OPS)
def test_op_is_public(op):
    assert op in fastnn.__all__ and callable(getattr(fastnn, op, None)), f"fastnn.{op} is not in fastnn.__all__"


@pytest.mark.parametrize("backend", ["numpy", "cpu", "cuda"])
@pytest.mark.parametrize("op", OPS)
def test_op_has_every_backend(op, backend):
    assert callable(getattr(_backend(backend), op, None)), f"backend {backend!r} has no function {op}"


@pytest.mark.parametrize("op", OPS)
def test_op_is_documented(op):
    assert op in INTERNALS.read_text(), f"{op} is not mentioned in docs/internals.md"


def test_every_public_op_is_in_the_table():
    public_ops = {n for n in fastnn.__all__ if n not in NOT_OPS}
    assert public_ops - set(OPS) == set(), "public ops without an entry in fastnn/optable.py OPS"
    assert len(OPS) == len(set(OPS)), "an op appears twice in OPS"


@pytest.mark.parametrize("op", OPS)
def test_op_has_cases_and_shapes(op):
    """Tested (cases), timed (a maker on the benchmark shapes of every size set)."""
    entry = optable.OPS_BY_NAME[op]
    assert entry.cases, f"{op} has no test cases"
    for sizes in optable.SHAPES.values():
        assert sizes.get(entry.family), f"{op}: no benchmark shapes for family {entry.family!r}"
