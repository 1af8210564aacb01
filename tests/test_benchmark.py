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
        assert r["input_shapes"] == [[1, 16, 16, 3]] and r["image_size"] == [16, 16]
        assert r["vs_peers"] == []  # no peers in this run
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
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| model | role |"))
    row = next(line for line in lines if line.startswith("| m_fp32 | given |"))
    cells = dict(zip(_cells(head), _cells(row)))
    assert cells["n"] == "3" and cells["p90 ms"] == "-" and cells["p99 ms"] == "-"
    assert cells["input"] == "16x16" and cells["x peers"] == "-"  # no peers in this run
    png = (out / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


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


# --- report and runner logic on made-up rows (no model is run unless named) ------------


def _row(path, role="given", kind="face_encoder", threads=1, median=1.0, size=(112, 112),
         **extra) -> dict:
    """A result row as bench.measure.measure returns it, with the given median."""
    stats = {"median": median, "p90": median, "p99": median, "mean": median, "min": median,
             "max": median, "n": 5}
    return {"name": Path(path).stem, "path": str(path), "role": role, "kind": kind,
            "backend": "onnxruntime", "runtime": "onnxruntime 1", "precision": "fp32",
            "precision_source": "contract", "threads": threads, "file_mb": 1.0,
            "input_shapes": [[1, *size, 3]], "input_made_from": ["photo"],
            "image_size": list(size), "load_ms": 1.0, "first_ms": 1.0, "latency_ms": stats,
            "throughput_per_s": 1000 / median, "peak_rss_delta_mb": None, **extra}


def _results(models=(), pipeline=(), skipped=()) -> dict:
    return {"schema": 1, "command": "c",
            "machine": {"date": "d", "board": None, "cpu": "cpu", "cpus_usable": 1,
                        "loadavg_start": None, "python": "3", "runtimes": {}},
            "settings": {"runs": 5, "warmup": 1, "threads": [1, 2], "frame": [256, 256]},
            "models": list(models), "pipeline": list(pipeline), "skipped": list(skipped)}


def _options(tmp_path, **kw):
    from bench.run import BenchOptions

    return BenchOptions(**{"models_dir": None, "pipeline_photos": 0, "isolate": False,
                           "face_photos": tmp_path / "no-photos",
                           "content_photo": tmp_path / "no-photo.jpg", **kw})


def _files(folder: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
        out.append(folder / name)
    return out


def test_ours_against_peers_of_the_same_kind_and_thread_count(tmp_path, monkeypatch):
    import bench.run
    from bench.report import markdown, table

    enc, sty = _files(tmp_path, "enc.onnx", "sty.onnx")
    _files(tmp_path / "peers", "mobilefacenet/mobilefacenet.tflite",
           "magenta-style/style_predict_quantized_256.tflite",
           "magenta-style/style_transfer_f16_384.tflite")
    kinds = {"enc": "face_encoder", "sty": "stylizer", "mobilefacenet": "face_encoder",
             "style_predict_quantized_256": "style_predict",
             "style_transfer_f16_384": "stylizer"}
    # ours 2 ms at t1 / 1 ms at t2; peers 8 ms at t1 / 5 ms at t2; sizes as in a real run
    medians = {"given": {1: 2.0, 2: 1.0}, "peer": {1: 8.0, 2: 5.0}}

    def fake_measure(case, *, runs, warmup, frame, meta_of):
        name = case.path.stem
        size = (384, 384) if name.endswith("384") else (112, 112) if "enc" in name or \
            "face" in name else (256, 256)
        return _row(case.path, case.role, kinds[name], case.threads,
                    medians[case.role][case.threads], size)

    monkeypatch.setattr(bench.run, "measure", fake_measure)
    res = bench.run.run_benchmark(_options(tmp_path, models=(enc, sty), threads=(1, 2),
                                           peers_dir=tmp_path / "peers"), log=lambda _: None)
    rows = {(r["name"], r["threads"]): r for r in res["models"]}
    (v,) = rows["enc", 1]["vs_peers"]  # the face peer at t1 only
    assert (v["peer"], v["ratio"], v["peer_median_ms"]) == ("mobilefacenet", 2.0 / 8.0, 8.0)
    (v,) = rows["sty", 2]["vs_peers"]  # the transfer network, not the style predictor
    assert (v["peer"], v["ratio"], v["peer_image_size"]) == ("style_transfer_f16_384", 0.2,
                                                             [384, 384])
    assert all(r["vs_peers"] == [] for r in res["models"] if r["role"] == "peer")
    md = markdown(res)
    head = next(line for line in md.splitlines() if line.startswith("| model |"))
    cells = {(c[0], c[4]): dict(zip(_cells(head), c)) for c in
             (_cells(line) for line in md.splitlines() if line.startswith("| "))}
    assert cells["enc", "1"]["x peers"] == "0.25x mobilefacenet"
    assert cells["sty", "2"]["x peers"] == "0.20x style_transfer_f16_384 (384x384)"
    assert cells["mobilefacenet", "1"]["x peers"] == "-"
    assert "same model kind" in md and "same thread count" in md  # the rule is stated
    text = table(res)
    assert "0.25x mobilefacenet" in text and "0.20x mobilefacenet" in text


def test_labels_are_distinct_and_keep_the_thread_count(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from bench.report import plot, table

    name = "a_face_encoder_with_a_name_long_enough_to_be_cut"
    rows = [_row(f"/m/{name}.onnx", threads=t) for t in (1, 2)]
    pipes = [{"encoder": name, "path": f"/m/{name}.onnx", "backend": "onnxruntime",
              "runtime": "onnxruntime 1", "precision": "fp32", "threads": t, "photos": 1,
              "faces": 1, "aligned_size": 112,
              **{k: rows[0]["latency_ms"] for k in ("detect_ms", "align_ms", "quality_ms",
                                                     "embed_ms", "total_ms")}}
             for t in (1, 2)]
    res = _results(rows, pipes)
    text = table(res)
    for t in (1, 2):  # whole labels, thread count included, in both tables
        assert text.count(f"{name} [onnxruntime fp32 t{t}]") == 2
    drawn = []
    real_barh = Axes.barh

    def barh(self, y, *args, **kw):
        drawn.append(list(y))
        return real_barh(self, y, *args, **kw)

    monkeypatch.setattr(Axes, "barh", barh)
    plot(res, tmp_path / "p.png")
    assert drawn and all(len(set(labels)) == len(labels) for labels in drawn)
    assert all(any(f" t{t}]" in lab for lab in labels) for labels in drawn for t in (1, 2))


def test_quantised_inputs_are_made_in_the_tensor_dtype():
    from bench.measure import ModelMeta, make_inputs
    from sdk.contract import Preprocessing

    meta = ModelMeta("face_encoder", "int8", Preprocessing(pixel_range=(0, 255)), "test")
    photo = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    (ref,), _ = make_inputs([TensorSpec("x", (1, 4, 4, 3), "float32")], meta, photo, (4, 4))
    for dtype, q in (("uint8", (0.5, 10)), ("int8", (2.0, -3))):
        (x,), _ = make_inputs([TensorSpec("x", (1, 4, 4, 3), dtype, q)], meta, photo, (4, 4))
        info = np.iinfo(dtype)
        # Model.run passes an array of the tensor's dtype through untouched
        assert x.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(
            x, np.clip(np.round(ref / q[0]) + q[1], info.min, info.max).astype(dtype))


def test_image_size_follows_the_frame_and_is_in_the_tables():
    from bench.measure import ModelMeta, image_size
    from bench.report import markdown, table
    from sdk.contract import Preprocessing

    meta = ModelMeta("stylizer", "fp32", Preprocessing(pixel_range=(0, 1)), "test")
    specs = [TensorSpec("style", (1, 1, 1, 100), "float32"),
             TensorSpec("content", (None, None, None, 3), "float32")]
    assert image_size(specs, meta, (256, 320)) == [256, 320]
    assert image_size(specs[:1], meta, (256, 320)) is None
    res = _results([_row("/m/ours.onnx", kind="stylizer", size=(256, 320)),
                    _row("/p/peer_384.tflite", "peer", "stylizer", size=(384, 384))])
    md = markdown(res)
    head = next(line for line in md.splitlines() if line.startswith("| model |"))
    row = next(line for line in md.splitlines() if line.startswith("| ours |"))
    assert dict(zip(_cells(head), _cells(row)))["input"] == "256x320"
    assert "384x384" in table(res) and "256x320" in table(res)


def test_encoders_on_noise_say_so_in_the_tables(exported, tmp_path):
    import cv2

    from bench.report import markdown, table
    from bench.worker import run_case

    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    r = run_case({"path": str(exported["onnx_fp32"]), "role": "given", "threads": 1,
                  "runs": 1, "warmup": 0, "frame": [16, 16], "face_photo": [str(photo)],
                  "content_photo": None, "yunet": str(tmp_path / "missing-yunet.onnx")})
    assert r["input_made_from"] == ["noise 0..255"]
    assert r["input_note"].startswith("face detection failed (ModelNotFoundError")
    res = _results([r])
    for out in (markdown(res), table(res)):
        assert "m_fp32 [onnxruntime fp32 t1]" in out and "face detection failed" in out


def test_a_failing_thread_count_is_named_and_the_others_measured(tmp_path, monkeypatch):
    import bench.run
    from bench.report import markdown, table
    from sdk.errors import SdkError

    (enc,) = _files(tmp_path, "enc.onnx")

    def fake_measure(case, *, runs, warmup, frame, meta_of):
        if case.threads == 2:
            raise SdkError("boom")
        return _row(case.path, case.role, threads=case.threads)

    monkeypatch.setattr(bench.run, "measure", fake_measure)
    res = bench.run.run_benchmark(_options(tmp_path, models=(enc,), threads=(1, 2, 3)),
                                  log=lambda _: None)
    assert [r["threads"] for r in res["models"]] == [1, 3]
    assert res["skipped"] == [{"path": str(enc), "threads": 2, "reason": "SdkError: boom"}]
    assert f"{enc} (t2): SdkError: boom" in table(res) and f"`{enc}` (t2)" in markdown(res)


def test_worker_errors_name_their_class_once(tmp_path, monkeypatch):
    import json
    import subprocess

    import bench.run
    from bench.worker import MARK

    (enc,) = _files(tmp_path, "enc.onnx")
    errors = iter([("SdkError", "enc.onnx: non-finite outputs"),
                   ("InputShapeError", "bad shape"), ("RuntimeError", "xnnpack failed")])

    real_run = subprocess.run

    def fake_worker(cmd, *args, **kwargs):
        if "bench.worker" not in cmd:  # e.g. platform's uname for the machine info
            return real_run(cmd, *args, **kwargs)
        error, message = next(errors)
        out = {"error": error, "message": message, "backend_unavailable": False}
        return subprocess.CompletedProcess(cmd, 0, MARK + json.dumps(out) + "\n", "")

    monkeypatch.setattr(subprocess, "run", fake_worker)
    res = bench.run.run_benchmark(_options(tmp_path, models=(enc,), threads=(1, 2, 3),
                                           isolate=True), log=lambda _: None)
    assert [s["reason"] for s in res["skipped"]] == [
        "SdkError: enc.onnx: non-finite outputs", "InputShapeError: bad shape",
        "SdkError: RuntimeError: xnnpack failed"]


def test_pipeline_warms_up_as_often_as_asked(exported, tmp_path, monkeypatch):
    import cv2

    import bench.run

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    asked = {}

    def fake_pipeline(path, meta, photos, **kw):
        asked.update(kw)
        stats = {"median": 1.0}
        return {"encoder": path.stem, **{k: stats for k in ("detect_ms", "align_ms",
                                                            "quality_ms", "embed_ms")}}

    monkeypatch.setattr(bench.run, "_first_face", lambda photos, yunet: None)
    monkeypatch.setattr(bench.run, "measure", lambda case, **kw: _row(
        case.path, case.role, threads=case.threads))
    monkeypatch.setattr(bench.run, "face_pipeline", fake_pipeline)
    res = bench.run.run_benchmark(_options(tmp_path, models=(exported["onnx_fp32"],),
                                           warmup=7, pipeline_photos=1, face_photos=photos),
                                  log=lambda _: None)
    assert len(res["pipeline"]) == 1 and asked["warmup"] == 7
