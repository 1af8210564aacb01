"""Jetson tooling: the TensorRT pre-build check, the device bundle, engine naming and
caching rules, the engine header and target checks; TensorRT builds where TensorRT exists.

Graphs are built with ``onnx.helper`` (no TensorFlow).  Nothing here fakes TensorRT: the
tests that need it skip with the reason on hosts without it. The one real-GPU test runs
the backend's own buffer and stream code on device memory with a CUDA kernel in place of
TensorRT's execution context (the lent GPU has CUDA but no TensorRT); it says so, and it
tests the buffers, not TensorRT.
"""

from __future__ import annotations

import json
import struct

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
    from sdk.backends.tensorrt import TensorRTBackend, gpu_identity

    ident = gpu_identity(cuda, 0)
    assert ident["gpu"] and "." in ident["compute_capability"]
    ctx = cuda.Device(0).retain_primary_context()
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
    for batch in (1, 4, 4, 2):   # a new shape re-allocates and re-binds; the same reuses
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
