"""Jetson tooling: the TensorRT pre-build check, the device bundle, engine naming and
caching rules, the engine header and target checks; TensorRT builds where TensorRT exists.

Graphs are built with ``onnx.helper`` (no TensorFlow).  The tests that need real TensorRT
skip with the reason on hosts without it.  The TensorRT backend and the device build also
run here against fakes of ``pycuda.driver`` and the TensorRT 10 Python API (``_FakeCuda``,
``_FakeTrt``) that model the documented behaviour the code relies on: they test the SDK's
logic around TensorRT (profile shapes, batch splitting, locking, error paths, the CUDA
context, the logger), not TensorRT.  The one real-GPU test runs the backend's own buffer
and stream code on device memory with a CUDA kernel in place of TensorRT's execution
context (the lent GPU has CUDA but no TensorRT); it says so, and it tests the buffers,
not TensorRT.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import types

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package is needed to build test graphs")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import sdk  # noqa: E402
from sdk import errors  # noqa: E402
from sdk.contract import (ENGINE_MAGIC, METADATA_KEY, ModelInfo, Preprocessing,  # noqa: E402
                          TensorSpec, pack_engine, unpack_engine)

from conftest import shared_path  # noqa: E402


def _tensorrt_present() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except ImportError:
        return False


NEEDS_TRT = pytest.mark.skipif(not _tensorrt_present(),
                               reason="TensorRT is not installed (it cannot be on any machine "
                                      "here; run on a Jetson with JetPack)")
NO_TRT = pytest.mark.skipif(_tensorrt_present(),
                            reason="TensorRT is installed: this covers hosts without it")


def _info(kind="face_encoder", **extra) -> ModelInfo:
    return ModelInfo(kind=kind, name="tiny", inputs=(TensorSpec("input", (None, 16, 16, 3),
                                                                "float32"),),
                     outputs=(TensorSpec("out", (None, 4), "float32"),),
                     preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
                     output={"metric": "squared_l2"}, extra=extra)


def _graph(nodes, inputs, outputs, inits=(), opset=15, info: ModelInfo | None = None):
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if info is not None:
        m.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    return m


def _conv_net(batch="N", opset=15, info=True):
    """NHWC 16x16x3 -> Conv -> Relu -> GAP -> 4-d: what tf2onnx makes of a tiny encoder."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3))
                                .astype(np.float32), "W")
    nodes = [helper.make_node("Transpose", ["input"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["out"])]
    return _graph(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        [batch, 16, 16, 3])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 4])], [w],
                  opset=opset, info=_info() if info else None)


@pytest.fixture
def good_onnx(tmp_path):
    p = tmp_path / "good.onnx"
    onnx.save(_conv_net(), str(p))
    return p


def _codes(report, severity=None):
    return {i.code for i in report.issues if severity is None or i.severity == severity}


# --- the check -------------------------------------------------------------------------


def test_check_accepts_a_supported_graph(good_onnx, capsys):
    from export.jetson.check import check_onnx
    from export.jetson.cli import main

    report = check_onnx(good_onnx)
    assert report.ok and report.opset == 15
    assert report.op_counts == {"Conv": 1, "Flatten": 1, "GlobalAveragePool": 1, "Relu": 1,
                                "Transpose": 1}
    assert main(["--check", str(good_onnx)]) == 0
    assert "all importable" in capsys.readouterr().out


def test_check_reports_dynamic_dims(tmp_path):
    from export.jetson.check import check_onnx

    x = helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    report = check_onnx(_graph([helper.make_node("Relu", ["frame"], ["y"])], [x], [y]))
    assert report.ok  # dynamic dims are fine, they need a profile
    (inp,) = report.dynamic_inputs
    assert inp.dynamic_axes == (0, 2, 3) and inp.shape == ("batch", 3, "height", "width")
    assert "dynamic" in _codes(report, "info")
    assert "optimisation profile" in report.format()


def test_check_fails_on_unsupported_op_with_nonzero_status(tmp_path, capsys):
    from export.jetson.check import check_onnx
    from export.jetson.cli import main

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    m = _graph([helper.make_node("Unique", ["x"], ["y"])], [x], [y], opset=15)
    p = tmp_path / "unique.onnx"
    onnx.save(m, str(p))
    report = check_onnx(p)
    assert not report.ok and "unsupported-op" in _codes(report, "error")
    assert main(["--check", str(p)]) == 1
    out = capsys.readouterr().out
    assert "Unique is not supported" in out and "would fail" in out


def test_check_opset_range():
    from export.jetson.check import CheckOptions, check_onnx

    assert "opset" in _codes(check_onnx(_conv_net(opset=7)), "error")
    assert "opset" in _codes(check_onnx(_conv_net(opset=21)), "error")
    assert check_onnx(_conv_net(opset=21), CheckOptions(max_opset=24)).ok


def _resize(mode="linear", coord="half_pixel", **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                            coordinate_transformation_mode=coord, **attrs)
    return _graph([node], [x], [y], [scales], opset=13)


def test_check_resize_modes():
    from export.jetson.check import check_onnx

    assert check_onnx(_resize("linear")).ok
    assert check_onnx(_resize("nearest", "asymmetric", nearest_mode="floor")).ok
    assert "resize-mode" in _codes(check_onnx(_resize("cubic")), "error")
    assert "resize-coord" in _codes(check_onnx(_resize("linear", "tf_crop_and_resize")), "error")


def test_check_pad_reflect_and_instance_norm_caveats():
    from export.jetson.check import check_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 10])
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    scale = numpy_helper.from_array(np.ones(3, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "bias")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("InstanceNormalization", ["p", "scale", "bias"], ["y"])]
    report = check_onnx(_graph(nodes, [x], [y], [pads, scale, bias], opset=13))
    assert report.ok
    assert "pad-mode" in _codes(report, "warning")
    assert "instancenorm-fp16" in _codes(report, "info")
    # scale fed by a graph input instead of a weight: the parser needs initializers
    s_in = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [3])
    report = check_onnx(_graph(nodes, [x, s_in], [y], [pads, bias], opset=13))
    assert "instancenorm-weights" in _codes(report, "error")


def test_check_pooling_ranks():
    """1D pooling over a rank-3 tensor is imported (onnx-tensorrt unsqueezes it to 2D);
    pooling over four spatial dims is not."""
    from export.jetson.check import check_onnx

    for kernel, shape, ok in (([2], [1, 4, 8], True), ([2, 2], [1, 4, 8, 8], True),
                              ([2, 2, 2, 2], [1, 4, 8, 8, 8, 8], False)):
        out = [1, 4] + [d // 2 for d in shape[2:]]
        nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel,
                                  strides=[2] * len(kernel))]
        report = check_onnx(_graph(nodes, [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, out)], opset=13))
        assert ("pool-rank" not in _codes(report, "error")) is ok, (kernel, report.issues)


def test_check_qdq_rules():
    """TensorRT takes symmetric int8 Q/DQ only: uint8 / non-zero zero points are errors."""
    from export.jetson.check import check_onnx

    def qdq(zp_dtype, zp_value):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
        inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                 numpy_helper.from_array(np.array(zp_value, zp_dtype), "zp"),
                 numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "Wq"),
                 numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(4, np.int8), "wzp")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["Wq", "ws", "wzp"], ["W"], axis=0),
                 helper.make_node("Conv", ["xd", "W"], ["y"])]
        return _graph(nodes, [x], [y], inits, opset=13)

    good = check_onnx(qdq(np.int8, 0))
    assert good.ok and good.quantized and "qdq-placement" not in _codes(good)
    bad = check_onnx(qdq(np.uint8, 128))
    assert {"qdq-uint8", "qdq-zero-point"} <= _codes(bad, "error")


def test_check_onnxruntime_int8_export_is_rejected(exported):
    """The project's ONNX Runtime int8 export (uint8 activations) is not for TensorRT;
    the fp32 export is what the Jetson builds from."""
    from export.jetson.check import check_onnx

    assert check_onnx(exported["onnx_fp32"]).ok
    assert "qdq-uint8" in _codes(check_onnx(exported["onnx_int8"]), "error")


def test_check_unreadable_file(tmp_path):
    from export.jetson.check import check_onnx

    p = tmp_path / "junk.onnx"
    p.write_bytes(b"not a protobuf at all \xff\xfe")
    assert "file" in _codes(check_onnx(p), "error")


# --- the bundle (what a host without TensorRT prepares) --------------------------------


@NO_TRT
def test_prepare_bundle_without_tensorrt(good_onnx, tmp_path, capsys):
    from export.jetson.cli import main

    photos = shared_path("data", "faces", "deepface-pairs")
    shared_path("models", "yunet", "yunet_s_640_640.onnx")
    out = tmp_path / "bundle"
    rc = main([str(good_onnx), "--precision", "fp16", "int8", "--calib-images", str(photos),
               "--calib-count", "24", "--workspace", "256", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "TensorRT is not installed" in text and "--manifest" in text
    doc = json.loads((out / "manifest.json").read_text())
    (m,) = doc["models"]
    assert m["precisions"] == ["fp16", "int8"] and doc["workspace_mb"] == 256
    assert m["profiles"] == [{"input": "input", "min": [1, 16, 16, 3], "opt": [1, 16, 16, 3],
                              "max": [1, 16, 16, 3]}]
    assert (out / m["onnx"]).read_bytes() == good_onnx.read_bytes()
    calib = np.load(out / m["calibration"]["npy"], allow_pickle=False)  # aligned faces
    assert calib.shape == (m["calibration"]["count"], 16, 16, 3) and calib.dtype == np.uint8
    assert 16 <= len(calib) <= 24 and calib.std() > 10  # real pixels, not a constant
    assert doc["command"] == f"python -m export jetson --manifest {out / 'manifest.json'}"
    # the device side of the data path (no TensorRT involved): verify, pre-process per batch
    from export.jetson.build import PreparedModel, _calibration_samples
    from export.jetson.calibrator import CalibrationData

    images, to_input = _calibration_samples(out, PreparedModel.from_dict(m), out / m["onnx"])
    data = CalibrationData(images, tmp_path / "c.cache", transform=to_input)
    batches = list(data.batches())
    assert len(batches) == len(calib) and data.sample_shape == (1, 16, 16, 3)
    np.testing.assert_allclose(batches[0][0], calib[0][..., ::-1])  # RGB 0..255 per contract


@NO_TRT
def test_device_build_without_tensorrt_says_why(good_onnx, tmp_path, capsys):
    from export.jetson.cli import main

    out = tmp_path / "bundle"
    assert main([str(good_onnx), "--out", str(out)]) == 0  # fp16 only: no calibration data
    capsys.readouterr()
    assert main(["--manifest", str(out / "manifest.json")]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().out
    assert not (out / "engines").exists()


def test_bundle_refuses_a_failing_graph(tmp_path, capsys):
    from export.jetson.cli import main

    p = tmp_path / "bad.onnx"
    onnx.save(_conv_net(opset=7), str(p))
    assert main([str(p), "--out", str(tmp_path / "b"), "--prepare-only"]) == 1
    assert "would reject" in capsys.readouterr().out
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_bundle_needs_a_range_for_dynamic_image_sizes(tmp_path, capsys):
    from export.jetson.cli import main

    x = helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, "h", "w", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "h", "w", 3])
    p = tmp_path / "stylizer.onnx"
    onnx.save(_graph([helper.make_node("Relu", ["frame"], ["y"])], [x], [y],
                     info=_info(kind="stylizer")), str(p))
    assert main([str(p), "--out", str(tmp_path / "a"), "--prepare-only"]) == 1
    assert "--frame-sizes" in capsys.readouterr().out
    rc = main([str(p), "--out", str(tmp_path / "b"), "--prepare-only",
               "--frame-sizes", "256x256", "480x640", "720x1280"])
    assert rc == 0
    (m,) = json.loads((tmp_path / "b" / "manifest.json").read_text())["models"]
    assert m["profiles"] == [{"input": "frame", "min": [1, 256, 256, 3],
                              "opt": [1, 480, 640, 3], "max": [1, 720, 1280, 3]}]


def _models_folder(tmp_path):
    """models/-like folder: sty fp32 + int8, enc int8 only, a YuNet detector."""
    faces, style = tmp_path / "faces", tmp_path / "style"
    for d in (faces, style, tmp_path / "yunet"):
        d.mkdir()
    int8 = _conv_net()
    int8.metadata_props[0].value = _info().replace(precision="int8").to_json()
    onnx.save(int8, str(style / "sty_int8.onnx"))  # same model as sty_fp32.onnx
    int8.metadata_props[0].value = _info().replace(name="enc", precision="int8").to_json()
    onnx.save(int8, str(faces / "enc_int8.onnx"))  # no fp32 graph of this one
    onnx.save(_conv_net(), str(style / "sty_fp32.onnx"))
    onnx.save(_conv_net(info=False), str(tmp_path / "yunet" / "det.onnx"))
    return tmp_path


def test_models_folder_builds_from_fp32_graphs(tmp_path):
    """ONNX Runtime int8 exports are skipped (TensorRT calibrates from fp32), and the
    message says when the fp32 graph is missing from the folder; YuNet is skipped too."""
    from export.jetson.build import find_onnx_models

    chosen, skipped = find_onnx_models(_models_folder(tmp_path))
    assert chosen == [tmp_path / "style" / "sty_fp32.onnx"]
    text = "\n".join(skipped)
    assert "enc_int8.onnx: int8 export" in text and "no fp32 ONNX of this model" in text
    assert "sty_int8.onnx: int8 export" in text and "built instead" in text
    assert "YuNet" in text


def test_check_models_folder_says_what_it_skipped_and_why(tmp_path, capsys):
    from export.jetson.cli import main

    assert main(["--check", "--models", str(_models_folder(tmp_path))]) == 0
    out = capsys.readouterr().out
    skips = [line for line in out.splitlines() if line.startswith("skip ")]
    assert len(skips) == 3, out
    assert any("enc_int8.onnx: int8 export" in s and "no fp32 ONNX" in s for s in skips)
    assert any("sty_int8.onnx: int8 export" in s and "built instead" in s for s in skips)
    assert any("det.onnx" in s and "YuNet" in s for s in skips)
    assert "1 graph(s) checked" in out


def test_profiles_and_shape_flags():
    from export.jetson.build import ShapeRange, parse_shape, resolve_profiles
    from export.jetson.check import InputInfo

    r = parse_shape("x:1x3x64x64:1x3x128x128:1x3x256x256")
    assert (r.min, r.opt, r.max) == ((1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256))
    assert parse_shape("x:1x3x8x8").static
    with pytest.raises(errors.EngineBuildError, match="min <= opt <= max"):
        ShapeRange("x", (1, 3, 9, 9), (1, 3, 8, 8), (1, 3, 10, 10))
    inp = InputInfo("x", "float32", ("N", 3, "H", "W"))
    (p,) = resolve_profiles([inp], layout="NCHW", frame_sizes=((64, 64), (96, 128), (128, 256)),
                            batch=(1, 2, 4))
    assert (p.min, p.opt, p.max) == ((1, 3, 64, 64), (2, 3, 96, 128), (4, 3, 128, 256))
    with pytest.raises(errors.EngineBuildError, match="unknown input"):
        resolve_profiles([inp], shapes={"y": r})
    with pytest.raises(errors.EngineBuildError, match="static"):
        resolve_profiles([InputInfo("x", "float32", (1, 3, 32, 32))], shapes={"x": r})


def test_engine_names_key_on_source_precision_settings_version_and_gpu():
    from export.jetson.build import engine_filename, settings_hash

    orin = {"gpu": "Orin", "compute_capability": "8.7"}
    s = settings_hash([], 1024, None)
    name = engine_filename("face", "fp16", "ab" * 32, s, "10.3.0", orin)
    assert name.startswith("face.fp16.abababababab.")
    assert name.endswith(".trt10.3.0.orin-sm87.engine")
    others = {engine_filename("face", "int8", "ab" * 32, s, "10.3.0", orin),
              engine_filename("face", "fp16", "cd" * 32, s, "10.3.0", orin),
              engine_filename("face", "fp16", "ab" * 32, settings_hash([], 2048, None), "10.3.0",
                              orin),
              engine_filename("face", "fp16", "ab" * 32, s, "10.7.0", orin),
              engine_filename("face", "fp16", "ab" * 32, s, "10.3.0",
                              {"gpu": "Xavier", "compute_capability": "7.2"})}
    assert name not in others and len(others) == 5
    agx = {**orin, "sm_count": 16, "board": "NVIDIA Jetson AGX Orin Developer Kit"}
    nano = {**orin, "sm_count": 8, "board": "NVIDIA Jetson Orin Nano Developer Kit"}
    names = {engine_filename("face", "fp16", "ab" * 32, s, "10.3.0", g) for g in (agx, nano)}
    assert len(names) == 2 and all("-sm87-" in n for n in names)


def test_engine_check_sees_damaged_images():
    """The post-build check compares mean-centred outputs: a plain cosine of 0..255 images
    stays near 1 for a blurred or noisy picture; the centred one falls below every floor,
    while an embedding (or an image) that only moved by rounding stays above them."""
    import cv2

    from export.jetson.build import ENGINE_MIN_COSINE, centred_cosine

    rng = np.random.default_rng(0)
    image = cv2.resize(rng.uniform(0, 255, (12, 12, 3)).astype(np.float32), (96, 96))
    image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255)
    blurred = cv2.blur(image, (9, 9))
    noisy = np.clip(image + rng.normal(0, 40, image.shape), 0, 255)
    rounded = np.round(image)
    ref = image.reshape(1, -1)
    plain = float((ref * blurred.reshape(1, -1)).sum()
                  / (np.linalg.norm(ref) * np.linalg.norm(blurred)))
    assert plain > ENGINE_MIN_COSINE["int8"]           # what the plain cosine let through
    for damaged in (blurred, noisy):
        assert centred_cosine(ref, damaged.reshape(1, -1))[0] < ENGINE_MIN_COSINE["int8"]
    assert centred_cosine(ref, rounded.reshape(1, -1))[0] > ENGINE_MIN_COSINE["fp16"]
    e = rng.normal(size=(2, 128))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert centred_cosine(e, e + rng.normal(0, 1e-3, e.shape)).min() > ENGINE_MIN_COSINE["fp16"]
    flat = np.full((1, 8), 3.0)
    assert centred_cosine(flat, flat)[0] == 1.0 and centred_cosine(flat, flat + 1)[0] == 0.0


def test_unavailable_precision_is_an_error_not_a_fallback():
    from export.jetson.build import precision_supported, require_precision

    nano = {"gpu": "NVIDIA Tegra X1", "compute_capability": "5.3"}
    orin = {"gpu": "Orin", "compute_capability": "8.7"}
    assert precision_supported("fp16", "5.3") and not precision_supported("int8", "5.3")
    assert precision_supported("int8", "8.7") and not precision_supported("fp16", "5.2")
    require_precision("int8", orin)
    with pytest.raises(errors.PrecisionUnavailableError, match="INT8 is not available"):
        require_precision("int8", nano)


def test_calibration_cache_is_written_and_reused(tmp_path):
    from export.jetson.calibrator import CalibrationData

    samples = np.arange(3 * 4 * 4 * 3, dtype=np.float32).reshape(3, 4, 4, 3)
    cache = tmp_path / "calib" / "m.cache"
    data = CalibrationData(samples, cache)
    assert data.sample_shape == (1, 4, 4, 3) and data.read_cache() is None
    batches = list(data.batches())
    assert len(batches) == 3 and all(b.shape == (1, 4, 4, 3) for b in batches)
    np.testing.assert_array_equal(batches[2][0], samples[2])
    assert data.next_batch() is None  # exhausted: the calibrator tells TensorRT to stop
    data.write_cache(b"TRT-10.3.0-EntropyCalibration2\ninput: 3c010a14\n")
    again = CalibrationData(samples, cache, transform=lambda x: x.transpose(2, 0, 1) / 2)
    assert again.read_cache() == b"TRT-10.3.0-EntropyCalibration2\ninput: 3c010a14\n"
    assert again.sample_shape == (1, 3, 4, 4)
    b = again.next_batch()
    assert b.dtype == np.float32 and b.shape == (1, 3, 4, 4)
    np.testing.assert_allclose(b[0], samples[0].transpose(2, 0, 1) / 2)


def test_calibration_images_and_contract_preprocessing(tmp_path):
    import cv2

    from export.jetson.calibrator import calibration_images, calibration_inputs, preprocess

    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 2] = 255  # pure red in BGR
    x = preprocess(img, Preprocessing(channel_order="RGB", pixel_range=(-1, 1), layout="NCHW"))
    assert x.shape == (1, 3, 40, 60) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1, -1, -1])
    grey = preprocess(img, Preprocessing(channel_order="GRAY", mean=(0,), std=(1,)))
    np.testing.assert_allclose(grey[0, 0, 0], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[0, 0],
                               atol=0.5)
    for i in range(16):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), img)
    images = calibration_images(sorted(tmp_path.glob("*.png")), (8, 8), kind="stylizer")
    assert images.shape == (16, 8, 8, 3) and images.dtype == np.uint8
    out = calibration_inputs(images, (1, 8, 8, 3),
                             Preprocessing(channel_order="BGR", pixel_range=(0, 1)))
    np.testing.assert_allclose(out[0, 0, 0], [0, 0, 1], atol=1e-6)
    with pytest.raises(errors.EngineBuildError, match="shape"):
        calibration_inputs(images, (1, 3, 8, 8), Preprocessing(layout="NHWC"))
    with pytest.raises(errors.EngineBuildError, match="only 2 of 2"):
        calibration_images(sorted(tmp_path.glob("*.png"))[:2], (8, 8), kind="stylizer")


# --- engine files: header, target, and loading without TensorRT ----------------------


def test_check_engine_target():
    from sdk.backends.tensorrt import check_engine_target

    built = {"version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
    info = _info(tensorrt=built)
    check_engine_target(info, "10.3.0", {"gpu": "Orin", "compute_capability": "8.7"}, "f.engine")
    with pytest.raises(errors.EngineMismatchError, match=r"TensorRT 10\.3\.0 .*10\.7\.0.*rebuild"):
        check_engine_target(info, "10.7.0", {"gpu": "Orin", "compute_capability": "8.7"},
                            "f.engine")
    with pytest.raises(errors.EngineMismatchError, match=r"sm_8\.7.*Xavier sm_7\.2"):
        check_engine_target(info, "10.3.0", {"gpu": "Xavier", "compute_capability": "7.2"},
                            "f.engine")
    with pytest.raises(errors.EngineMismatchError, match="export jetson"):
        check_engine_target(info, "8.6.2", {"gpu": "Xavier", "compute_capability": "7.2"},
                            "f.engine")


def test_check_engine_target_platform():
    """Engines are not portable across platforms (TensorRT support matrix): same TensorRT
    and sm_9.0 on x86 and on aarch64 is still a mismatch; old headers without a platform
    are not refused for it."""
    from sdk.backends.tensorrt import check_engine_target, host_platform

    assert "-" in host_platform()
    x86 = {"gpu": "H100", "compute_capability": "9.0", "platform": "Linux-x86_64"}
    arm = {"gpu": "GH200", "compute_capability": "9.0", "platform": "Linux-aarch64"}
    info = _info(tensorrt={"version": "10.3.0", **x86})
    check_engine_target(info, "10.3.0", x86, "f.engine")
    with pytest.raises(errors.EngineMismatchError,
                       match=r"platform Linux-x86_64.*aarch64.*rebuild"):
        check_engine_target(info, "10.3.0", arm, "f.engine")
    old = _info(tensorrt={"version": "10.3.0", "gpu": "GH200", "compute_capability": "9.0"})
    check_engine_target(old, "10.3.0", arm, "f.engine")


def test_check_engine_target_device_model():
    """Devices that share a name and compute capability are still different models:
    every Orin module reports "Orin" sm_8.7; the SM count and the board tell them apart.
    A different name with the same compute capability is refused too."""
    from sdk.backends.tensorrt import check_engine_target

    agx = {"gpu": "Orin", "compute_capability": "8.7", "sm_count": 16,
           "board": "NVIDIA Jetson AGX Orin Developer Kit", "platform": "Linux-aarch64"}
    nano = {**agx, "sm_count": 8, "board": "NVIDIA Jetson Orin Nano Developer Kit"}
    info = _info(tensorrt={"version": "10.3.0", **agx})
    check_engine_target(info, "10.3.0", agx, "f.engine")
    with pytest.raises(errors.EngineMismatchError,
                       match=r"16 streaming multiprocessors \(this device has 8\).*Nano"):
        check_engine_target(info, "10.3.0", nano, "f.engine")
    with pytest.raises(errors.EngineMismatchError, match=r"GPU A10 \(this device has RTX 3090"):
        check_engine_target(_info(tensorrt={"version": "10.3.0", "gpu": "A10",
                                            "compute_capability": "8.6"}),
                            "10.3.0", {"gpu": "RTX 3090", "compute_capability": "8.6"}, "f")


def test_failed_deserialisation_is_not_blamed_on_the_target():
    """deserialize_cuda_engine returning None: a header naming this TensorRT and GPU means a
    damaged plan (ModelFormatError), no target info means a likely mismatch; both say how
    to rebuild."""
    from pathlib import Path

    from sdk.backends.tensorrt import _deserialise_error

    here = {"gpu": "Orin", "compute_capability": "8.7", "platform": "Linux-aarch64"}
    matched = _info(tensorrt={"version": "10.3.0", **here})
    err = _deserialise_error(matched, "10.3.0", here, Path("f.engine"))
    assert isinstance(err, errors.ModelFormatError)
    assert not isinstance(err, errors.EngineMismatchError) and "export jetson" in str(err)
    err = _deserialise_error(_info(), "10.3.0", here, Path("f.engine"))
    assert isinstance(err, errors.EngineMismatchError) and "export jetson" in str(err)


def test_unpack_engine_rejects_foreign_and_truncated_files():
    blob = pack_engine(_info(), b"\x00plan-bytes")
    info, body = unpack_engine(blob)
    assert info.kind == "face_encoder" and bytes(body) == b"\x00plan-bytes"
    with pytest.raises(errors.MetadataError, match="no SDK header"):
        unpack_engine(b"ftrt" + bytes(60))               # a bare TensorRT plan
    with pytest.raises(errors.MetadataError):
        unpack_engine(b"\x89PNG\r\n\x1a\n" + bytes(40))   # some other file
    with pytest.raises(errors.ModelFormatError, match="truncated"):
        unpack_engine(blob[:20])                          # cut inside the JSON header
    with pytest.raises(errors.ModelFormatError, match="empty"):
        unpack_engine(pack_engine(_info(), b""))          # header without an engine
    bad_json = ENGINE_MAGIC + struct.pack("<I", 5) + b"{nope" + b"plan"
    with pytest.raises(errors.MetadataError, match="not valid JSON"):
        unpack_engine(bad_json)


@NO_TRT
def test_loading_an_engine_here_says_why(tmp_path):
    p = tmp_path / "face.fp16.engine"
    p.write_bytes(pack_engine(_info(tensorrt={"version": "10.3.0", "gpu": "Orin",
                                              "compute_capability": "8.7"}), b"plan"))
    with pytest.raises(errors.BackendUnavailableError, match="TensorRT is not installed"):
        sdk.load_model(p)
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"ftrt" + bytes(100))
    with pytest.raises(errors.MetadataError, match="no SDK header"):
        sdk.load_model(bare)


# --- fakes of pycuda.driver and the TensorRT 10 Python API ----------------------------
#
# No machine here has TensorRT, and pycuda needs a GPU.  These fakes model only the
# documented behaviour the SDK relies on (cited where it matters) and record what the
# SDK did with it, so the backend's and the builder's own logic around TensorRT (profile
# shapes, batch splitting, locking, error paths, CUDA context handling, the logger) runs
# here.  They test that logic, not TensorRT.


class _FakeCudaError(Exception):
    """``pycuda.driver.Error``, the base of pycuda's exceptions."""


class _FakeStream:
    def __init__(self, cuda: "_FakeCuda") -> None:
        self._cuda = cuda
        self.handle = id(self)
        self.pending = 0  # async operations queued since the last synchronize
        cuda.streams[self.handle] = self

    def synchronize(self) -> None:
        if self._cuda.fail_sync:
            raise _FakeCudaError("cuStreamSynchronize failed: an illegal memory access "
                                 "was encountered")
        self.pending = 0


class _FakeAllocation:
    def __init__(self, cuda: "_FakeCuda", nbytes: int) -> None:
        self._cuda = cuda
        cuda.next_address += 1 << 20
        self.address = cuda.next_address
        cuda.memory[self.address] = np.zeros(nbytes, np.uint8)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        del self._cuda.memory[self.address]


class _FakePrimaryContext:
    """A retained primary context as pycuda handles it (src/cpp/cuda.hpp): push and pop
    move it on and off the driver's stack of current contexts; ``detach`` of one that is
    not current pushes it and calls cuDevicePrimaryCtxRelease, which does not pop it."""

    def __init__(self, cuda: "_FakeCuda") -> None:
        self._cuda = cuda

    def push(self) -> None:
        self._cuda.current.append(self)

    def pop(self) -> None:
        assert self._cuda.current, "pop with no current context"
        self._cuda.current.pop()

    def detach(self) -> None:
        if not self._cuda.current or self._cuda.current[-1] is not self:
            self._cuda.current.append(self)
        self._cuda.released += 1


class _FakeCuda:
    """Stands in for ``pycuda.driver`` with one GPU.  Device memory is a dict of byte
    arrays; async copies happen at once and count as pending on their stream until it
    synchronises; every call but pagelocked_empty needs a current context."""

    Error = _FakeCudaError

    class device_attribute:  # noqa: N801 - pycuda's name
        MULTIPROCESSOR_COUNT = "multiprocessor_count"

    def __init__(self) -> None:
        self.current: list = []       # the driver's stack of current contexts
        self.retained = self.released = 0
        self.memory: dict[int, np.ndarray] = {}
        self.streams: dict[int, _FakeStream] = {}
        self.next_address = 0
        self.fail_sync = False
        cuda = self

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            @staticmethod
            def count() -> int:
                return 1

            def name(self) -> str:
                return "FakeGPU"

            def compute_capability(self) -> tuple[int, int]:
                return 8, 7

            def get_attribute(self, attribute) -> int:
                return 16

            def retain_primary_context(self) -> _FakePrimaryContext:
                cuda.retained += 1
                return _FakePrimaryContext(cuda)

        self.Device = Device

    def init(self) -> None:
        pass

    def require_context(self) -> None:
        assert self.current, "a CUDA call with no current context"

    def Stream(self) -> _FakeStream:  # noqa: N802 - pycuda's name
        self.require_context()
        return _FakeStream(self)

    def mem_alloc(self, nbytes: int) -> _FakeAllocation:
        self.require_context()
        return _FakeAllocation(self, nbytes)

    @staticmethod
    def pagelocked_empty(shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def memcpy_htod(self, dest, src: np.ndarray) -> None:
        self.require_context()
        self.memory[int(dest)][:src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def memcpy_htod_async(self, dest, src: np.ndarray, stream: _FakeStream) -> None:
        self.memcpy_htod(dest, src)
        stream.pending += 1

    def memcpy_dtoh_async(self, dest: np.ndarray, src, stream: _FakeStream) -> None:
        self.require_context()
        dest.reshape(-1).view(np.uint8)[:] = self.memory[int(src)][:dest.nbytes]
        stream.pending += 1


def _engine_function(spec: str):
    """What a fake engine computes: ``affine`` (y = 2x + 1) or ``onnx:PATH`` (the ONNX
    graph, through ONNX Runtime, so a fake engine agrees with its source graph)."""
    if spec == "affine":
        return lambda feeds: [2 * next(iter(feeds.values())) + 1]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(spec.split(":", 1)[1], options,
                                   providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


class _FakeExecutionContext:
    def __init__(self, engine: "_FakeEngine") -> None:
        self.engine, self.trt = engine, engine.trt
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.active = 0

    def set_input_shape(self, name: str, shape) -> bool:
        # IExecutionContext.set_input_shape: False for a shape outside the profile
        t = self.engine.tensor(name)
        lo, _, hi = t["profile"] or (t["shape"],) * 3
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or not all(a <= d <= b for d, a, b in zip(shape, lo, hi)):
            return False
        self.shapes[name] = shape
        return True

    def _compute(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.engine.fn(feeds)

    def get_tensor_shape(self, name: str) -> list[int]:
        feeds = {t["name"]: np.zeros(self.shapes[t["name"]], self.trt.nptype_name(t["dtype"]))
                 for t in self.engine.inputs}
        outs = self._compute(feeds)
        return list(outs[[t["name"] for t in self.engine.outputs].index(name)].shape)

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name in self.trt.refuse_address:
            return False
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self.trt.cuda
        cuda.require_context()
        self.active += 1
        if self.active > 1:
            self.trt.overlaps += 1
        try:
            self.trt.entered.set()
            time.sleep(self.trt.delay)
            feeds = {}
            for t in self.engine.inputs:
                shape, dtype = self.shapes[t["name"]], self.trt.nptype_name(t["dtype"])
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[t["name"]] = (cuda.memory[self.addresses[t["name"]]][:n].view(dtype)
                                    .reshape(shape).copy())
            for t, y in zip(self.engine.outputs, self._compute(feeds)):
                y = np.ascontiguousarray(y, self.trt.nptype_name(t["dtype"]))
                cuda.memory[self.addresses[t["name"]]][:y.nbytes] = y.reshape(-1).view(np.uint8)
            cuda.streams[stream_handle].pending += 1
            self.trt.executions.append(dict(self.shapes))
        finally:
            self.active -= 1
        return not self.trt.fail_execute

    def __del__(self) -> None:
        self.trt.destroyed.append(("context", bool(self.trt.cuda.current)))


class _FakeEngine:
    """An ICudaEngine from a fake plan: JSON naming its I/O tensors (shape with -1 where
    dynamic, dtype, profile 0 as [min, opt, max]) and what it computes."""

    def __init__(self, runtime: "_FakeRuntime", plan: dict) -> None:
        self.runtime, self.trt = runtime, runtime.trt  # keeps its runtime alive, as TensorRT's
        self.tensors = plan["tensors"]
        self.inputs = [t for t in self.tensors if t["input"]]
        self.outputs = [t for t in self.tensors if not t["input"]]
        self.fn = _engine_function(plan["fn"])

    def tensor(self, name: str) -> dict:
        return next(t for t in self.tensors if t["name"] == name)

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i]["name"]

    def get_tensor_location(self, name: str) -> str:
        host = self.tensor(name).get("host")
        return self.trt.TensorLocation.HOST if host else self.trt.TensorLocation.DEVICE

    def get_tensor_shape(self, name: str) -> list[int]:
        return list(self.tensor(name)["shape"])

    def get_tensor_dtype(self, name: str):
        return types.SimpleNamespace(name=self.tensor(name)["dtype"])

    def get_tensor_mode(self, name: str) -> str:
        modes = self.trt.TensorIOMode
        return modes.INPUT if self.tensor(name)["input"] else modes.OUTPUT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[list[int]]:
        t = self.tensor(name)
        assert profile_index == 0 and t["input"] and t["profile"]
        return [list(s) for s in t["profile"]]

    def create_execution_context(self) -> _FakeExecutionContext:
        self.trt.cuda.require_context()
        return _FakeExecutionContext(self)

    def __del__(self) -> None:
        self.trt.destroyed.append(("engine", bool(self.trt.cuda.current)))


class _FakeRuntime:
    def __init__(self, trt: "_FakeTrt", logger) -> None:
        self.trt, self.logger = trt, logger

    def deserialize_cuda_engine(self, plan: bytes) -> _FakeEngine:
        self.trt.cuda.require_context()
        return _FakeEngine(self, json.loads(bytes(plan)))

    def __del__(self) -> None:
        self.trt.destroyed.append(("runtime", bool(self.trt.cuda.current)))


class _FakeNetwork:
    def __init__(self) -> None:
        self.inputs: list = []
        self.outputs: list = []
        self.path = ""

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, i: int):
        return self.inputs[i]

    def get_output(self, i: int):
        return self.outputs[i]


class _FakeParser:
    """OnnxParser: takes the graph's I/O (names, dtypes, -1 for symbolic dims)."""

    TYPES = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT8: "INT8"}

    def __init__(self, network: _FakeNetwork) -> None:
        self.network, self.num_errors = network, 0

    def parse(self, data: bytes, path: str) -> bool:
        graph = onnx.load_from_string(data).graph
        weights = {i.name for i in graph.initializer}

        def tensor(vi):
            tt = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
            dtype = types.SimpleNamespace(name=self.TYPES[tt.elem_type])
            return types.SimpleNamespace(name=vi.name, shape=shape, dtype=dtype)

        self.network.inputs = [tensor(v) for v in graph.input if v.name not in weights]
        self.network.outputs = [tensor(v) for v in graph.output]
        self.network.path = path
        return True


class _FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _FakeBuilderConfig:
    def __init__(self) -> None:
        self.flags: set = set()
        self.profiles: list[_FakeProfile] = []
        self.int8_calibrator = None

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: _FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile: _FakeProfile) -> bool:
        self.calibration_profile = profile
        return True


class _FakeBuilder:
    """Builds a fake plan that computes the ONNX graph; INT8 calibrates as TensorRT's
    builder does: the cache, else get_batch until it returns None, then the new cache."""

    def __init__(self, trt: "_FakeTrt", logger) -> None:
        self.trt, self.logger = trt, logger

    def create_network(self, flags: int) -> _FakeNetwork:
        return _FakeNetwork()

    def create_builder_config(self) -> _FakeBuilderConfig:
        return _FakeBuilderConfig()

    def create_optimization_profile(self) -> _FakeProfile:
        return _FakeProfile()

    def build_serialized_network(self, network: _FakeNetwork, config: _FakeBuilderConfig):
        calibrator = config.int8_calibrator
        if calibrator is not None and calibrator.read_calibration_cache() is None:
            while calibrator.get_batch([network.inputs[0].name]):
                self.trt.calibration_batches += 1
            calibrator.write_calibration_cache(b"fake calibration cache")
        profile = config.profiles[0].shapes if config.profiles else {}
        tensors = ([{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
                     "input": True, "profile": profile.get(t.name)} for t in network.inputs]
                   + [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
                       "input": False, "profile": None} for t in network.outputs])
        return json.dumps({"tensors": tensors, "fn": f"onnx:{network.path}"}).encode()


class _FakeTrt:
    """Stands in for the ``tensorrt`` module (10.x) over a :class:`_FakeCuda`; its knobs
    make TensorRT calls fail or slow, and it records loggers, executions (the input
    shapes of each), overlapping executions and destroyed objects."""

    __version__ = "10.3.0"
    TensorLocation = types.SimpleNamespace(DEVICE="device", HOST="host")
    TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = types.SimpleNamespace(FP16="fp16", INT8="int8")
    DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32"}

    def __init__(self, cuda: _FakeCuda) -> None:
        self.cuda = cuda
        self.loggers: list = []
        self.destroyed: list[tuple[str, bool]] = []   # (what, a CUDA context was current)
        self.executions: list[dict] = []
        self.overlaps = self.calibration_batches = 0
        self.delay = 0.0
        self.refuse_address: set[str] = set()
        self.fail_execute = False
        self.entered = threading.Event()
        trt = self

        class Logger:
            WARNING = "warning"

            def __init__(self, min_severity=None) -> None:
                trt.loggers.append(self)

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        self.Logger, self.IInt8EntropyCalibrator2 = Logger, IInt8EntropyCalibrator2

    def nptype_name(self, name: str) -> str:
        return self.DTYPES[name]

    def nptype(self, dtype):
        try:
            return np.dtype(self.DTYPES[dtype.name]).type
        except KeyError:
            raise TypeError(f"no numpy type for {dtype.name}") from None

    def Runtime(self, logger) -> _FakeRuntime:  # noqa: N802 - TensorRT's name
        return _FakeRuntime(self, logger)

    def Builder(self, logger) -> _FakeBuilder:  # noqa: N802 - TensorRT's name
        return _FakeBuilder(self, logger)

    def OnnxParser(self, network, logger) -> _FakeParser:  # noqa: N802 - TensorRT's name
        return _FakeParser(network)


@pytest.fixture
def fake_gpu(monkeypatch):
    """(fake tensorrt, fake pycuda.driver), installed as what the backend imports."""
    from sdk.backends import tensorrt as backend

    cuda = _FakeCuda()
    trt = _FakeTrt(cuda)
    monkeypatch.setattr(backend, "_import_runtime", lambda: (trt, cuda))
    return trt, cuda


def _fake_engine(tmp_path, name="m", *, shape=(-1, -1, -1, 3),
                 profile=((1, 4, 4, 3), (1, 8, 8, 3), (1, 16, 16, 3)), host_output=False):
    """An engine file (SDK header + fake plan) computing y = 2x + 1 on one float32 input."""
    tensors = [{"name": "input", "shape": list(shape), "dtype": "FLOAT", "input": True,
                "profile": [list(p) for p in profile] if -1 in shape else None},
               {"name": "out", "shape": list(shape), "dtype": "FLOAT", "input": False,
                "profile": None, "host": host_output}]
    p = tmp_path / f"{name}.fp16.engine"
    info = _info(tensorrt={"version": "10.3.0", "gpu": "FakeGPU", "compute_capability": "8.7"})
    p.write_bytes(pack_engine(info, json.dumps({"tensors": tensors, "fn": "affine"}).encode()))
    return p


def test_engine_reports_fixed_profile_axes_and_splits_large_batches(fake_gpu, tmp_path):
    """get_tensor_shape says -1 whatever the build's range: the profile decides.  A batch
    above the profile's max runs in chunks (the SDK batches 32 faces; the default build
    is batch 1:1:1), a batch below its min and frames outside it are InputShapeErrors
    naming the range, and an axis the profile fixes is reported fixed."""
    trt, cuda = fake_gpu
    rng = np.random.default_rng(0)
    with sdk.load_model(_fake_engine(tmp_path)) as model:   # batch 1:1:1, 4x4..16x16
        assert model.inputs[0].shape == (None, None, None, 3)
        x = rng.normal(size=(32, 8, 8, 3)).astype(np.float32)
        np.testing.assert_allclose(model(x), 2 * x + 1, rtol=1e-6)
        assert [e["input"] for e in trt.executions] == [(1, 8, 8, 3)] * 32
        with pytest.raises(errors.InputShapeError, match=r"axis 1 is 20, outside .*4\.\.16"):
            model(np.zeros((1, 20, 8, 3), np.float32))
    fixed = _fake_engine(tmp_path, "fixed", profile=((4, 8, 8, 3), (8, 8, 8, 3), (8, 8, 8, 3)))
    with sdk.load_model(fixed) as model:
        assert model.inputs[0].shape == (None, 8, 8, 3)   # frames are resized to 8x8
        trt.executions.clear()
        x = rng.normal(size=(10, 8, 8, 3)).astype(np.float32)
        np.testing.assert_allclose(model(x), 2 * x + 1, rtol=1e-6)
        assert [e["input"][0] for e in trt.executions] == [6, 4]
        with pytest.raises(errors.InputShapeError, match=r"batch of 2.*4\.\.8"):
            model(np.zeros((2, 8, 8, 3), np.float32))
    assert cuda.current == []
    from sdk.backends.tensorrt import batch_chunks

    assert batch_chunks(33, 1, 32) == [32, 1] and batch_chunks(16, 4, 8) == [8, 8]
    assert batch_chunks(5, 3, 4) is None and batch_chunks(2, 4, 8) is None


def test_engine_runs_one_call_at_a_time(fake_gpu, tmp_path):
    """run() and close() share one execution context, stream and pinned buffers, and
    execute_async_v3 releases the GIL: calls from several threads must not overlap, and
    close() waits for a run in progress instead of freeing its buffers under it."""
    trt, _ = fake_gpu
    model = sdk.load_model(_fake_engine(tmp_path, profile=((1, 8, 8, 3),) * 2 + ((4, 8, 8, 3),)))
    trt.delay = 0.01
    xs = [np.full((2, 8, 8, 3), i, np.float32) for i in range(4)]
    failures: list[BaseException] = []

    def work(x):
        try:
            for _ in range(3):
                np.testing.assert_allclose(model(x), 2 * x + 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and trt.overlaps == 0
    trt.delay, result = 0.2, {}
    trt.entered.clear()

    def run_one():
        try:
            result["y"] = model(xs[1])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    runner = threading.Thread(target=run_one)
    runner.start()
    assert trt.entered.wait(5)
    model.close()   # while the engine is executing
    runner.join()
    assert not failures
    np.testing.assert_allclose(result["y"], 2 * xs[1] + 1)


def test_engine_refused_buffer_address_is_an_error(fake_gpu, tmp_path):
    """set_tensor_address returning False is an InferenceError, raised after the stream
    has drained (the input copy already queued), not a run on a stale address; the next
    call binds again."""
    trt, cuda = fake_gpu
    x = np.ones((1, 8, 8, 3), np.float32)
    with sdk.load_model(_fake_engine(tmp_path)) as model:
        (stream,) = cuda.streams.values()
        trt.refuse_address = {"out"}
        with pytest.raises(errors.InferenceError, match="set_tensor_address"):
            model(x)
        assert stream.pending == 0
        trt.refuse_address = set()
        np.testing.assert_allclose(model(x), 2 * x + 1)


def test_engine_failed_execution_leaves_nothing_queued(fake_gpu, tmp_path):
    """execute_async_v3 returning False: an InferenceError once the copies already queued
    on the pinned buffers have finished."""
    trt, cuda = fake_gpu
    x = np.ones((1, 8, 8, 3), np.float32)
    with sdk.load_model(_fake_engine(tmp_path)) as model:
        (stream,) = cuda.streams.values()
        trt.fail_execute = True
        with pytest.raises(errors.InferenceError, match="execute_async_v3"):
            model(x)
        assert stream.pending == 0
        trt.fail_execute = False
        np.testing.assert_allclose(model(x), 2 * x + 1)


def test_engine_cuda_error_at_synchronize_is_typed(fake_gpu, tmp_path):
    """A pycuda error surfacing at stream.synchronize() is an InferenceError (an SdkError),
    not pycuda's own exception; the context is popped all the same."""
    trt, cuda = fake_gpu
    x = np.ones((1, 8, 8, 3), np.float32)
    with sdk.load_model(_fake_engine(tmp_path)) as model:
        cuda.fail_sync = True
        with pytest.raises(errors.InferenceError, match="CUDA failed.*illegal memory access"):
            model(x)
        assert cuda.current == []
        cuda.fail_sync = False
        np.testing.assert_allclose(model(x), 2 * x + 1)


def test_failed_load_destroys_tensorrt_objects_under_their_context(fake_gpu, tmp_path):
    """A load that fails after deserialising destroys the execution context, engine and
    runtime while their CUDA context is current, not whenever the traceback goes."""
    trt, cuda = fake_gpu
    with pytest.raises(errors.ModelFormatError, match="host-side shape tensor") as failure:
        sdk.load_model(_fake_engine(tmp_path, host_output=True))
    # checked while the traceback, which holds load()'s frame, is still alive
    assert trt.destroyed == [("context", True), ("engine", True), ("runtime", True)]
    assert cuda.current == []
    del failure


def test_engines_share_one_retained_context_and_one_logger(fake_gpu, tmp_path):
    """The primary context is retained once per process and pushed/popped per call, never
    detached: pycuda's detach of a primary context that is not current pushes it and
    cuDevicePrimaryCtxRelease does not pop, which left it current after close().  One
    TensorRT logger serves every runtime (TensorRT's ILogger: a singleton)."""
    trt, cuda = fake_gpu
    x = np.ones((1, 8, 8, 3), np.float32)
    a = sdk.load_model(_fake_engine(tmp_path, "a"))
    b = sdk.load_model(_fake_engine(tmp_path, "b"))
    assert cuda.current == []
    a(x), b(x)
    assert cuda.current == []
    a.close()
    b.close()
    assert cuda.current == [] and cuda.retained == 1 and cuda.released == 0
    assert len(trt.loggers) == 1


def test_device_build_verifies_at_the_profile_batch(fake_gpu, good_onnx, tmp_path):
    """The device build (fake TensorRT computing the ONNX graph) with --batch 2:4:8: the
    post-build check runs the engine at the profile's opt batch (batch 1 is outside the
    profile), the builder and the runtime share one logger, and the CUDA context is left
    current nowhere."""
    from export.jetson.build import JetsonOptions, build_from_manifest, prepare_bundle

    trt, cuda = fake_gpu
    options = JetsonOptions(workspace_mb=64, batch=(2, 4, 8))
    manifest, _ = prepare_bundle([good_onnx], tmp_path / "b", options)
    (built,) = build_from_manifest(manifest, options, log=lambda *a: None)
    assert built.check["compared"] and built.check["min_cosine"] > 0.9999
    assert built.path.is_file() and ".unverified" not in built.path.name
    assert {e["input"][0] for e in trt.executions} == {4}
    assert len(trt.loggers) == 1
    assert cuda.current == [] and cuda.retained == 1 and cuda.released == 0


def test_int8_calibration_needs_a_float32_input_of_batch_1(fake_gpu, good_onnx, tmp_path):
    """The entropy calibrator feeds float32 samples of batch 1: a float16 input or a
    static batch above 1 is refused before calibrating; float32 with a dynamic batch
    calibrates on every sample."""
    from export.jetson.build import PreparedModel, ShapeRange, _build_serialized
    from export.jetson.calibrator import array_sha256
    from sdk.backends.tensorrt import primary_context

    trt, cuda = fake_gpu
    images = np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib" / "c.npy", images)
    calibration = {"npy": "calib/c.npy", "sha256": array_sha256(images), "count": 16,
                   "source": "test"}

    def build(onnx_path, batch):
        shape = ShapeRange("x" if onnx_path != good_onnx else "input",
                           (batch or 1, 16, 16, 3), (batch or 1, 16, 16, 3),
                           (batch or 1, 16, 16, 3))
        m = PreparedModel(name="m", onnx=onnx_path.name, sha256="ab" * 32, kind="face_encoder",
                          precisions=["int8"], profiles=[shape], quantized=False,
                          calibration=calibration, warnings=[])
        return _build_serialized(trt, cuda, onnx_path, m, "int8", 64, tmp_path, False,
                                 lambda *a: None)

    def relu(elem_type, batch):
        x = helper.make_tensor_value_info("x", elem_type, [batch, 16, 16, 3])
        y = helper.make_tensor_value_info("y", elem_type, [batch, 16, 16, 3])
        p = tmp_path / f"relu_{elem_type}_{batch}.onnx"
        onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])], [x], [y], opset=13,
                         info=_info()), str(p))
        return p

    ctx = primary_context(cuda, 0)
    ctx.push()
    try:
        with pytest.raises(errors.EngineBuildError, match=r"float32.*float16\[\?,16,16,3\]"):
            build(relu(TensorProto.FLOAT16, "N"), None)
        with pytest.raises(errors.EngineBuildError, match=r"batches of 1.*float32\[4,16,16,3\]"):
            build(relu(TensorProto.FLOAT, 4), 4)
        assert trt.calibration_batches == 0
        plan, inputs, _ = build(good_onnx, None)
        assert trt.calibration_batches == 16 and inputs[0].shape == (None, 16, 16, 3)
    finally:
        ctx.pop()


def test_device_check_passes_only_on_the_gpu_test_passing():
    """scripts/device_check.sh runs exactly the real-GPU test and fails unless pytest
    reports "1 passed": a skip (no pycuda, no GPU) exits 0 and must not count."""
    import re
    import subprocess
    from pathlib import Path

    script = (Path(__file__).parent.parent / "scripts" / "device_check.sh").read_text()
    node = re.search(r"^GPU_TEST=(\S+)$", script, re.M).group(1)
    gpu_test = test_tensorrt_backend_buffers_and_stream_on_a_real_gpu.__name__
    assert node == f"tests/test_jetson.py::{gpu_test}"
    assert re.search(r'pytest .*"\$GPU_TEST"', script) and " -k " not in script
    verdict = re.search(r"^gpu_verdict\(\) \{\n.*?^\}\n", script, re.M | re.S).group(0)
    for rc, tail, ok in ((0, "1 passed in 2.10s", True),
                         (0, "1 passed, 1 warning in 2.10s", True),
                         (0, "1 skipped in 0.31s", False),
                         (0, "11 passed in 9.00s", False),
                         (0, "1 passed, 1 skipped in 2.00s", False),
                         (1, "1 failed in 1.00s", False),
                         (5, "no tests ran in 0.01s", False)):
        log = f"tests/test_jetson.py . [100%]\n{tail}\n"
        res = subprocess.run(["bash", "-c", verdict + 'gpu_verdict "$1" <(printf %s "$2")',
                              "verdict", str(rc), log], capture_output=True, text=True)
        assert (res.returncode == 0) is ok, (tail, res.stdout, res.stderr)


# --- with TensorRT (a Jetson): real builds ----------------------------------------------


@NEEDS_TRT
def test_build_fp16_engine_and_run_it(good_onnx, tmp_path):
    """Builds a real engine, reuses it on the second call, and runs it through sdk."""
    from export.jetson.build import JetsonOptions, build_from_manifest, prepare_bundle

    manifest, _ = prepare_bundle([good_onnx], tmp_path / "b", JetsonOptions(workspace_mb=64))
    (first,) = build_from_manifest(manifest, JetsonOptions(workspace_mb=64))
    assert not first.cached and first.path.is_file()
    (second,) = build_from_manifest(manifest, JetsonOptions(workspace_mb=64))
    assert second.cached and second.path == first.path
    x = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    with sdk.load_model(first.path) as trt_model, sdk.load_model(good_onnx) as ref:
        assert trt_model.info.extra["tensorrt"]["version"]
        np.testing.assert_allclose(trt_model(x), ref(x), rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------- real device memory

def _pycuda_with_gpu():
    """(pycuda.driver, reason): the driver module when pycuda imports and a GPU answers."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None, ("pycuda is not installed (it does not build here: no libcuda; on a lent "
                      "GPU, scripts/device_check.sh builds it from the carried sdist)")
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return None, "pycuda found no CUDA device"
    except cuda.Error as exc:
        return None, f"CUDA did not initialise: {exc}"
    return cuda, ""


class _KernelExecutionContext:
    """Stands in for TensorRT's execution context and nothing else: it records the
    shapes and device addresses the backend gives it and, on ``execute_async_v3``,
    launches a real CUDA kernel (y = 2x + 1) on those addresses in the backend's stream.
    Everything the backend does around it (pinned host buffers, device allocations,
    async copies, re-binding on a new shape, context push/pop, close) is the real code."""

    def __init__(self, cuda, backend_ref):
        from pycuda.compiler import SourceModule

        self.shapes, self.addresses, self.launches = {}, {}, 0
        self._backend = backend_ref
        self._kernel = SourceModule("""
            __global__ void affine(const float *x, float *y, int n) {
                int i = blockIdx.x * blockDim.x + threadIdx.x;
                if (i < n) y[i] = 2.0f * x[i] + 1.0f;
            }""").get_function("affine")

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["input"]

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle):
        backend = self._backend()
        assert stream_handle == backend._stream.handle   # the backend's own stream
        n = int(np.prod(self.shapes["input"]))
        self._kernel(np.uintp(self.addresses["input"]), np.uintp(self.addresses["out"]),
                     np.int32(n), block=(256, 1, 1), grid=((n + 255) // 256, 1),
                     stream=backend._stream)
        self.launches += 1
        return True


def test_tensorrt_backend_buffers_and_stream_on_a_real_gpu():
    """The TensorRT backend's host/device buffer and stream code against real device
    memory (TensorRT itself is absent on the lent GPU: see _KernelExecutionContext)."""
    import weakref

    cuda, reason = _pycuda_with_gpu()
    if cuda is None:
        pytest.skip(reason)
    from sdk.backends.tensorrt import TensorRTBackend, gpu_identity, primary_context

    ident = gpu_identity(cuda, 0)
    assert ident["gpu"] and "." in ident["compute_capability"]
    ctx = primary_context(cuda, 0)   # what load() uses: retained once, never detached
    ctx.push()
    try:
        spec_in = TensorSpec("input", (None, 8, 8, 3), "float32")
        spec_out = TensorSpec("out", (None, 8, 8, 3), "float32")
        backend = TensorRTBackend(None, cuda, ctx, engine=object(), context=None,
                                  inputs=(spec_in,), outputs=(spec_out,), info=_info(),
                                  runtime="pycuda buffers only")
        backend._context = _KernelExecutionContext(cuda, weakref.ref(backend))
        backend._stream = cuda.Stream()
    finally:
        ctx.pop()   # as load() leaves it: nothing current between calls
    rng = np.random.default_rng(0)
    first_addresses = None
    for batch in (1, 4, 4, 2):   # a larger shape re-allocates and re-binds; others reuse
        x = rng.normal(size=(batch, 8, 8, 3)).astype(np.float32)
        (y,) = backend.run([x])
        np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
        assert y.shape == x.shape and not np.shares_memory(y, backend._bindings["out"].host)
        if batch == 4 and first_addresses is None:
            first_addresses = dict(backend._context.addresses)
        elif batch == 4:
            assert backend._context.addresses == first_addresses   # reused, not re-allocated
    assert backend._context.launches == 4
    backend.close()
    backend.close()   # twice is harmless
    with pytest.raises(errors.ClosedError, match="closed"):
        backend.run([x])
