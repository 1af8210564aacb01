"""Runtime core: load_model on every backend, parity with Keras, the contract, typed errors."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk import errors
from sdk.contract import (METADATA_KEY, ModelInfo, Preprocessing, TensorSpec, pack_engine,
                          unpack_engine)
from sdk.tflite_metadata import read_metadata

from conftest import assert_agrees_with_float


@pytest.fixture(scope="module")
def keras_ref(tiny_encoder, sample_images):
    return tiny_encoder.predict(sample_images, verbose=0)


# assert_agrees_with_float (conftest) on the tiny encoder: it puts every image within a
# few degrees of one direction (median cosine 0.97 between different images), so a file
# with saturated int8 weights (min cosine 0.975, most embeddings nearer another image's
# float one) or a constant output (0.92) passes a 0.95 floor; the distance check (each
# embedding within a tenth of the median squared-L2 distance between different images'
# float embeddings of its own image's) fails them (measured: int8 about 1/80 of it).


# --- parity with the source model ---------------------------------------------


@pytest.mark.parametrize("fmt", ["tflite_fp32", "onnx_fp32"])
def test_fp32_matches_keras_to_1e5(fmt, exported, sample_images, keras_ref):
    with sdk.load_model(exported[fmt]) as model:
        got = np.concatenate([model(x[None]) for x in sample_images])
    np.testing.assert_allclose(got, keras_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["tflite_fp32", "onnx_fp32"])
def test_batch_run_matches_single(fmt, exported, sample_images, keras_ref):
    with sdk.load_model(exported[fmt]) as model:
        got = model(sample_images[:5])
    np.testing.assert_allclose(got, keras_ref[:5], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt,min_cos", [("tflite_fp16", 0.9999), ("tflite_int8", 0.99),
                                         ("onnx_int8", 0.99)])
def test_quantised_models_agree_with_float(fmt, min_cos, exported, sample_images, keras_ref):
    with sdk.load_model(exported[fmt]) as model:
        got = np.concatenate([model(x[None]) for x in sample_images])
        assert model.info.precision == fmt.split("_")[1]
    assert_agrees_with_float(keras_ref, got, min_cos)


def test_onnx_int8_float_stem(exported, sample_images, keras_ref, tmp_path):
    """float_stem: the conv reading the input stays float (no quantised weight feeds it),
    every other conv is quantised, the file says so and still agrees with float."""
    import onnx

    from export.formats import quantize_onnx_int8

    calib = [x[None] for x in sample_images[:24]]
    path = quantize_onnx_int8(exported["onnx_fp32"], tmp_path / "stem.onnx", calib,
                              float_stem=True)
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    float_convs = [n.name for n in convs if not dequantized.intersection(n.input[1:2])]
    assert len(convs) > 1 and len(float_convs) == 1
    with sdk.load_model(path) as model:
        assert model.info.quantization["float_nodes"] == float_convs
        got = np.concatenate([model(x[None]) for x in sample_images])
    assert_agrees_with_float(keras_ref, got, 0.99)
    plain = onnx.load(str(exported["onnx_int8"])).graph      # the default: every conv int8
    dq = {o for n in plain.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(dq.intersection(n.input[1:2]) for n in plain.node if n.op_type == "Conv")


def _conv_weights(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(i) for i in graph.initializer
            if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(i.dims) == 4]


def test_onnx_int8_default_weights_cannot_saturate_avx2(exported):
    """The default QDQ file holds 7-bit weights: |w| <= 64, so a uint8 activation pair
    times a weight pair (2·255·64 = 32640) fits the int16 sums of x86's VPMADDUBSW on CPUs
    without VNNI (full-range weights overflow them; scripts/onnx_int8_probe.py)."""
    weights = _conv_weights(exported["onnx_int8"])
    assert weights and all(w.dtype == np.int8 for w in weights)
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    with sdk.load_model(exported["onnx_int8"]) as model:
        assert model.info.quantization["weights"] == "int8-7bit per-channel"


def test_onnx_int8_weight_encodings(exported, sample_images, keras_ref, tmp_path):
    from export.formats import quantize_onnx_int8

    calib = [x[None] for x in sample_images[:24]]
    path = quantize_onnx_int8(exported["onnx_fp32"], tmp_path / "u8.onnx", calib,
                              weights="uint8")
    assert all(w.dtype == np.uint8 for w in _conv_weights(path))
    with sdk.load_model(path) as model:
        assert model.info.quantization["weights"] == "uint8 per-channel"
        got = np.concatenate([model(x[None]) for x in sample_images])
    assert_agrees_with_float(keras_ref, got, 0.99)
    path = quantize_onnx_int8(exported["onnx_fp32"], tmp_path / "s8.onnx", calib, weights="int8")
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _conv_weights(path)) == 127
    with pytest.raises(ValueError, match="int8-7bit"):
        quantize_onnx_int8(exported["onnx_fp32"], tmp_path / "x.onnx", calib, weights="int4")


def test_int8_tflite_has_no_float_compute(exported):
    from export.formats import float_ops

    assert float_ops(exported["tflite_int8"].read_bytes()) == []


def test_int8_io_model_quantises_float_input(tiny_encoder, tiny_info, sample_images, tmp_path,
                                             keras_ref):
    from export import formats

    path = formats.to_tflite(tiny_encoder, tmp_path / "io8.tflite", tiny_info, precision="int8",
                             calibration=[x[None] for x in sample_images[:24]], int8_io=True)
    with sdk.load_model(path) as model:
        assert model.inputs[0].dtype == "int8" and model.inputs[0].quantization is not None
        got = np.concatenate([model(x[None]) for x in sample_images])  # float32 in, float out
        raw = model.run(sample_images[:1], dequantize=False)[0]
    assert raw.dtype == np.int8
    assert_agrees_with_float(keras_ref, got, 0.98)


# --- the contract travels inside every file ------------------------------------


@pytest.mark.parametrize("fmt", ["tflite_fp32", "tflite_fp16", "tflite_int8", "onnx_fp32",
                                 "onnx_int8"])
def test_metadata_round_trip(fmt, exported, tiny_info):
    with sdk.load_model(exported[fmt]) as model:
        info = model.info
    assert info.kind == "face_encoder"
    assert info.name == tiny_info.name
    assert info.source_hash == tiny_info.source_hash and len(info.source_hash) == 64
    assert info.threshold == pytest.approx(0.8)
    assert info.output["metric"] == "squared_l2"
    assert info.preprocessing.channel_order == "RGB"
    assert info.inputs[0].shape[1:] == (16, 16, 3)
    assert info.versions["tensorflow"] and info.versions["edge_sdk"] == sdk.__version__
    assert info.precision == fmt.split("_")[1]


def test_contract_json_round_trip():
    info = ModelInfo(kind="stylizer", name="s", inputs=(TensorSpec("x", (1, None, None, 3),
                                                                   "float32"),),
                     outputs=(TensorSpec("y", (1, None, None, 3), "uint8", (0.5, 3)),),
                     preprocessing=Preprocessing(channel_order="BGR", mean=(1, 2, 3)),
                     output={"style": "udnie"}, extra={"a": [1, 2]})
    assert ModelInfo.from_json(info.to_json()) == info


def test_tensorrt_header_round_trip(tiny_info):
    blob = pack_engine(tiny_info, b"\x01\x02engine")
    info, body = unpack_engine(blob)
    assert info == tiny_info and bytes(body) == b"\x01\x02engine"


def test_tflite_metadata_reader_sees_entry(exported):
    entries = read_metadata(exported["tflite_fp32"].read_bytes())
    assert METADATA_KEY in entries
    assert json.loads(entries[METADATA_KEY])["kind"] == "face_encoder"


def test_reembedding_metadata_replaces_it(exported, tiny_info, tmp_path):
    from export.formats import embed_tflite_metadata

    data = exported["tflite_fp32"].read_bytes()
    again = embed_tflite_metadata(data, tiny_info.replace(name="renamed"))
    path = tmp_path / "renamed.tflite"
    path.write_bytes(again)
    with sdk.load_model(path) as model:
        assert model.info.name == "renamed"
    assert list(read_metadata(again)).count(METADATA_KEY) == 1


# --- every exported file is sealed with its own SHA-256 --------------------------

_FORMATS = ["tflite_fp32", "tflite_fp16", "tflite_int8", "onnx_fp32", "onnx_int8"]
_REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", _FORMATS)
def test_exported_files_are_sealed(fmt, exported):
    """The digest in the contract is the SHA-256 of the file with that digest read as
    zeros: computed here by hand, not by the SDK's function."""
    data = exported[fmt].read_bytes()
    with sdk.load_model(exported[fmt]) as model:
        digest = model.file_sha256
    assert digest is not None and data.count(digest.encode()) == 1
    at = data.index(digest.encode())
    assert hashlib.sha256(data[:at] + b"0" * 64 + data[at + 64:]).hexdigest() == digest


def _unsealed(data: bytes) -> bytes:
    """The file as exports before seals wrote it: the same length, its digest under a key
    no SDK reads."""
    at = data.index(b'"file_sha256":"')
    return data[:at] + b'"file_sha2xx":"' + data[at + 15:]


@pytest.mark.parametrize("fmt", ["tflite_int8", "onnx_fp32"])
@pytest.mark.parametrize("where", [0.02, 0.3, 0.6, 0.97])
def test_a_changed_byte_is_refused_before_the_runtime_parses_it(fmt, where, exported,
                                                                tmp_path):
    """One flipped bit anywhere (structure, weights, the contract) is refused as damage;
    without the seal the same file would load (and mostly run, with other weights)."""
    data = bytearray(exported[fmt].read_bytes())
    i = int(len(data) * where)
    key = data.index(b'"file_sha256":"')
    if key <= i < key + 15:  # not in the marker '"file_sha256":"': that reads as no seal
        i = key + 15
    data[i] ^= 0x10
    path = tmp_path / exported[fmt].name
    path.write_bytes(bytes(data))
    with pytest.raises(errors.ModelFormatError, match="damaged"):
        sdk.load_model(path)


def test_write_atomic_modes(tmp_path):
    """A new file gets what the umask allows (or new_mode), a replaced one keeps its mode,
    and no temporary file is left behind."""
    from sdk.paths import write_atomic

    mask = os.umask(0o022)
    try:
        assert write_atomic(tmp_path / "a.bin", b"1").stat().st_mode & 0o777 == 0o644
        assert write_atomic(tmp_path / "b.bin", b"1", new_mode=0o600).stat().st_mode & 0o777 \
            == 0o600
        os.chmod(tmp_path / "a.bin", 0o640)
        write_atomic(tmp_path / "a.bin", b"22", new_mode=0o600)
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "a.bin").read_bytes() == b"22"
    finally:
        os.umask(mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_seal_and_check_seal():
    from sdk.contract import check_seal, seal

    info = ModelInfo(kind="generic", name="g", inputs=(TensorSpec("x", (1, 2), "float32"),),
                     outputs=(TensorSpec("y", (1, 2), "float32"),))
    blob = pack_engine(info, b"\x01plan")
    digest = check_seal(blob)
    assert digest == blob[blob.index(b'"file_sha256":"') + 15:][:64].decode()
    assert unpack_engine(blob)[0] == info  # the digest is not part of ModelInfo
    assert check_seal(b"a file without a seal") is None
    # another program's JSON with a field of that name is not the SDK's seal
    assert check_seal(b'{"file_sha256":"' + b"a" * 64 + b'","size":3}') is None
    assert check_seal(_unsealed(blob)) is None
    for damaged in (blob[:-1] + b"\x02", blob.replace(digest.encode(), b"f" * 64),
                    blob.replace(digest.encode(), b"x" * 64)):  # not even hex
        with pytest.raises(errors.ModelFormatError, match="damaged"):
            check_seal(damaged, source="m.engine")
    one = info.to_json(sealed=True).encode()
    with pytest.raises(ValueError, match="exactly one"):
        seal(b"no placeholder")
    with pytest.raises(ValueError, match="exactly one"):
        seal(one + one)
    # an older contract left in the file (a TFLite buffer) does not hide the live one
    both = seal(seal(one) + one)
    assert check_seal(both) == both[both.rindex(b'"file_sha256":"') + 15:][:64].decode()


def test_export_seal_seals_older_files_and_keeps_what_they_compute(exported, tmp_path):
    from export.__main__ import main
    from export.seal import seal_file
    from sdk.contract import check_seal

    for fmt in ("tflite_int8", "onnx_fp32"):
        path = tmp_path / exported[fmt].name
        path.write_bytes(_unsealed(exported[fmt].read_bytes()))
        with sdk.load_model(path) as old:
            assert old.file_sha256 is None
            x = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
            before, info = old(x), old.info
        digest = seal_file(path)
        with sdk.load_model(path) as new:
            assert new.file_sha256 == digest and new.info == info
            assert np.array_equal(new(x), before)
    # a sealed file is left as it is (a TFLite file grew by 8 bytes with each run)
    for fmt in ("tflite_int8", "onnx_fp32"):
        before = exported[fmt].read_bytes()
        assert seal_file(exported[fmt]) == check_seal(before)
        assert exported[fmt].read_bytes() == before
    # through a symlink the file it points at is sealed, and keeps its permissions
    real, link = tmp_path / "real.onnx", tmp_path / "link.onnx"
    real.write_bytes(_unsealed(exported["onnx_fp32"].read_bytes()))
    os.chmod(real, 0o640)
    link.symlink_to(real)
    seal_file(link)
    assert link.is_symlink() and (real.stat().st_mode & 0o777) == 0o640
    assert check_seal(real.read_bytes()) is not None
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    # a damaged sealed file is refused, never re-sealed, and left as it was
    damaged = bytearray(exported["onnx_int8"].read_bytes())
    damaged[len(damaged) // 2] ^= 1
    path = tmp_path / "damaged.onnx"
    path.write_bytes(bytes(damaged))
    with pytest.raises(errors.ModelFormatError, match="damaged"):
        seal_file(path)
    assert path.read_bytes() == bytes(damaged)
    assert main(["seal", str(path)]) == 1
    # an engine from before seals keeps its plan bytes
    payload = _unsealed(pack_engine(tiny_info_of(exported), b"plan bytes"))
    engine = tmp_path / "m.engine"
    engine.write_bytes(payload)
    assert main(["seal", str(engine)]) == 0
    assert bytes(unpack_engine(engine.read_bytes())[1]) == b"plan bytes"
    assert check_seal(engine.read_bytes()) is not None


def tiny_info_of(exported) -> ModelInfo:
    with sdk.load_model(exported["onnx_fp32"]) as m:
        return m.info


@pytest.mark.parametrize("path", sorted(p.relative_to(_REPO).as_posix() for p in
                                        (_REPO / "models").glob("*/*")
                                        if p.suffix in (".onnx", ".tflite")
                                        and p.parent.name != "yunet"))
def test_released_models_are_sealed(path):
    with sdk.load_model(_REPO / path) as model:
        assert model.file_sha256 is not None, f"{path}: run python -m export seal {path}"


def test_onnx_runtime_threads_do_not_spin_between_runs(exported):
    """Spinning worker threads took a core from the detector and kept one busy while the
    app waited for a frame."""
    with sdk.load_model(exported["onnx_fp32"], threads=2) as model:
        options = model._backend._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# --- typed errors ----------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(errors.ModelNotFoundError, match="not found"):
        sdk.load_model(tmp_path / "nope.onnx")


def test_unknown_suffix(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"x")
    with pytest.raises(errors.ModelFormatError, match=r"unknown model file type '\.pt'"):
        sdk.load_model(p)


def test_unknown_backend_name(exported):
    with pytest.raises(errors.UnknownBackendError, match="openvino"):
        sdk.load_model(exported["onnx_fp32"], backend="openvino")


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_file(suffix, tmp_path):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(errors.ModelFormatError):
        sdk.load_model(p)


def test_truncated_tflite(exported, tmp_path):
    data = exported["tflite_fp32"].read_bytes()
    p = tmp_path / "cut.tflite"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(errors.ModelFormatError):
        sdk.load_model(p)


def test_foreign_file_with_model_suffix(exported, tmp_path):
    """An ONNX file renamed to .tflite is refused as a foreign file, not run."""
    p = tmp_path / "foreign.tflite"
    p.write_bytes(exported["onnx_fp32"].read_bytes())
    with pytest.raises(errors.ModelFormatError, match="not a TFLite model"):
        sdk.load_model(p)


def test_model_without_contract_runs_but_has_no_info(tiny_encoder, tmp_path, sample_images):
    import tensorflow as tf

    p = tmp_path / "plain.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny_encoder).convert())
    with sdk.load_model(p) as model:
        assert not model.has_info
        assert model(sample_images[:1]).shape == (1, 8)
        with pytest.raises(errors.MetadataError, match="no SDK contract"):
            _ = model.info


def test_wrong_shape_says_expected_and_got(exported):
    with sdk.load_model(exported["onnx_fp32"]) as model:
        with pytest.raises(errors.InputShapeError) as exc:
            model(np.zeros((1, 32, 32, 3), np.float32))
    msg = str(exc.value)
    assert "float32[?,16,16,3]" in msg and "[1, 32, 32, 3]" in msg


@pytest.mark.parametrize("fmt", ["tflite_fp32", "onnx_fp32"])
def test_runtime_failures_are_typed(fmt, exported, sample_images):
    """An empty batch is the caller's error; a runtime that fails on inputs it accepted is
    an InferenceError, and the TFLite interpreter is usable again after a failed resize."""
    with sdk.load_model(exported[fmt]) as model:
        with pytest.raises(errors.InputShapeError, match="empty array"):
            model(sample_images[:0])
        backend = model._backend
        if fmt == "onnx_fp32":
            class Failing:
                def run(self, *args):
                    raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : boom")
            real, backend._session = backend._session, Failing()
            with pytest.raises(errors.InferenceError, match="boom"):
                model(sample_images[:1])
            backend._session = real
        else:
            interp = backend._interp
            real = interp.allocate_tensors

            def fail_once():
                interp.allocate_tensors = real
                raise RuntimeError("boom")
            interp.allocate_tensors = fail_once
            with pytest.raises(errors.InputShapeError, match="boom"):
                model(sample_images[:2])                  # a new batch size: resize fails
            assert model(sample_images[:2]).shape[0] == 2   # resized and allocated again
            interp.invoke = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
            with pytest.raises(errors.InferenceError, match="boom"):
                model(sample_images[:2])
            del interp.invoke
        assert model(sample_images[:1]).shape[0] == 1


def test_onnx_integer_io_takes_its_scale_from_the_contract(tmp_path):
    """An ONNX graph carries no scale for a uint8 input or output; the contract does, and
    Model quantises the input and dequantises the output with it (as for TFLite)."""
    import onnx
    from onnx import TensorProto, helper

    from export.formats import set_onnx_metadata

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])])
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    set_onnx_metadata(path, ModelInfo(
        kind="generic", name="q", inputs=(TensorSpec("x", (1, 4), "uint8", (0.5, 10)),),
        outputs=(TensorSpec("y", (1, 4), "uint8", (0.25, 0)),)))
    with sdk.load_model(path) as model:
        x = np.array([[0.0, 1.0, 2.5, 50.0]], np.float32)
        q = np.array([[10, 12, 15, 110]], np.uint8)               # round(x / 0.5) + 10
        np.testing.assert_array_equal(model.run(x, dequantize=False)[0], q)
        np.testing.assert_allclose(model(x), q * 0.25)


def test_wrong_rank(exported):
    with sdk.load_model(exported["tflite_fp32"]) as model:
        with pytest.raises(errors.InputShapeError):
            model(np.zeros((16, 16, 3), np.float32))


def test_wrong_dtype_says_expected_and_got(exported):
    with sdk.load_model(exported["tflite_fp32"]) as model:
        with pytest.raises(errors.InputDtypeError, match="expected dtype float32.*got uint8"):
            model(np.zeros((1, 16, 16, 3), np.uint8))


def test_wrong_number_and_names_of_inputs(exported):
    x = np.zeros((1, 16, 16, 3), np.float32)
    with sdk.load_model(exported["onnx_fp32"]) as model:
        with pytest.raises(errors.InputError, match="takes 1 input"):
            model.run([x, x])
        with pytest.raises(errors.InputError, match="missing"):
            model.run({"other": x})
        assert model.run({"input": x})[0].shape == (1, 8)


def test_closed_model_refuses_to_run_and_close_twice_is_safe(exported):
    model = sdk.load_model(exported["onnx_fp32"])
    model.close()
    model.close()
    with pytest.raises(errors.ClosedError, match="closed"):
        model(np.zeros((1, 16, 16, 3), np.float32))
    # every description needs the runtime too: a typed error, not an AttributeError
    for attr in ("info", "inputs", "outputs", "backend", "runtime", "has_info"):
        with pytest.raises(errors.ClosedError, match="closed"):
            getattr(model, attr)
    assert "closed" in repr(model)


def test_threads_option_validated(exported):
    with pytest.raises(ValueError, match="threads"):
        sdk.load_model(exported["onnx_fp32"], threads=0)
    with sdk.load_model(exported["tflite_fp32"], threads=1) as model:
        assert model.backend == "tflite"


def test_unsupported_contract_schema(exported, tiny_info, tmp_path):
    from export.formats import embed_tflite_metadata

    future = json.loads(tiny_info.to_json())
    future["schema"] = 99

    class Raw:  # a stand-in with the one method embed_tflite_metadata uses
        def to_json(self, sealed=False):
            return json.dumps({**future, **({"file_sha256": "0" * 64} if sealed else {})},
                              separators=(",", ":"))

    p = tmp_path / "future.tflite"
    p.write_bytes(embed_tflite_metadata(exported["tflite_fp32"].read_bytes(), Raw()))
    with pytest.raises(errors.MetadataError, match="schema 99"):
        sdk.load_model(p)


def test_malformed_contract_json():
    with pytest.raises(errors.MetadataError, match="not valid JSON"):
        ModelInfo.from_json("{nope")
    with pytest.raises(errors.MetadataError, match="malformed"):
        ModelInfo.from_json(json.dumps({"schema": 1, "kind": "face_encoder"}))
    # a foreign or damaged contract of the right shape: every field of the wrong type or
    # range is the SDK's MetadataError, never an AttributeError deep inside a task class
    good = json.loads(ModelInfo(
        kind="face_encoder", name="f", inputs=(TensorSpec("x", (None, 112, 112, 3), "float32"),),
        outputs=(TensorSpec("y", (None, 128), "float32"),),
        output={"embedding_size": 128, "metric": "squared_l2", "threshold": 1.2,
                "operating_points": {"far_1e-4": 0.8}}).to_json())
    assert ModelInfo.from_json(json.dumps(good)).operating_points == {"far_1e-4": 0.8}
    bad = [("output", []), ("inputs", [1]), ("outputs", ["y"]), ("preprocessing", [1]),
           ("versions", [1]), ("quantization", "int8"), ("extra", 3),
           ("output", {**good["output"], "operating_points": [1]}),
           ("output", {**good["output"], "threshold": "abc"}),
           ("output", {**good["output"], "threshold": 4.0}),      # would accept everyone
           ("output", {**good["output"], "threshold": -1}),
           ("output", {**good["output"], "operating_points": {"far_1e-4": 9}}),
           ("source_hash", None), ("name", [1]),                  # model_id is built of them
           ("extra", {"tensorrt": "built-on-orin"})]              # the engine target check
    for key, value in bad:
        with pytest.raises(errors.MetadataError, match="malformed"):
            ModelInfo.from_json(json.dumps({**good, key: value}))


def test_unknown_tflite_runtime_name(exported):
    with pytest.raises(errors.BackendUnavailableError, match="unknown TFLite runtime"):
        sdk.load_model(exported["tflite_fp32"], tflite_runtime="nnapi")


def test_tflite_runtime_choice_is_reported(exported, monkeypatch):
    """tflite_runtime (old devices) is used only when asked or when LiteRT is missing,
    and then the model says which runtime ran it."""
    with sdk.load_model(exported["tflite_fp32"]) as model:
        assert model.runtime.startswith("ai_edge_litert")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    try:
        with sdk.load_model(exported["tflite_fp32"]) as model:
            assert not model.runtime.startswith("ai_edge_litert")
    except errors.BackendUnavailableError as exc:  # neither tflite_runtime nor tf.lite usable
        assert "ai_edge_litert" in str(exc)


def test_tensorrt_engine_without_tensorrt(tiny_info, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this test covers hosts without it")
    except ImportError:
        pass
    p = tmp_path / "face.engine"
    p.write_bytes(pack_engine(tiny_info, b"serialized-engine"))
    with pytest.raises(errors.BackendUnavailableError, match="TensorRT is not installed"):
        sdk.load_model(p)


def test_bare_tensorrt_plan_is_refused(tmp_path):
    p = tmp_path / "bare.plan"
    p.write_bytes(b"ftrt" + b"\x00" * 64)
    with pytest.raises(errors.MetadataError, match="no SDK header"):
        sdk.load_model(p)


def test_import_sdk_loads_no_runtime():
    """`import sdk` must not import TensorFlow or any inference runtime."""
    import subprocess

    code = ("import sys, sdk; bad = [m for m in ('tensorflow', 'onnxruntime', 'ai_edge_litert', "
            "'tensorrt', 'keras') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sdk_never_imports_export():
    from pathlib import Path

    root = Path(sdk.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py")
                 if "import export" in p.read_text() or "from export" in p.read_text()]
    assert offenders == []


def test_squared_l2_is_the_distance():
    a = sdk.l2_normalize(np.array([[3.0, 4.0], [1.0, 0.0]]))
    b = sdk.l2_normalize(np.array([0.0, 1.0]))
    np.testing.assert_allclose(sdk.squared_l2(a, b), [(0.6) ** 2 + (0.2) ** 2, 2.0], rtol=1e-6)
    with pytest.raises(errors.InputShapeError):
        sdk.squared_l2(np.zeros(3), np.zeros(4))
    with pytest.raises(errors.InputShapeError, match="vectors"):   # not numpy's IndexError
        sdk.squared_l2(0.5, 0.25)


def test_forced_tflite_runtime_that_is_missing_is_an_error(exported):
    """Asking for tflite_runtime where it is not installed never falls back silently."""
    try:
        import tflite_runtime  # noqa: F401
        pytest.skip("tflite_runtime is installed here")
    except Exception:
        pass
    with pytest.raises(errors.BackendUnavailableError, match="tflite_runtime"):
        sdk.load_model(exported["tflite_fp32"], tflite_runtime="tflite_runtime")


def test_preprocessing_apply_follows_the_contract():
    """The one implementation of the contract's pre-processing, checked by hand."""
    bgr = np.array([[[[10, 20, 30]]]], np.uint8)            # (1, 1, 1, 3): B=10 G=20 R=30
    rgb = Preprocessing(channel_order="RGB", pixel_range=(0, 1), mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25), layout="NCHW").apply(bgr)
    assert rgb.shape == (1, 3, 1, 1) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb.ravel(), (np.array([30, 20, 10]) / 255 - 0.5) / 0.25,
                               rtol=1e-6)
    gray = Preprocessing(channel_order="GRAY").apply(bgr)
    np.testing.assert_allclose(gray.ravel(), [0.114 * 10 + 0.587 * 20 + 0.299 * 30], rtol=1e-6)
    assert Preprocessing(channel_order="BGR").apply(bgr).ravel().tolist() == [10, 20, 30]
