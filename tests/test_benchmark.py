"""The benchmark runner on the tiny exported models: structure and sanity of what it reports.

No timing thresholds here (speed is what the benchmark measures, not what tests assert);
the checks are that every number it reports is a real, positive measurement and that
the JSON / Markdown / PNG outputs are complete.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED
from sdk.contract import ModelInfo, TensorSpec, pack_engine

if str(REPO) not in sys.path:  # bench/ lives beside sdk/ in the checkout (like apps/)
    sys.path.insert(0, str(REPO))


def _app():
    spec = importlib.util.spec_from_file_location("benchmark_app", REPO / "apps" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts the repository on sys.path (bench/)
    return module


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _check_stats(stats: dict, n: int) -> None:
    assert set(stats) == {"median", "p90", "p99", "mean", "min", "max", "n"}
    assert stats["n"] == n
    assert all(_positive(stats[k]) for k in ("median", "p90", "p99", "mean", "min", "max"))
    assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p99"] <= stats["max"]


@pytest.fixture(scope="module")
def bench_run(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    engine = out / "foreign.engine"
    engine.write_bytes(pack_engine(ModelInfo(kind="generic", name="e", inputs=(
        TensorSpec("x", (1, 4), "float32"),), outputs=()), b"plan"))
    argv = ["--no-released", "--model", str(exported["onnx_fp32"]), str(exported["tflite_int8"]),
            str(engine), "--runs", "3", "--warmup", "1", "--pipeline-photos", "2",
            "--json", str(out / "b.json"), "--markdown", str(out / "b.md"),
            "--plot", str(out / "b.png")]
    rc = _app().main(argv)
    return rc, out, json.loads((out / "b.json").read_text())


def test_benchmark_json_structure(bench_run, exported):
    rc, _, res = bench_run
    assert rc == 0
    assert res["schema"] == 1 and res["command"].startswith("python apps/benchmark.py")
    assert res["settings"]["runs"] == 3 and res["settings"]["warmup"] == 1
    assert res["machine"]["cpus_usable"] >= 1 and "onnxruntime" in res["machine"]["runtimes"]
    by_path = {r["path"]: r for r in res["models"]}
    assert set(by_path) == {str(exported["onnx_fp32"]), str(exported["tflite_int8"])}
    onnx_r, tfl_r = by_path[str(exported["onnx_fp32"])], by_path[str(exported["tflite_int8"])]
    assert (onnx_r["backend"], onnx_r["precision"]) == ("onnxruntime", "fp32")
    assert (tfl_r["backend"], tfl_r["precision"]) == ("tflite", "int8")
    for r in res["models"]:
        assert r["kind"] == "face_encoder" and r["precision_source"] == "contract"
        assert r["role"] == "given" and r["threads"] == 1
        assert r["input_shapes"] == [[1, 16, 16, 3]]
        for k in ("file_mb", "load_ms", "first_ms", "throughput_per_s"):
            assert _positive(r[k]), (k, r[k])
        _check_stats(r["latency_ms"], 3)
        assert math.isclose(r["throughput_per_s"], 1000 / r["latency_ms"]["mean"])
        assert r["peak_rss_delta_mb"] is None or (math.isfinite(r["peak_rss_delta_mb"])
                                                  and r["peak_rss_delta_mb"] >= 0)


def test_benchmark_skips_what_it_cannot_run_with_the_reason(bench_run):
    _, _, res = bench_run
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: the engine is measured (or refused for its target)")
    except ImportError:
        pass
    (skip,) = [s for s in res["skipped"] if s["path"].endswith("foreign.engine")]
    assert "TensorRT is not installed" in skip["reason"]


def test_benchmark_face_pipeline_split(bench_run):
    _, _, res = bench_run
    if not (SHARED / "data" / "faces" / "deepface-pairs").is_dir():
        pytest.skip("../shared/data/faces/deepface-pairs is absent: no pipeline photos")
    assert len(res["pipeline"]) == 2  # one per face encoder measured
    for p in res["pipeline"]:
        assert p["photos"] == 2 and 1 <= p["faces"] <= 2 and p["aligned_size"] == 16
        for stage in ("detect_ms", "align_ms", "quality_ms", "embed_ms", "total_ms"):
            _check_stats(p[stage], p["faces"])
        assert p["total_ms"]["median"] >= p["detect_ms"]["min"]
        assert p["detector_threads"] == p["threads"]  # CPU rows: the encoder's budget


def test_benchmark_markdown_and_plot(bench_run):
    _, out, res = bench_run
    md = (out / "b.md").read_text()
    assert "| model | role | backend |" in md and res["command"] in md
    assert md.count("| m_fp32 | given |") == 1 and md.count("| m_int8 | given |") == 1
    # three timed runs: no p90 or p99 is printed as if it were a tail
    row = next(line for line in md.splitlines() if line.startswith("| m_fp32 | given |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[8] == "3" and cells[10] == "-" and cells[11] == "-"
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_frame_size_must_be_positive():
    import argparse

    size = _app()._size
    assert size("384x256") == (384, 256)
    for bad in ("0x0", "384x0", "-1x5", "abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            size(bad)


def test_percentiles_need_enough_samples():
    from bench.report import _pct

    few, some = {"p90": 9.0, "p99": 9.9, "n": 9}, {"p90": 9.0, "p99": 9.9, "n": 50}
    assert (_pct(few, "p90"), _pct(few, "p99")) == ("-", "-")
    assert (_pct(some, "p90"), _pct(some, "p99")) == ("9.00", "-")
    assert _pct({**some, "n": 100}, "p99") == "9.90"


def test_stats_and_memory_helpers():
    from bench.measure import PeakRss, summarize

    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["max"] == 5.0 and s["n"] == 5
    assert s["p90"] == pytest.approx(4.6)
    with pytest.raises(ValueError):
        summarize([])
    with PeakRss() as mem:
        # 64 MiB: above glibc's largest mmap threshold, so fresh pages, not recycled heap
        block = np.ones(64 << 20, dtype=np.uint8)
        del block
    if mem.delta_mb is None:
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    assert mem.delta_mb >= 60  # the peak is kept although the block was freed


def test_discover_lists_unrunnable_peers_with_reason(tmp_path):
    from bench.models import discover

    peers = tmp_path / "peers"
    (peers / "tfjs-net").mkdir(parents=True)
    (peers / "tfjs-net" / "manifest.json").write_text("{}")
    (peers / "tfl").mkdir()
    (peers / "tfl" / "a.tflite").write_bytes(b"x")
    found, skipped = discover(tmp_path / "no-models", [tmp_path / "missing.onnx"], peers)
    assert found == [(peers / "tfl" / "a.tflite", "peer")]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons == {"no-models": "models folder absent", "missing.onnx": "file not found",
                       "tfjs-net": "no model file"}
