"""`python -m fastnn.bench` end to end on the small shapes: one row per (op, shape) in the JSON, positive times,
and a kernel that is not written yet reported as n/a instead of stopping the run. Never asserts on speed."""
import json

import pytest

from fastnn import optable

fastnn_bench = pytest.importorskip("fastnn.bench")
_cpu = pytest.importorskip("fastnn._cpu")      # needs the C++ extension (the cpu backend is what is timed)


def _run(tmp_path, *extra):
    path = tmp_path / "bench.json"
    fastnn_bench.main(["--sizes", "small", "--repeat", "1", "--json", str(path), *extra])
    return json.loads(path.read_text())


def test_small_run_writes_a_row_per_op_and_shape(tmp_path, capsys):
    report = _run(tmp_path)
    rows = report["rows"]
    expected = [(op.name, optable.shape_id(s)) for op in optable.OPS for s in optable.SHAPES["small"][op.family]]
    assert [(r["op"], r["shape"]) for r in rows] == expected
    for r in rows:
        assert r["numpy_ms"] > 0, r                       # the reference always runs
        for col in ("fastnn", "torch"):
            t = r[f"{col}_ms"]
            # a time, or n/a with the reason in the notes (torch columns exist only when torch imports)
            assert (t is not None and t > 0) or any(n.startswith(col) for n in r["notes"]) or col == "torch", r
        assert (r["flops"] or 0) > 0 or r["bytes"] > 0, r
    ceilings = report["machine"]["ceilings"]
    assert ceilings["sgemm_gflops"] > 0 and ceilings["copy_gbs"] > 0
    out = capsys.readouterr().out
    assert "sgemm" in out and "fastnn ms" in out and "lstm_backward" in out


def test_unimplemented_kernel_is_reported_not_raised(tmp_path, monkeypatch):
    """max_pool2d raises as an unwritten kernel does; avg_pool2d works (the reference stands in for the kernel)."""
    import fastnn.reference

    def not_yet(*args, **kwargs):
        raise RuntimeError("max_pool2d: not implemented yet")
    monkeypatch.setattr(_cpu, "max_pool2d", not_yet)
    monkeypatch.setattr(_cpu, "avg_pool2d", fastnn.reference.avg_pool2d)
    rows = _run(tmp_path, "--ops", "max_pool2d,avg_pool2d", "--no-torch")["rows"]
    assert {r["op"] for r in rows} == {"max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"}
    for r in rows:
        assert r["numpy_ms"] > 0 and r["torch_ms"] is None
        if r["op"] == "max_pool2d":
            assert r["fastnn_ms"] is None and r["speedup_vs_numpy"] is None and r["fastnn_rate"] is None
            assert r["notes"] == ["fastnn: max_pool2d: not implemented yet"], r
        if r["op"] == "avg_pool2d":
            # the note names the variant the cpu kernel runs for this shape, as the library reports it
            assert r["fastnn_ms"] > 0 and r["speedup_vs_numpy"] > 0 and r["notes"] == [
                _cpu.pool2d_algo("avg", tuple(r["params"][k] for k in "NCHW"), *((r["params"][k],) * 2
                                 for k in ("k", "stride", "pad")), "float32")], r
            assert r["unit"] == "GB/s" and r["fastnn_rate"] > 0 and r["runs"]["fastnn"]["runs"] >= 1


def test_ops_selection():
    names = [op.name for op in fastnn_bench.select_ops("conv2d,lstm_backward")]
    assert names == ["conv2d", "conv2d_backward", "lstm_backward"]
    with pytest.raises(SystemExit):
        fastnn_bench.select_ops("conv3d")


def test_training_forward_note():
    """An op with a `torch_train` factory (the LSTM forwards: PyTorch with autograd recording) gets that time in its
    own field and a note with the ratio; the torch column stays the no_grad one. A stand-in replaces PyTorch."""
    import time

    def factory(seconds):
        return lambda torch, dev, s, args, kw: (lambda: time.sleep(seconds))
    base = optable.OPS_BY_NAME["lstm"]
    op = optable.Op(base.name, base.family, base.make, factory(0.001), base.flops, factory(0.02))
    shape = optable.SHAPES["small"]["lstm"][0]
    cfg = fastnn_bench.Config(sizes="small", repeat=2, budget=0.05, numpy_budget=0.05)
    row = fastnn_bench.measure(op, shape, cfg, fastnn_bench.CPU(), torch=object())
    assert row.torch_ms >= 1 and row.torch_train_ms >= 20 and row.fastnn_ms > 0
    note, = row.notes
    assert note.startswith("torch with autograd on ") and note.endswith(f"{row.torch_train_ms / row.fastnn_ms:.2f}x")
    assert row.as_dict()["torch_train_ms"] == row.torch_train_ms


def test_sweep_marks_each_point_against_the_goal(tmp_path, capsys):
    """--sweep: a row per op and sweep shape, times in every column, and the goal column computed from them."""
    path = tmp_path / "sweep.json"
    fastnn_bench.main(["--sweep", "--ops", "avg_pool2d", "--no-torch", "--json", str(path)])
    points = json.loads(path.read_text())["sweep"]
    shapes = [fastnn_bench.shape_id(s) for s in optable.shapes_for("pool2d", "sweep")]
    assert [(p["op"], p["shape"]) for p in points] == [(op, s) for op in ("avg_pool2d", "avg_pool2d_backward")
                                                      for s in shapes]
    for p in points:
        assert p["numpy_ms"] > 0 and p["fastnn_ms"] > 0 and p["torch_ms"] is None
        assert p["at_goal"] == (p["numpy_ms"] >= p["fastnn_ms"])      # without PyTorch: the reference decides
    assert f"of {len(points)} points at goal" in capsys.readouterr().out


def test_mixed_table(tmp_path, capsys):
    """--mixed: each op on 1 thread and on the run's threads, both sides timed, ratios from the same medians."""
    path = tmp_path / "mixed.json"
    fastnn_bench.main(["--mixed", "--ops", "lstm_cell", "--threads", "2", "--json", str(path)])
    rows = json.loads(path.read_text())["mixed"]
    assert [(r["op"], r["threads"]) for r in rows] == [(op, t) for op in ("lstm_cell", "lstm_cell_backward")
                                                      for t in (1, 2)]
    for r in rows:
        assert min(r["alone_ms"], r["quiet_ms"], r["company_ms"], r["mm_quiet_ms"], r["mm_company_ms"]) > 0
        assert r["op_ratio"] == pytest.approx(r["company_ms"] / r["quiet_ms"])
    assert "matmul ratio" in capsys.readouterr().out
