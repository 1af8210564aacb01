"""1D signals and 3D volumes through the same builder, export and runtime as images."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_agrees_with_float


@pytest.mark.parametrize("shape,expected", [((14, 1), (10, 16)),
                                            ((14, 14, 14, 1), (10, 10, 10, 16)),
                                            ((14, 14, 1), (10, 10, 16))])
def test_shape_rule_of_the_first_layer(tf, shape, expected):
    import keras

    from export.encoders import build_encoder, valid_conv_output_shape

    assert valid_conv_output_shape(shape, 16, 5) == expected
    model = build_encoder(shape, filters=(16,), kernel_size=5, embedding_size=8)
    probe = keras.Model(model.inputs[0], model.get_layer("conv_valid").output)
    assert tuple(probe.output.shape[1:]) == expected
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    assert np.asarray(probe(x)).shape == (2, *expected)


def test_bad_input_rank(tf):
    from export.encoders import build_encoder

    with pytest.raises(ValueError, match="input_shape"):
        build_encoder((14,))
    with pytest.raises(ValueError, match="does not fit"):
        from export.encoders import valid_conv_output_shape
        valid_conv_output_shape((3, 1), 16, 5)


def _info(model, name):
    from export.formats import source_hash
    from sdk.contract import ModelInfo, Preprocessing

    return ModelInfo(kind="encoder", name=name, inputs=(), outputs=(),
                     preprocessing=Preprocessing(channel_order="NONE", pixel_range=(-20, 20),
                                                 layout="NWC"),
                     output={"embedding_size": 8, "metric": "squared_l2", "threshold": 1.0},
                     source_hash=source_hash(model))


@pytest.mark.parametrize("shape", [(20, 6), (6, 12, 12, 1)])
def test_nd_encoder_exports_and_runs_in_the_sdk(tf, tmp_path, shape):
    import sdk
    from export import formats
    from export.encoders import build_encoder

    model = build_encoder(shape, filters=(8, 16), kernel_size=3, embedding_size=8)
    info = _info(model, f"enc{len(shape) - 1}d")
    x = np.random.default_rng(1).normal(size=(6, *shape)).astype(np.float32)
    ref = np.asarray(model(x))
    paths = [formats.to_tflite(model, tmp_path / "m.tflite", info),
             formats.to_onnx(model, tmp_path / "m.onnx", info)]
    for p in paths:
        with sdk.Encoder.create(p) as enc:
            assert enc.input_shape == shape and enc.info.kind == "encoder"
            np.testing.assert_allclose(enc.embed(x), ref, atol=1e-5)
            np.testing.assert_allclose(enc.embed(x[0]), ref[0], atol=1e-5)
            r = enc.verify(x[0], x[0])
            assert r.is_match and r.distance < 1e-6
            with pytest.raises(sdk.errors.InputShapeError, match="expected one sample"):
                enc.embed(np.zeros((3, 3), np.float32))


def test_1d_encoder_is_fully_int8(tf, tmp_path):
    """No float op left, and the int8 file agrees with its float model on held-out inputs
    (conftest.assert_agrees_with_float: the distance is the worst squared-L2 distance of
    an int8 embedding to its own input's float one, over the median between different
    inputs' float embeddings).

    Measured with 256 calibration inputs, seeds 0-4: min cosine >= 0.9995, distance
    <= 0.005 (seed 0: 0.9998 and 0.002; median cosine between different inputs' float
    embeddings 0.88).  With fewer, a held-out input beyond the calibrated ranges (mostly a
    small pre-normalisation norm, whose rsqrt the int8 L2Normalize clips) comes out off:
    distance up to 1.2 with 16 inputs, 0.06 with 64.  Calibrating on inputs 5x or 20x too
    large or 20x too small, or saturating the weights, gives 2 to 3.7 (5x too large keeps
    cosine 0.994: only the distance sees the embeddings shrink to a third of unit length)."""
    import keras

    import sdk
    from export import formats
    from export.encoders import build_encoder

    keras.utils.set_random_seed(0)
    model = build_encoder((20, 6), filters=(8, 16), kernel_size=3, embedding_size=8)
    rng = np.random.default_rng(2)
    calib = [rng.normal(size=(1, 20, 6)).astype(np.float32) for _ in range(256)]
    p = formats.to_tflite(model, tmp_path / "m8.tflite", _info(model, "e"), precision="int8",
                          calibration=calib)
    assert formats.float_ops(p.read_bytes()) == []
    x = rng.normal(size=(32, 20, 6)).astype(np.float32)     # held out from calibration
    ref = np.asarray(model(x))
    with sdk.load_model(p) as m:
        got = np.concatenate([m(s[None]) for s in x])
    assert_agrees_with_float(ref, got, min_cos=0.99, max_frac=0.05)


def test_3d_int8_is_refused_not_silently_float(tf, tmp_path):
    """TFLite keeps CONV_3D in float: a 'full int8' 3D model must be refused."""
    from export import formats
    from export.encoders import build_encoder

    model = build_encoder((6, 12, 12, 1), filters=(8,), kernel_size=3, embedding_size=8)
    rng = np.random.default_rng(3)
    calib = [rng.normal(size=(1, 6, 12, 12, 1)).astype(np.float32) for _ in range(16)]
    with pytest.raises(formats.ConversionError, match="CONV_3D"):
        formats.to_tflite(model, tmp_path / "m3.tflite", _info(model, "e"), precision="int8",
                          calibration=calib)


def test_encoder_refuses_other_kinds(exported, tiny_encoder, tiny_info, tmp_path):
    """A stylizer is refused with ModelKindError, and so is a face encoder: it takes BGR
    faces through its contract's colour order, which sdk.FaceVerifier applies (raw arrays
    here would give other embeddings than the verifier's for the same face); a threshold
    outside (0, 4) is refused."""
    import sdk
    from export import formats

    with pytest.raises(sdk.errors.ModelKindError, match="FaceVerifier"):
        sdk.Encoder.create(exported["onnx_fp32"])
    with pytest.raises(ValueError, match="threshold"):
        sdk.Encoder.create(exported["onnx_fp32"], threshold=5.0)
    p = formats.to_onnx(tiny_encoder, tmp_path / "s.onnx", tiny_info.replace(kind="stylizer"))
    with pytest.raises(sdk.errors.ModelKindError, match="'stylizer'"):
        sdk.Encoder.create(p)


def test_gallery_works_with_a_1d_encoder(tf, tmp_path):
    """One-shot enrollment, identification with unknown rejection, save/load and
    model-mismatch refusal for signals, through the same sdk.Gallery as faces."""
    import sdk
    from export import formats
    from export.encoders import build_encoder

    model = build_encoder((20, 6), filters=(8, 16), kernel_size=3, embedding_size=8)
    path = formats.to_onnx(model, tmp_path / "sig.onnx", _info(model, "sig"))
    rng = np.random.default_rng(4)
    alice, bob, stranger = (rng.normal(size=(20, 6)).astype(np.float32) for _ in range(3))
    with sdk.Encoder.create(path, threshold=1e-4) as enc:
        g = sdk.Gallery(enc)
        assert g.enroll("alice", alice) == 1
        assert g.enroll("bob", np.stack([bob, bob + 1e-3])) == 2
        assert g.identify(alice).name == "alice"
        assert g.identify(bob + 5e-4).name == "bob"
        assert g.identify(stranger).name is None            # unknown above τ
        assert g.verify("alice", alice).is_match
        saved = g.save(tmp_path / "g.npz")
        again = sdk.Gallery.load(saved, enc)
        assert again.names == ["alice", "bob"] and again.identify(alice).name == "alice"
    other = build_encoder((20, 6), filters=(8, 16), kernel_size=3, embedding_size=8)
    other_path = formats.to_onnx(other, tmp_path / "other.onnx", _info(other, "sig"))
    with sdk.Encoder.create(other_path) as enc2:
        with pytest.raises(sdk.errors.GalleryModelMismatchError):
            sdk.Gallery.load(saved, enc2)


def test_encoder_refuses_non_finite_and_ragged_input(tf, tmp_path):
    """NaN or inf in a sample is refused: an int8 model quantises them to some finite value,
    so garbage came out as an embedding that matched other garbage and could be enrolled;
    samples of different shapes at enrollment are an InputShapeError, not numpy's."""
    import sdk
    from export import formats
    from export.encoders import build_encoder

    model = build_encoder((20, 6), filters=(8, 16), kernel_size=3, embedding_size=8)
    calib = [np.random.default_rng(k).normal(size=(1, 20, 6)).astype(np.float32)
             for k in range(16)]
    paths = [formats.to_onnx(model, tmp_path / "sig.onnx", _info(model, "sig")),
             formats.to_tflite(model, tmp_path / "sig.tflite", _info(model, "sig"),
                               precision="int8", calibration=calib)]
    x = np.zeros((20, 6), np.float32)
    for path in paths:
        with sdk.Encoder.create(path) as enc:
            assert np.all(np.isfinite(enc.embed(x)))
            for bad in (np.nan, np.inf, -np.inf):
                y = x.copy()
                y[3, 2] = bad
                with pytest.raises(sdk.errors.InputError, match="NaN or infinite"):
                    enc.embed(y)
                with pytest.raises(sdk.errors.InputError, match="NaN or infinite"):
                    enc.embed(np.stack([x, y]))
            g = sdk.Gallery(enc)
            with pytest.raises(sdk.errors.InputShapeError, match="differ in shape"):
                g.enroll("a", [x, x[:-1]])
            assert len(g) == 0


def test_nd_gallery_check_counts_rejected_probes(tf, tmp_path):
    """The example's gallery numbers: a probe of nobody enrolled counts as rejected."""
    import sdk
    from export import formats
    from export.encoders import build_encoder
    from export.nd.cli import _gallery_check

    model = build_encoder((20, 6), filters=(8, 16), kernel_size=3, embedding_size=8)
    path = formats.to_onnx(model, tmp_path / "sig.onnx", _info(model, "sig"))
    rng = np.random.default_rng(5)
    a, b = (rng.normal(size=(20, 6)).astype(np.float32) for _ in range(2))
    far = rng.normal(size=(2, 20, 6)).astype(np.float32)
    # identity 0: a enrolled, a + tiny noise found; identity 1: b enrolled, two unrelated
    # signals as its other samples, far above the tiny τ: rejected, not misnamed
    x = np.stack([a, a + 1e-4, b, far[0], far[1]])
    y = np.array([0, 0, 1, 1, 1])
    with sdk.Encoder.create(path, threshold=1e-4) as enc:
        out = _gallery_check(enc, x, y)
    assert out == {"gallery_rank1_at_threshold": 1 / 3, "gallery_unknown_rate": 2 / 3}


def test_nd_refuses_bad_settings_and_a_folder_made_with_others(tmp_path, capsys):
    """Wrong numbers fail before any work; a folder keeps the settings its split came from."""
    import argparse

    from export.nd import cli

    assert cli.main(["speech", "--identities", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--identities must be at least 8" in capsys.readouterr().err
    assert cli.main(["clips", "--images", str(tmp_path / "none"), "--out",
                     str(tmp_path / "b")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["speech", "--samples", "1", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()

    def args(seed):
        return argparse.Namespace(out=tmp_path / "run", identities=48, samples=12, seed=seed)

    cli._check_run_folder("speech", args(0))          # records the settings
    cli._check_run_folder("speech", args(0))          # the same: fine
    with pytest.raises(cli.RunMismatchError, match="seed 0 -> 1"):
        cli._check_run_folder("speech", args(1))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "data.npz").write_bytes(b"")
    with pytest.raises(cli.RunMismatchError, match="without settings"):
        cli._check_run_folder("speech", argparse.Namespace(
            out=tmp_path / "old", identities=48, samples=12, seed=0))
