"""Face runtime: FaceVerifier, Gallery and the door-lock app.

Mechanics are tested with the tiny 16x16 encoder of ``conftest.exported`` (it
is untrained, so these tests check plumbing, never recognition accuracy) and
the real YuNet detector on real photos from ../shared (skipped when absent).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import sdk
from sdk.errors import (ClosedError, GalleryError, GalleryModelMismatchError, InputDtypeError,
                        InputError, InputShapeError, MetadataError, ModelKindError,
                        ModelNotFoundError, MultipleFacesError, NoFaceError, OtherExportError,
                        ThresholdUnavailableError, UnknownPersonError)
from sdk.faces import verifier as verifier_module
from sdk.faces.gallery import GALLERY_VERSION, Gallery
from sdk.faces.verifier import FaceVerifier, FaceVerifierOptions, VerifyResult

from conftest import load_app, shared_path


# --- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos():
    """Two photos of ORL person s1, one of s2 (BGR, as cv2.imread gives)."""
    root = shared_path("data", "faces", "att-orl")
    read = lambda *p: cv2.imread(str(root.joinpath(*p)))  # noqa: E731
    return {"a1": read("s1", "1.png"), "a2": read("s1", "2.png"), "b1": read("s2", "1.png")}


@pytest.fixture()
def verifier(exported, yunet):
    with FaceVerifier.create(exported["onnx_fp32"], yunet) as v:
        yield v


def _with_contract(src: Path, dst: Path, **changes) -> Path:
    """A copy of an ONNX model with its contract changed."""
    from export.formats import set_onnx_metadata

    shutil.copyfile(src, dst)
    with sdk.load_model(src) as m:
        info = m.info
    set_onnx_metadata(dst, info.replace(**changes))
    return dst


BLANK = np.full((120, 160, 3), 127, np.uint8)


# --- FaceVerifier ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"])
def test_embed_every_format(exported, yunet, photos, fmt):
    with FaceVerifier.create(exported[fmt], yunet) as v:
        assert v.input_size == (16, 16)  # from the model's input spec, not 112
        e = v.embed(photos["a1"])
        assert e.shape == (8,) and e.dtype == np.float32 and np.all(np.isfinite(e))
        assert abs(np.linalg.norm(e) - 1.0) < 1e-5  # unit length, int8 outputs included
        assert v.model_id == v.info.model_id and v.threshold == pytest.approx(0.8)


def test_embed_aligned_equals_manual_preprocessing(verifier, photos):
    face = verifier.detect(photos["a1"])[0]
    aligned = verifier.align(photos["a1"], face)
    assert aligned.shape == (112, 112, 3)
    x = cv2.resize(aligned, (16, 16), interpolation=cv2.INTER_AREA)[..., ::-1]
    expected = verifier.model(x[None].astype(np.float32))[0]  # contract: RGB, 0..255, mean 0, std 1
    np.testing.assert_allclose(verifier.embed_aligned(aligned), expected, atol=1e-6)
    np.testing.assert_allclose(verifier.embed(photos["a1"]), expected, atol=1e-6)


def test_preprocessing_read_from_the_contract(exported, yunet, photos, tmp_path):
    from sdk.contract import Preprocessing

    pre = Preprocessing(channel_order="BGR", pixel_range=(0, 1), mean=(0.5,), std=(0.25,))
    path = _with_contract(exported["onnx_fp32"], tmp_path / "bgr.onnx", preprocessing=pre)
    with FaceVerifier.create(path, yunet) as v:
        aligned = v.align(photos["a1"], v.detect(photos["a1"])[0])
        x = cv2.resize(aligned, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
        expected = v.model(((x / 255.0 - 0.5) / 0.25)[None])[0]
        np.testing.assert_allclose(v.embed_aligned(aligned), expected, atol=1e-5)


def test_batch_embedding_matches_single(verifier, photos):
    batch = verifier.embed_batch([photos["a1"], photos["a2"], photos["b1"]])
    assert batch.shape == (3, 8)
    for row, key in zip(batch, ("a1", "a2", "b1")):
        np.testing.assert_allclose(row, verifier.embed(photos[key]), atol=1e-5)
    aligned = np.stack([verifier.align(photos[k], verifier.detect(photos[k])[0])
                        for k in ("a1", "b1")])
    np.testing.assert_allclose(verifier.embed_aligned(aligned), batch[[0, 2]], atol=1e-5)
    assert verifier.embed_batch([]).shape == (0, 8)


def test_distance_and_verify(verifier, photos):
    e1, e2 = verifier.embed(photos["a1"]), verifier.embed(photos["b1"])
    assert verifier.distance(e1, e2) == pytest.approx(float(np.sum((e1 - e2) ** 2)), rel=1e-5)
    assert verifier.distance(e1, np.stack([e1, e2])).shape == (2,)
    same = verifier.verify(photos["a1"], photos["a1"])
    assert isinstance(same, VerifyResult)
    assert same.is_match and same.distance < 1e-6 and same.threshold == pytest.approx(0.8)
    other = verifier.verify(photos["a1"], photos["b1"])
    assert other.distance == pytest.approx(verifier.distance(e1, e2), abs=1e-5)
    assert other.is_match == (other.distance <= 0.8)


def test_threshold_override(exported, yunet, photos):
    with FaceVerifier.create(exported["onnx_fp32"], yunet, threshold=1e-9) as v:
        assert v.threshold == 1e-9
        result = v.verify(photos["a1"], photos["b1"])
        assert not result.is_match and result.threshold == 1e-9


def test_no_face(verifier, photos):
    with pytest.raises(NoFaceError):
        verifier.embed(BLANK)
    with pytest.raises(NoFaceError, match="image_b"):
        verifier.verify(photos["a1"], BLANK)
    with pytest.raises(NoFaceError, match="image 1"):
        verifier.embed_batch([photos["a1"], BLANK])


def test_bad_inputs(verifier):
    with pytest.raises(InputDtypeError):
        verifier.embed(BLANK.astype(np.float32))
    with pytest.raises(InputDtypeError):
        verifier.embed([[1, 2, 3]])
    with pytest.raises(InputDtypeError, match="cv2.imread returns None"):  # a missing file
        verifier.embed(None)
    with pytest.raises(InputShapeError):
        verifier.embed(np.zeros((64, 64, 5), np.uint8))
    with pytest.raises(InputShapeError):
        verifier.embed_aligned(np.zeros((16, 16, 3), np.uint8))  # not the 112 template
    with pytest.raises(InputDtypeError):
        verifier.embed_aligned(np.zeros((112, 112, 3), np.float32))
    with pytest.raises(InputShapeError):
        verifier.distance(np.zeros(8), np.zeros(4))
    # compare() judges embeddings against τ, which is defined on unit vectors: a zero or
    # scaled pair sat at d ≈ 0 and matched
    e = verifier.embed_aligned(np.zeros((112, 112, 3), np.uint8))
    assert verifier.compare(e, e).is_match
    for a, b in ((np.zeros(8), np.zeros(8)), (e * 0.01, e * 0.02), (e, np.full(8, np.nan))):
        with pytest.raises(InputError, match="unit vector"):
            verifier.compare(a, b)
    with pytest.raises(InputShapeError, match=r"e2: expected \(8,\)"):
        verifier.compare(e, np.stack([e, e]))
    # grey and BGRA images are converted, but only after the same size check as BGR ones
    # (an empty array would otherwise reach OpenCV and raise its own error)
    for tiny in (np.zeros((0, 0), np.uint8), np.zeros((3, 3), np.uint8),
                 np.zeros((3, 3, 4), np.uint8), np.zeros((3, 3, 3), np.uint8)):
        with pytest.raises(InputShapeError, match="too small"):
            verifier.detect(tiny)


def test_wrong_kind_and_missing_threshold(exported, yunet, tmp_path):
    stylizer = _with_contract(exported["onnx_fp32"], tmp_path / "s.onnx", kind="stylizer")
    with pytest.raises(ModelKindError, match="face_encoder"):
        FaceVerifier.create(stylizer, yunet)
    bare = _with_contract(exported["onnx_fp32"], tmp_path / "t.onnx",
                          output={"embedding_size": 8, "metric": "squared_l2"})
    with pytest.raises(ThresholdUnavailableError, match="threshold") as err:
        FaceVerifier.create(bare, yunet)
    assert err.value.operating_point is None
    with FaceVerifier.create(bare, yunet, threshold=0.5) as v:  # an explicit τ is enough
        assert v.threshold == 0.5


def test_operating_points_from_the_contract(exported, yunet, tmp_path):
    """A named operating point picks its τ from the file; an absent name is a
    MetadataError naming the ones the file has, found when the verifier is built."""
    with sdk.load_model(exported["onnx_fp32"]) as m:
        output = dict(m.info.output)
    path = _with_contract(exported["onnx_fp32"], tmp_path / "op.onnx", output={
        **output, "operating_points": {"far_1e-3": 0.05, "far_1e-2": 0.2}})
    with sdk.load_model(path) as m:
        assert m.info.operating_points == {"far_1e-3": 0.05, "far_1e-2": 0.2}
    with FaceVerifier.create(path, yunet, operating_point="far_1e-3") as v:
        assert v.threshold == pytest.approx(0.05)
    with FaceVerifier.create(path, yunet) as v:                # default: the best-accuracy τ
        assert v.threshold == pytest.approx(output["threshold"])
    with pytest.raises(MetadataError, match=r"far_1e-4.*far_1e-2, far_1e-3") as err:
        FaceVerifier.create(path, yunet, operating_point="far_1e-4")
    # typed, with the fields an app needs to word its own remedy; Python's in the message
    assert isinstance(err.value, ThresholdUnavailableError) and "threshold=" in str(err.value)
    assert err.value.operating_point == "far_1e-4"
    assert err.value.available == ("far_1e-2", "far_1e-3") and err.value.source == str(path)
    with pytest.raises(MetadataError, match="it has: none"):
        FaceVerifier.create(exported["onnx_fp32"], yunet, operating_point="far_1e-3")


@pytest.mark.parametrize("pre", [{"layout": "NCHW"}, {"channel_order": "GRAY"},
                                 {"channel_order": "NONE"}, {"mean": (1.0, 2.0)}])
def test_contract_that_does_not_fit_the_input(exported, yunet, tmp_path, pre):
    from sdk.contract import Preprocessing

    path = _with_contract(exported["onnx_fp32"], tmp_path / "m.onnx",
                          preprocessing=Preprocessing(**pre))
    with pytest.raises(MetadataError):
        FaceVerifier.create(path, yunet)


def test_missing_model(monkeypatch, tmp_path, yunet):
    monkeypatch.delenv(verifier_module.FACE_MODEL_ENV, raising=False)
    monkeypatch.setattr(verifier_module, "DEFAULT_FACE_MODEL", tmp_path / "absent.onnx")
    with pytest.raises(ModelNotFoundError, match="export faces release"):
        FaceVerifier.create(detector=yunet)
    with pytest.raises(ModelNotFoundError, match="nope.onnx"):
        FaceVerifier.create(tmp_path / "nope.onnx", yunet)
    monkeypatch.setenv(verifier_module.FACE_MODEL_ENV, str(tmp_path / "env.onnx"))
    with pytest.raises(ModelNotFoundError, match="EDGE_SDK_FACE_MODEL"):
        FaceVerifier.create(detector=yunet)


def test_a_foreign_detector_model_is_refused_where_it_is_named(exported, yunet):
    """OpenCV loads any ONNX graph as YuNet and failed with its own error on the first
    image; the detector is now tried once at creation."""
    with pytest.raises(sdk.errors.ModelFormatError, match="not a YuNet face detector"):
        sdk.FaceDetector.create(exported["onnx_fp32"])
    with pytest.raises(sdk.errors.ModelFormatError, match="not a YuNet face detector"):
        FaceVerifier.create(exported["onnx_fp32"], exported["onnx_fp32"])
    from sdk import load_model
    with load_model(exported["onnx_fp32"]) as model:
        with pytest.raises(TypeError, match="FaceDetector"):
            FaceVerifier(model, None)


def test_default_model_from_env(monkeypatch, exported, yunet):
    monkeypatch.setenv(verifier_module.FACE_MODEL_ENV, str(exported["onnx_fp32"]))
    with FaceVerifier.create_from_options(
            FaceVerifierOptions(detector=sdk.FaceDetectorOptions(model_path=yunet))) as v:
        assert v.model.path == Path(exported["onnx_fp32"])


@pytest.mark.parametrize("kwargs", [{"threshold": 0.0}, {"threshold": 4.5}, {"threshold": 4.0},
                                    {"threshold": float("nan")}, {"batch_size": 0},
                                    {"threads": 0}, {"detector": "yunet.onnx"},
                                    {"threshold": 0.3, "operating_point": "far_1e-3"},
                                    {"operating_point": 1e-3}])
def test_options_validated(kwargs):
    with pytest.raises((ValueError, TypeError)):
        FaceVerifierOptions(**kwargs)


def test_close_twice_and_use_after_close(exported, yunet, photos):
    v = FaceVerifier.create(exported["onnx_fp32"], yunet)
    v.close()
    v.close()
    assert "closed" in repr(v)
    with pytest.raises(ClosedError, match="closed"):
        v.embed(photos["a1"])


# --- Gallery --------------------------------------------------------------------


def test_enroll_identify_verify(verifier, photos):
    g = Gallery(verifier)
    assert g.enroll("alice", [photos["a1"], photos["a2"]]) == 2
    assert g.enroll("bob", photos["b1"]) == 1
    assert g.enroll(" bob ", photos["b1"]) == 2  # names are stripped; photos add up
    assert g.names == ["alice", "bob"] and len(g) == 2 and "alice" in g and "carol" not in g
    assert g.counts() == {"alice": 2, "bob": 2}
    r = g.identify(photos["a2"], top_k=5)
    assert r.name == "alice" and r.is_known and r.distance < 1e-6
    assert [c.name for c in r.candidates] == ["alice", "bob"]
    assert r.candidates[0].distance <= r.candidates[1].distance
    v = g.verify("bob", photos["b1"])
    assert v.is_match and v.distance < 1e-6
    g.remove("bob")
    assert g.names == ["alice"]


def test_identify_unknown_above_threshold(exported, yunet, photos):
    with FaceVerifier.create(exported["onnx_fp32"], yunet, threshold=1e-9) as v:
        g = Gallery(v)
        g.enroll("alice", photos["a1"])
        r = g.identify(photos["b1"])
        assert r.name is None and not r.is_known and r.label == "unknown"
        assert r.distance > 1e-9 and r.candidates[0].name == "alice"
        assert not g.verify("alice", photos["b1"]).is_match


def test_nearest_over_all_embeddings(verifier):
    g = Gallery(verifier)
    e = np.eye(8, dtype=np.float32)
    g.enroll_embeddings("a", e[:2])       # two quite different photos of a
    g.enroll_embeddings("b", e[2])
    r = g.identify_embedding(e[1])
    assert r.name == "a" and r.distance == 0.0  # the mean of e0, e1 would be 0.5 away
    assert g.distances(e[2]) == {"a": 2.0, "b": 0.0}


def test_enrollment_refuses_no_face_and_several_faces(verifier, photos):
    g = Gallery(verifier)
    # the second of two photos: said 1-based for people, with its 0-based index for code
    with pytest.raises(NoFaceError, match=r"'alice' photo #2 of 2 \(index 1\): no face") as err:
        g.enroll("alice", [photos["a1"], BLANK])
    assert err.value.index == 1 and err.value.reason.startswith("no face found")
    two = np.hstack([photos["a1"], photos["b1"]])  # two ORL faces side by side
    with pytest.raises(MultipleFacesError, match=r"photo #1 of 2 \(index 0\): 2 faces") as err:
        g.enroll("alice", [two, photos["a2"]])
    assert err.value.index == 0 and err.value.reason.startswith("2 faces found")
    assert len(g) == 0  # a failed enrollment adds nothing
    assert NoFaceError("elsewhere").index is None  # not about an enrolment photo


def test_enrollment_refuses_group_photo(verifier):
    couple = cv2.imread(str(shared_path("data", "faces", "deepface-pairs", "couple.jpg")))
    with pytest.raises(MultipleFacesError):
        Gallery(verifier).enroll("pair", couple)


def test_gallery_errors(verifier, photos):
    g = Gallery(verifier)
    with pytest.raises(GalleryError, match="empty"):
        g.identify(photos["a1"])
    for call in (lambda: g.verify("zed", photos["a1"]), lambda: g.remove("zed"),
                 lambda: g.count("zed")):
        with pytest.raises(UnknownPersonError, match="zed"):
            call()
    unit = np.full(8, 8 ** -0.5, np.float32)
    for name in ("", "   ", "a\nb", 7, "a\x7fb", "a\x85b", "eve\u202ecilA"):
        with pytest.raises(GalleryError):
            g.enroll_embeddings(name, unit)
    # one person however the keyboard spells "ë" (one code point, or e + a combining mark)
    g.enroll_embeddings("Zo\u00eb", unit)
    assert g.enroll_embeddings("Zoe\u0308", unit) == 2 and g.names == ["Zo\u00eb"]
    assert g.count("Zoe\u0308") == 2
    g.remove("Zoe\u0308")
    with pytest.raises(UnknownPersonError):
        g.remove(["a"])                     # not a name: the typed error, not a TypeError
    assert len(g) == 0
    # a Persian name keeps its zero-width non-joiner (a format character, not a control)
    assert g.enroll_embeddings("\u0645\u06cc\u200c\u0631\u0648\u062f", unit) == 1
    g.remove("\u0645\u06cc\u200c\u0631\u0648\u062f")
    with pytest.raises(GalleryError, match="no photos"):
        g.enroll("alice", [])
    with pytest.raises(InputDtypeError, match="cv2.imread returns None"):  # a missing photo
        g.enroll("alice", None)
    with pytest.raises(InputDtypeError, match="a list of them"):
        g.enroll("alice", 7)
    with pytest.raises(InputShapeError):
        g.enroll_embeddings("a", np.ones((2, 4), np.float32))
    with pytest.raises(InputDtypeError):
        g.enroll_embeddings("a", np.ones(8, np.int64))
    with pytest.raises(GalleryError, match="NaN"):
        g.enroll_embeddings("a", np.full(8, np.nan, np.float32))
    with pytest.raises(InputError, match="unit vectors"):  # d and τ are defined on those
        g.enroll_embeddings("a", np.ones(8, np.float32))
    assert len(g) == 0
    g.enroll_embeddings("a", unit)
    with pytest.raises(ValueError, match="top_k"):
        g.identify_embedding(np.ones(8, np.float32), top_k=0)
    with pytest.raises(InputShapeError):
        g.identify_embedding(np.ones(4, np.float32))
    with pytest.raises(TypeError):
        Gallery("not a verifier")
    with pytest.raises(TypeError, match="FaceVerifier or an Encoder"):
        Gallery.load("gallery.npz", "not a verifier")


def test_save_load_round_trip(verifier, photos, tmp_path):
    g = Gallery(verifier)
    g.enroll("alice", [photos["a1"], photos["a2"]])
    g.enroll("bøb", photos["b1"])
    path = g.save(tmp_path / "sub" / "g.npz")
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert set(z.files) == {"header", "embeddings", "labels"}  # no images
        assert z["embeddings"].shape == (3, 8)
        header = json.loads(str(z["header"][()]))
    assert header["version"] == GALLERY_VERSION and header["model_id"] == verifier.model_id
    loaded = Gallery.load(path, verifier)
    assert loaded.names == ["alice", "bøb"] and loaded.counts() == {"alice": 2, "bøb": 1}
    for name in loaded.names:
        np.testing.assert_array_equal(loaded._embeddings_of(name), g._embeddings_of(name))
    assert loaded.identify(photos["b1"]).name == "bøb"
    assert [p.name for p in path.parent.iterdir()] == ["g.npz"]  # no temporary left over
    Gallery(verifier).save(tmp_path / "empty.npz")
    assert len(Gallery.load(tmp_path / "empty.npz", verifier)) == 0


def test_save_is_atomic(verifier, photos, tmp_path, monkeypatch):
    g = Gallery(verifier)
    g.enroll("alice", photos["a1"])
    path = g.save(tmp_path / "g.npz")
    before = path.read_bytes()
    g.enroll("bob", photos["b1"])

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        g.save(path)
    assert path.read_bytes() == before  # the old gallery is intact
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # and no partial file is left


def test_load_refuses_another_model(verifier, exported, yunet, photos, tmp_path):
    g = Gallery(verifier)
    g.enroll("alice", photos["a1"])
    path = g.save(tmp_path / "g.npz")
    other = _with_contract(exported["onnx_fp32"], tmp_path / "other.onnx",
                           source_hash="f" * 64, name="another-encoder")
    with FaceVerifier.create(other, yunet) as v2:
        with pytest.raises(GalleryModelMismatchError, match="another-encoder") as err:
            Gallery.load(path, v2)
        assert verifier.model_id in str(err.value) and "enroll" in str(err.value)
    # the int8 export of the same weights: refused unless asked for
    with FaceVerifier.create(exported["onnx_int8"], yunet) as v8:
        with pytest.raises(GalleryModelMismatchError, match="accept_other_export") as err:
            Gallery.load(path, v8)
        assert isinstance(err.value, OtherExportError) and err.value.path == str(path)
        assert err.value.enrolled == ("fp32", "onnxruntime")
        assert err.value.loaded == ("int8", "onnxruntime")
        assert Gallery.load(path, v8, accept_other_export=True).names == ["alice"]


def _header(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["header"][()]))


def test_a_gallery_never_mixes_exports(verifier, exported, yunet, photos, tmp_path):
    """accept_other_export reads a gallery of another export for identification; enrolling
    into it is refused (its header could name only one export), and saving it (after a
    removal) keeps the export its embeddings came from."""
    g = Gallery(verifier)
    g.enroll("alice", photos["a1"])
    g.enroll("bob", photos["b1"])
    path = g.save(tmp_path / "g.npz")
    before = path.read_bytes()
    with FaceVerifier.create(exported["tflite_fp32"], yunet) as other:
        other_export = (other.info.precision, other.model.backend)
        assert other_export != g.export
        loaded = Gallery.load(path, other, accept_other_export=True)
        assert loaded.export == g.export == ("fp32", "onnxruntime")
        assert loaded.identify(photos["a1"]).name == "alice"     # identifying: allowed
        for enroll in (lambda: loaded.enroll("carl", photos["a2"]),
                       lambda: loaded.enroll_embeddings("carl", np.eye(8, dtype=np.float32)[0]),
                       loaded.check_can_enroll):
            with pytest.raises(GalleryModelMismatchError, match="never mixes exports") as err:
                enroll()
            assert "fp32 onnxruntime" in str(err.value)
        assert loaded.names == ["alice", "bob"]
        assert path.read_bytes() == before
        loaded.remove("bob")                                       # removing: allowed
        loaded.save(path)
        header = _header(path)
        assert (header["precision"], header["backend"]) == ("fp32", "onnxruntime")
        assert header["names"] == ["alice"]
        # emptied, it holds nothing of the other export: it takes the verifier's
        loaded.remove("alice")
        assert loaded.export == other_export                       # at once, not at enrolment
        assert loaded.enroll("carl", photos["a2"]) == 1 and loaded.export == other_export
        loaded.save(tmp_path / "carl.npz")
        header = _header(tmp_path / "carl.npz")
        assert (header["precision"], header["backend"]) == other_export
    assert Gallery.load(path, verifier).names == ["alice"]       # its own export reads it


def test_alignment_fallback_is_the_least_squares_similarity():
    """When LMEDS gives up, the fit on all five landmarks still aligns; landmarks that
    cannot be aligned get a typed error, not OpenCV's."""
    from sdk.errors import FaceError
    from sdk.faces.detector import ARCFACE_TEMPLATE, _similarity_least_squares, align_face

    angle, scale, shift = np.deg2rad(25), 1.7, np.array([40.0, -12.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE_TEMPLATE @ rot.T) * scale + shift      # the template moved, turned, grown
    matrix = _similarity_least_squares(src.astype(np.float32), ARCFACE_TEMPLATE)
    back = src @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(back, ARCFACE_TEMPLATE, atol=1e-3)
    # and it is what OpenCV's robust fit finds on such points
    cv_matrix, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), ARCFACE_TEMPLATE,
                                               method=cv2.LMEDS)
    np.testing.assert_allclose(matrix, cv_matrix, atol=1e-3)
    image = np.zeros((200, 200, 3), np.uint8)
    for bad in (np.zeros((5, 2)), np.full((5, 2), np.nan)):
        with pytest.raises(FaceError, match="degenerate"):
            align_face(image, bad)


def _write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_load_refuses_corrupt_files(verifier, photos, tmp_path):
    g = Gallery(verifier)
    g.enroll("alice", photos["a1"])
    good = g.save(tmp_path / "good.npz")
    data = good.read_bytes()
    with np.load(good) as z:
        header = json.loads(str(z["header"][()]))
        emb, labels = z["embeddings"], z["labels"]

    cases = {
        "random.npz": os.urandom(300),
        "truncated.npz": data[: len(data) // 2],
        "empty.npz": b"",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    _write_npz(tmp_path / "pickled.npz", header=np.array(json.dumps(header)),
               embeddings=np.array([{"evil": 1}], dtype=object), labels=labels)
    _write_npz(tmp_path / "nolabels.npz", header=np.array(json.dumps(header)), embeddings=emb)
    _write_npz(tmp_path / "badlabel.npz", header=np.array(json.dumps(header)), embeddings=emb,
               labels=labels + 5)
    _write_npz(tmp_path / "notjson.npz", header=np.array("{oops"), embeddings=emb, labels=labels)
    _write_npz(tmp_path / "nan.npz", header=np.array(json.dumps(header)),
               embeddings=emb * np.nan, labels=labels)
    np.save(tmp_path / "bare.npy", emb)  # a single array: np.load gives no archive
    # rows that are not unit vectors: zero rows sit at d = 1 from every probe, under τ
    _write_npz(tmp_path / "zeros.npz", header=np.array(json.dumps(header)),
               embeddings=np.zeros_like(emb), labels=labels)
    _write_npz(tmp_path / "scaled.npz", header=np.array(json.dumps(header)),
               embeddings=emb * 5, labels=labels)
    # a name enrol() never makes could be neither found nor removed
    _write_npz(tmp_path / "spacename.npz", header=np.array(json.dumps(
        {**header, "names": [" alice"]})), embeddings=emb, labels=labels)
    # a compressed member whose data is damaged (zlib's own error, not numpy's)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.array(json.dumps(header)),
                        embeddings=np.tile(emb, (50, 1)), labels=np.zeros(50 * len(emb), int))
    blob = bytearray(buffer.getvalue())
    start = blob.find(b"embeddings.npy") + 200
    blob[start:start + 64] = bytes(64)
    (tmp_path / "zlib.npz").write_bytes(bytes(blob))
    for name in ["random.npz", "truncated.npz", "empty.npz", "pickled.npz", "nolabels.npz",
                 "badlabel.npz", "notjson.npz", "nan.npz", "bare.npy", "zeros.npz",
                 "scaled.npz", "spacename.npz", "zlib.npz"]:
        with pytest.raises(GalleryError) as err:
            Gallery.load(tmp_path / name, verifier)
        assert not isinstance(err.value, GalleryModelMismatchError), name
        # numpy's advice to load an unreadable file "unsafely" with allow_pickle is never
        # passed on: a biometric file must not be unpickled
        message = str(err.value)
        assert str(tmp_path / name) in message and "enroll the people again" in message
        advice = message.replace(str(tmp_path / name), "").lower()
        assert "pickle" not in advice and "unsafe" not in advice, message
    for name in ["random.npz", "truncated.npz", "empty.npz"]:
        with pytest.raises(GalleryError, match="not a gallery file, or a corrupt one"):
            Gallery.load(tmp_path / name, verifier)
    with pytest.raises(GalleryError, match="holds Python objects"):
        Gallery.load(tmp_path / "pickled.npz", verifier)
    future = _write_npz(tmp_path / "v99.npz", embeddings=emb, labels=labels,
                        header=np.array(json.dumps({**header, "version": 99})))
    with pytest.raises(GalleryError, match="version 99"):
        Gallery.load(future, verifier)
    with pytest.raises(GalleryError, match="not found"):
        Gallery.load(tmp_path / "absent.npz", verifier)
    assert zipfile.is_zipfile(good)  # the good file stays loadable
    assert Gallery.load(good, verifier).names == ["alice"]
    # a name written decomposed (before names were NFC-normalised) is found as typed either way
    nfd = _write_npz(tmp_path / "nfd.npz", embeddings=emb, labels=labels,
                     header=np.array(json.dumps({**header, "names": ["Zoe\u0308"]})))
    loaded = Gallery.load(nfd, verifier)
    assert loaded.names == ["Zo\u00eb"] and loaded.count("Zoe\u0308") == len(emb)


def test_save_keeps_permissions_and_symlinks(verifier, photos, tmp_path):
    g = Gallery(verifier)
    g.enroll("alice", photos["a1"])
    path = g.save(tmp_path / "g.npz")
    os.chmod(path, 0o644)                      # e.g. read by a service of another user
    g.enroll("bob", photos["b1"])
    assert g.save(path) == path and (path.stat().st_mode & 0o777) == 0o644
    link = tmp_path / "current.npz"
    link.symlink_to(path)
    g.remove("bob")
    g.save(link)
    assert link.is_symlink() and Gallery.load(path, verifier).names == ["alice"]
    with pytest.raises(GalleryError, match="is a folder"):
        g.save(tmp_path)
    # a probe must be a unit vector like the gallery's: a zero one is d = 1 from everyone
    with pytest.raises(InputError, match="unit vector"):
        g.identify_embedding(np.zeros(verifier.embedding_size, np.float32))


# --- door-lock app ----------------------------------------------------------------


@pytest.fixture()
def door(tmp_path, photos):
    """A folder the lock watches: alice again, bob, a blank wall, an unreadable file."""
    folder = tmp_path / "door"
    folder.mkdir()
    cv2.imwrite(str(folder / "1_alice.png"), photos["a1"])
    cv2.imwrite(str(folder / "2_bob.png"), photos["b1"])
    cv2.imwrite(str(folder / "3_wall.png"), BLANK)
    (folder / "4_broken.jpg").write_bytes(b"not an image")
    enroll = tmp_path / "alice.png"
    cv2.imwrite(str(enroll), photos["a1"])
    return folder, enroll


def test_door_lock_suggests_the_stricter_point_for_several_photos(exported, yunet, door,
                                                                   tmp_path, capsys):
    """Three photos per person give a stranger about three chances at far_1e-4: enrolment
    says so and names far_1e-5 when the file has it (never switches by itself)."""
    door_lock = load_app("door_lock")
    _, alice = door
    with sdk.load_model(exported["onnx_fp32"]) as m:
        output = dict(m.info.output)
    model = _with_contract(exported["onnx_fp32"], tmp_path / "op.onnx", output={
        **output, "operating_points": {"far_1e-4": 1.9, "far_1e-5": 1.8}})
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(model), "--yunet", str(yunet)]
    assert door_lock.main(["enroll", "alice", str(alice), *common]) == 0
    out = capsys.readouterr().out
    assert "enrol 3 or more" in out and "far_1e-5" not in out
    assert door_lock.main(["enroll", "alice", str(alice), str(alice), *common]) == 0
    out = capsys.readouterr().out
    assert "about 3 chances" in out and "--operating-point far_1e-5" in out
    # asked for another point or an explicit τ: no such tip
    for other in (["--operating-point", "far_1e-5"], ["--operating-point", "model"],
                  ["--threshold", "1.5"]):
        assert door_lock.main(["enroll", "alice", str(alice), *common, *other]) == 0
        assert "chances" not in capsys.readouterr().out
    # someone with one photo: the door-wide τ would refuse them more often, no tip
    assert door_lock.main(["enroll", "carol", str(alice), *common]) == 0
    assert door_lock.main(["enroll", "alice", str(alice), *common]) == 0
    assert "chances" not in capsys.readouterr().out
    plain = _with_contract(exported["onnx_fp32"], tmp_path / "plain.onnx", output={
        **output, "operating_points": {"far_1e-4": 1.9}})
    assert door_lock.main(["enroll", "bob", str(alice), str(alice), str(alice),
                           "--gallery", str(tmp_path / "g2.npz"), "--model", str(plain),
                           "--yunet", str(yunet)]) == 0
    assert "chances" not in capsys.readouterr().out


def test_door_lock_end_to_end(exported, yunet, door, tmp_path, capsys):
    door_lock = load_app("door_lock")

    folder, alice = door
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(alice), *common]) == 0
    assert "tip: " in capsys.readouterr().out          # one photo: suggest enrolling more
    assert door_lock.main(["enroll", "alice", str(alice), str(alice), *common]) == 0
    assert "tip: " not in capsys.readouterr().out      # three in all now
    hook_log = tmp_path / "hook.txt"
    audit = tmp_path / "audit.jsonl"
    status = door_lock.main(["run", "--source", str(folder), "--audit", str(audit), "--hold", "0",
                             "--unlock-cmd", f'echo "$DOOR_NAME" >> "{hook_log}"', *common])
    assert status == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    # the "unlocking" record is written (and synced) before the hook runs
    assert [(r["frame"], r["decision"]) for r in records] == [
        ("1_alice.png", "unlocking"), ("1_alice.png", "unlock"), ("2_bob.png", "deny"),
        ("3_wall.png", "no_face"), ("4_broken.jpg", "error")]
    assert records[1]["name"] == "alice" and records[1]["distance"] < 1e-6
    assert records[2]["name"] is None and records[2]["distance"] > 1e-6
    for r in records:
        assert {"time", "source", "frame", "decision", "name", "distance",
                "threshold"} <= set(r)
        assert r["threshold"] == pytest.approx(1e-6)
    assert hook_log.read_text().split() == ["alice"]
    out = capsys.readouterr().out
    assert "1_alice.png: UNLOCK alice" in out and "summary:" in out
    assert door_lock.main(["list", *common]) == 0
    assert door_lock.main(["remove", "alice", *common]) == 0


@pytest.mark.parametrize("before", ["", "sleep 0.1; "], ids=["as-it-starts", "as-it-runs"])
def test_door_lock_run_stops_cleanly_on_sigterm(before, exported, yunet, door, tmp_path):
    """systemd stops a service with SIGTERM: the lock ends as on Ctrl-C (summary, exit 0)
    and kills a running unlock hook, which in its own session would outlive the lock and
    open the door after it has stopped.  Python's default handler ended the process at
    once (-15, no summary) and the hook opened the door a second later."""
    import subprocess
    import time

    door_lock = load_app("door_lock")
    folder, alice = door
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(alice), *common]) == 0
    opened = tmp_path / "opened"
    # the hook's parent is the lock: it asks the lock to stop, then would open the door
    # 0.1 s later.  At once, the signal often comes while Popen is starting the hook
    # (raised there, it left no process to kill); later, while the lock waits for it
    # (Popen.wait, interrupted, waits 0.25 s more for the child: too long)
    hook = f'{before}kill -TERM $PPID; sleep 0.1; touch "{opened}"'
    app = Path(__file__).resolve().parents[1] / "apps" / "door_lock.py"
    done = subprocess.run([sys.executable, str(app), "run", "--source", str(folder),
                           "--hold", "0", "--unlock-cmd", hook, *common],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "summary:" in done.stdout and "2_bob.png" not in done.stdout
    time.sleep(0.5)  # past the moment the hook would have opened the door
    assert not opened.exists(), done.stdout + done.stderr


def test_report_tables_use_the_door_default():
    """RESULTS_faces.md's door tables show the point the lock really uses."""
    from export.faces.report import DOOR_POINT

    assert load_app("door_lock").DEFAULT_OPERATING_POINT == DOOR_POINT


def test_door_lock_app_errors(exported, yunet, door, tmp_path, photos, capsys):
    door_lock = load_app("door_lock")

    folder, _ = door
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet)]
    cv2.imwrite(str(tmp_path / "a.png"), photos["a1"])
    # the lock's default is the strict far_1e-4 point; this test model has none: an error,
    # not a silent fall back to a looser τ
    assert door_lock.main(["enroll", "x", str(tmp_path / "a.png"), *common]) == 2
    err = capsys.readouterr().err
    # the remedy in the app's options, not the SDK's Python arguments
    assert "no operating point 'far_1e-4'" in err and "--operating-point" in err
    assert "--threshold" in err and "threshold=" not in err
    common += ["--operating-point", "model"]              # the file's own τ, said explicitly
    # every enrolment error names the file, never a photo's index in the call
    two, wall = tmp_path / "two.png", tmp_path / "wall.png"
    cv2.imwrite(str(two), np.hstack([photos["a1"], photos["b1"]]))
    cv2.imwrite(str(wall), BLANK)
    assert door_lock.main(["enroll", "x", str(tmp_path / "a.png"), str(two), *common]) == 2
    err = capsys.readouterr().err
    assert f"door_lock: error: {two}: 2 faces found" in err and "index" not in err
    assert door_lock.main(["enroll", "x", str(wall), str(tmp_path / "a.png"), *common]) == 2
    err = capsys.readouterr().err
    assert f"door_lock: error: {wall}: no face found" in err and "photo #" not in err
    assert "nothing enrolled" in err
    assert not (tmp_path / "g.npz").exists()  # nothing saved
    assert door_lock.main(["run", "--source", str(folder), *common]) == 2  # no gallery yet
    assert "not found" in capsys.readouterr().err
    assert door_lock.main(["enroll", "x", str(tmp_path / "missing.png"), *common]) == 2
    assert door_lock.main(["enroll", "x", str(tmp_path / "a.png"), *common]) == 0
    assert door_lock.main(["run", "--source", str(tmp_path / "nowhere"), *common]) == 2
    assert door_lock.main(["run", "--source", str(folder), "--max-failures", "0", *common]) == 2
    assert door_lock.main(["run", "--source", str(folder), "--model",
                           str(tmp_path / "nomodel.onnx")]) == 2
    capsys.readouterr()
    # an audit log that cannot be opened names the option
    assert door_lock.main(["run", "--source", str(folder), "--audit",
                           str(tmp_path / "no" / "dir" / "a.jsonl"), *common]) == 2
    assert "door_lock: error: --audit " in capsys.readouterr().err
    # a gallery with nobody in it cannot open the door: the lock refuses to start
    assert door_lock.main(["remove", "x", *common]) == 0
    capsys.readouterr()
    assert door_lock.main(["run", "--source", str(folder), *common]) == 2
    assert "nobody enrolled" in capsys.readouterr().err


def test_door_lock_enrolls_from_a_source(exported, yunet, photos, tmp_path, capsys):
    """`enroll NAME --source`: shots of exactly one face, --every frames apart, all or
    nothing, the embeddings the same as enrolling those photos."""
    door_lock = load_app("door_lock")
    frames = tmp_path / "camera"
    frames.mkdir()
    two = np.hstack([photos["a1"], photos["b1"]])
    far = cv2.copyMakeBorder(cv2.resize(photos["a1"], None, fx=0.5, fy=0.5,
                                        interpolation=cv2.INTER_AREA),
                             40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    for name, image in [("0_wall", BLANK), ("0_far", far), ("1_a1", photos["a1"]),
                        ("2_a1", photos["a1"]), ("3_two", two), ("4_a2", photos["a2"]),
                        ("5_b1", photos["b1"])]:
        cv2.imwrite(str(frames / f"{name}.png"), image)
    gallery = tmp_path / "g.npz"
    common = ["--gallery", str(gallery), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--operating-point", "model"]
    assert door_lock.main(["enroll", "alice", "--source", str(frames), "--shots", "2",
                           "--every", "2", *common]) == 0
    out = capsys.readouterr().out
    # the wall has no face; 2_a1 is too soon after the first shot; 3_two shows two people
    assert "0_wall.png: skipped (no face)" in out and "1_a1.png: shot 1/2" in out
    assert "0_far.png: skipped (face " in out and "come closer" in out
    assert "2_a1.png" not in out and "3_two.png: skipped (2 faces)" in out
    assert "4_a2.png: shot 2/2" in out and "5_b1.png" not in out
    with FaceVerifier.create(exported["onnx_fp32"], yunet) as v:
        enrolled = Gallery.load(gallery, v)
        assert enrolled.counts() == {"alice": 2}
        for key in ("a1", "a2"):                      # both shots are those photos' embeddings
            assert enrolled.identify(photos[key]).distance < 1e-6
    # fewer shots than asked before the source ends: an error and the gallery unchanged
    before = gallery.read_bytes()
    assert door_lock.main(["enroll", "bob", "--source", str(frames), "--shots", "3",
                           "--every", "3", *common]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 shots" in err and "4 files looked at: 2 shots, 1 face under --min-face" in err
    assert "3 more passed over, fewer than --every 3 frames after a shot" in err
    assert gallery.read_bytes() == before
    for bad in (["enroll", "bob", str(frames / "5_b1.png"), "--source", str(frames)],
                ["enroll", "bob"], ["enroll", "bob", "--source", str(frames), "--shots", "0"]):
        with pytest.raises(SystemExit):
            door_lock.main(bad + common)


def test_door_lock_enrolls_every_file_of_a_folder(exported, yunet, photos, tmp_path, capsys):
    """A folder's (or an image's) files are photos someone chose: without --every each one
    is considered (--every is a camera's or video's frame sampling), and when too few pass,
    the message says how many files were looked at and why the others were refused."""
    door_lock = load_app("door_lock")
    folder = tmp_path / "ada"
    folder.mkdir()
    for name, image in [("1.png", photos["a1"]), ("2.png", BLANK), ("3.png", photos["a2"]),
                        ("4.png", np.hstack([photos["a1"], photos["b1"]])), ("5.png", BLANK)]:
        cv2.imwrite(str(folder / name), image)
    (folder / "6.jpg").write_bytes(b"not an image")
    gallery = tmp_path / "g.npz"
    common = ["--gallery", str(gallery), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--operating-point", "model"]
    assert door_lock.main(["enroll", "ada", "--source", str(folder), "--shots", "3",
                           *common]) == 2
    out, err = capsys.readouterr()
    assert "1.png: shot 1/3" in out and "3.png: shot 2/3" in out   # 3.png is no frame "too soon"
    assert "2 of 3 shots" in err and "6 files looked at" in err
    assert "2 no face" in err and "1 several faces" in err and "1 unreadable" in err
    assert "passed over" not in err and not gallery.exists()
    assert door_lock.main(["enroll", "ada", "--source", str(folder), "--shots", "2",
                           *common]) == 0
    assert "2 photo(s) added" in capsys.readouterr().out
    # one image as the source: considered, and a shortfall says so
    assert door_lock.main(["enroll", "bob", "--source", str(folder / "1.png"), "--shots", "2",
                           *common]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 shots" in err and "(1 file looked at: 1 shot)" in err
    assert door_lock.main(["enroll", "bob", "--source", str(folder / "3.png"), "--shots", "1",
                           *common]) == 0
    with FaceVerifier.create(exported["onnx_fp32"], yunet) as v:
        assert Gallery.load(gallery, v).counts() == {"ada": 2, "bob": 1}


def test_door_lock_keeps_a_gallery_to_its_export(exported, yunet, photos, tmp_path, capsys):
    """The CLI words the other-export remedy as its option; --accept-other-export reads
    (list, run) a gallery of another export but enroll refuses to add to it, so the file
    stays readable with the export it was made with."""
    door_lock = load_app("door_lock")
    cv2.imwrite(str(tmp_path / "a.png"), photos["a1"])
    cv2.imwrite(str(tmp_path / "b.png"), photos["b1"])
    gallery = tmp_path / "g.npz"
    common = ["--gallery", str(gallery), "--yunet", str(yunet), "--operating-point", "model"]
    onnx = ["--model", str(exported["onnx_fp32"]), *common]
    tflite = ["--model", str(exported["tflite_fp32"]), *common]
    assert door_lock.main(["enroll", "ada", str(tmp_path / "a.png"), *onnx]) == 0
    before = gallery.read_bytes()
    capsys.readouterr()
    assert door_lock.main(["list", *tflite]) == 2
    err = capsys.readouterr().err
    assert "--accept-other-export" in err and "accept_other_export=True" not in err
    assert door_lock.main(["list", "--accept-other-export", *tflite]) == 0
    assert "ada\t1 photo(s)" in capsys.readouterr().out
    for extra in ([], ["--accept-other-export"]):
        assert door_lock.main(["enroll", "carl", str(tmp_path / "b.png"), *extra, *tflite]) == 2
        err = capsys.readouterr().err
        assert "never mixes exports" in err and "accept_other_export" not in err
        assert gallery.read_bytes() == before                 # nothing written
    assert door_lock.main(["enroll", "carl", "--source", str(tmp_path), "--shots", "1",
                           "--accept-other-export", *tflite]) == 2
    assert "shot" not in capsys.readouterr().out              # refused before any shot
    assert gallery.read_bytes() == before
    assert door_lock.main(["list", *onnx]) == 0                 # still the ONNX export's file
    assert door_lock.main(["enroll", "carl", str(tmp_path / "b.png"), *onnx]) == 0


def _door_video(tmp_path: Path, frames) -> tuple[Path, Path]:
    """A 5 fps MJPG video of 92x112 ``frames`` and its first frame as decoded (MJPG changes
    the pixels, so that is the photo to enroll)."""
    video = tmp_path / "door.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (92, 112))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for frame in frames:
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(video))
    ok, first = capture.read()
    capture.release()
    assert ok
    decoded = tmp_path / "decoded.png"
    cv2.imwrite(str(decoded), first)
    return video, decoded


def test_door_lock_hold_is_measured_in_the_source_time(exported, yunet, photos, tmp_path):
    """A folder is read in milliseconds: no hold may carry one photo's unlock over to the
    next (a stranger's photo would be logged under the resident's name); a video's hold
    lasts its own seconds, however fast it is read; a held frame never names anyone."""
    door_lock = load_app("door_lock")
    folder = tmp_path / "door"
    folder.mkdir()
    for name, image in [("1_alice.png", photos["a1"]), ("2_bob.png", photos["b1"]),
                        ("3_alice.png", photos["a1"])]:
        cv2.imwrite(str(folder / name), image)
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(folder / "1_alice.png"), *common]) == 0
    audit = tmp_path / "audit.jsonl"
    assert door_lock.main(["run", "--source", str(folder), "--audit", str(audit),
                           *common]) == 0                      # the default --hold
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["frame"], r["decision"], r["name"]) for r in records] == [
        ("1_alice.png", "unlocking", "alice"), ("1_alice.png", "unlock", "alice"),
        ("2_bob.png", "deny", None),
        ("3_alice.png", "unlocking", "alice"), ("3_alice.png", "unlock", "alice")]

    # 5 fps: alice, then bob for 0.2 .. 1.2 s
    video, first = _door_video(tmp_path, [photos["a1"]] + [photos["b1"]] * 6)
    assert door_lock.main(["enroll", "alice", str(first), *common]) == 0
    audit.unlink()
    assert door_lock.main(["run", "--source", str(video), "--audit", str(audit),
                           "--hold", "0.5", *common]) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    # frames 1, 2 (0.2, 0.4 s) are within the hold; frame 3 (0.6 s) is judged again
    assert [(r["frame"], r["decision"], r["name"]) for r in records] == [
        ("0", "unlocking", "alice"), ("0", "unlock", "alice"), ("1", "open", None),
        ("2", "open", None), ("3", "deny", None), ("4", "deny", None), ("5", "deny", None),
        ("6", "deny", None)]
    assert records[2]["opened_for"] == "alice"
    assert records[2]["open_left_s"] == pytest.approx(0.3)


def test_door_lock_cooldown_trips_on_a_folder(exported, yunet, photos, tmp_path, capsys):
    """A folder is read in milliseconds: grouped on that clock, all its refusals were one
    attempt and --max-failures never tripped.  Each refused photo is one attempt now."""
    door_lock = load_app("door_lock")
    folder = tmp_path / "door"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}_bob.png"), photos["b1"])
    cv2.imwrite(str(folder / "3_alice.png"), photos["a1"])
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(folder / "3_alice.png"), *common]) == 0
    audit = tmp_path / "audit.jsonl"
    assert door_lock.main(["run", "--source", str(folder), "--audit", str(audit),
                           "--max-failures", "2", "--cooldown", "30", *common]) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["decision"] for r in records] == ["deny", "deny", "cooldown", "cooldown"]
    capsys.readouterr()
    assert door_lock.main(["run", "--source", str(folder), "--attempt-seconds", "5",
                           "--max-failures", "2", *common]) == 0
    assert "--attempt-seconds 5 ignored" in capsys.readouterr().err
    assert door_lock.main(["run", "--source", str(folder), "--cooldown", "nan", *common]) == 2
    assert "cooldown" in capsys.readouterr().err


def test_door_lock_says_when_its_camera_stops(exported, yunet, photos, tmp_path, monkeypatch,
                                             capsys):
    """A camera has no last frame: a stream that ends (unplugged, failed) ends `run` with
    exit 1 and a line saying so, after the summary (it ended like a clean stop, rc 0)."""
    door_lock = load_app("door_lock")

    class TwoFramesThenGone:
        def __init__(self, ref):
            self.left = [photos["b1"], photos["b1"]]

        def isOpened(self):
            return True

        def read(self):
            return (True, self.left.pop()) if self.left else (False, None)

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    enroll = tmp_path / "alice.png"
    cv2.imwrite(str(enroll), photos["a1"])
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(enroll), *common]) == 0
    capsys.readouterr()
    monkeypatch.setattr(door_lock.cv2, "VideoCapture", TwoFramesThenGone)
    assert door_lock.main(["run", "--source", "0", *common]) == 1
    out, err = capsys.readouterr()
    assert "summary: deny 2" in out and "camera 0 stopped giving frames after 2 frames" in err
    assert door_lock.main(["run", "--source", "0", "--max-frames", "1", *common]) == 0


def test_door_lock_video_source(exported, yunet, photos, tmp_path):
    door_lock = load_app("door_lock")
    video, first = _door_video(
        tmp_path, (photos["a1"], np.full((112, 92, 3), 127, np.uint8), photos["b1"]))
    common = ["--gallery", str(tmp_path / "g.npz"), "--model", str(exported["onnx_fp32"]),
              "--yunet", str(yunet), "--threshold", "1e-6"]
    assert door_lock.main(["enroll", "alice", str(first), *common]) == 0
    audit = tmp_path / "audit.jsonl"
    assert door_lock.main(["run", "--source", str(video), "--audit", str(audit), "--hold", "0",
                           *common]) == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["frame"], r["decision"]) for r in records] == [
        ("0", "unlocking"), ("0", "unlock"), ("1", "no_face"), ("2", "deny")]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_door_lock_cooldown_and_fail_closed(exported, yunet, photos, tmp_path):
    import io

    door_lock = load_app("door_lock")
    DoorLock, LockOptions = door_lock.DoorLock, door_lock.LockOptions

    with FaceVerifier.create(exported["onnx_fp32"], yunet, threshold=1e-6) as v:
        g = Gallery(v)
        g.enroll("alice", photos["a1"])
        clock, out = _Clock(), io.StringIO()
        lock = DoorLock(g, LockOptions(max_failures=2, cooldown_s=10, hold_s=0), out=out,
                        clock=clock)
        decide = lambda img: lock.process(img, "f", "test")["decision"]  # noqa: E731
        assert decide(photos["b1"]) == "deny"
        clock.now += 0.5
        assert decide(photos["b1"]) == "deny"           # the same attempt (within 1 s)
        assert decide(photos["a1"]) == "unlock"         # so no cooldown yet
        assert decide(photos["b1"]) == "deny"           # the unlock reset the count
        clock.now += 1.0
        assert decide(photos["b1"]) == "deny"           # second attempt starts the cooldown
        assert decide(photos["a1"]) == "cooldown"       # even alice waits: locked
        clock.now += 10.5
        assert decide(photos["a1"]) == "unlock"
        assert decide(BLANK.astype(np.float32)) == "error"  # bad frame: locked, not a crash
        # after an unlock the door stays open for hold_s: later frames run no hook
        hook_log = tmp_path / "hook.txt"
        held = DoorLock(g, LockOptions(hold_s=5, unlock_cmd=f'echo x >> "{hook_log}"'),
                        out=out, clock=clock)
        assert held.process(photos["a1"], "f", "test")["decision"] == "unlock"
        clock.now += 4.0
        record = held.process(photos["b1"], "f", "test")
        # bob walks through the open door: his frame is not judged, and names nobody
        assert record["decision"] == "open" and record["name"] is None
        assert record["opened_for"] == "alice" and record["open_left_s"] == 1.0
        assert "OPEN (opened for alice, 1 s left)" in out.getvalue()
        clock.now += 1.0
        assert held.process(photos["b1"], "f", "test")["decision"] == "deny"
        assert held.process(photos["a1"], "f", "test")["decision"] == "unlock"
        assert hook_log.read_text().split() == ["x", "x"]     # one hook run per opening
        with pytest.raises(ValueError, match="hold"):
            LockOptions(hold_s=-1)
        # a face far from the camera is not judged and is no failed attempt
        far = cv2.copyMakeBorder(cv2.resize(photos["b1"], None, fx=0.5, fy=0.5,
                                            interpolation=cv2.INTER_AREA),
                                 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        strict = DoorLock(g, LockOptions(max_failures=1, attempt_s=0), out=out, clock=clock)
        record = strict.process(far, "f", "test")
        assert record["decision"] == "too_small" and record["face_px"] < 48
        assert strict.process(photos["b1"], "f", "test")["decision"] == "deny"
        assert strict.process(photos["a1"], "f", "test")["decision"] == "cooldown"
        with pytest.raises(ValueError, match="face size"):
            LockOptions(min_face_px=-1)
        # NaN passes "x < 0": a NaN cooldown or hook timeout switched them off
        for key in ("cooldown_s", "attempt_s", "hold_s", "hook_timeout_s", "min_face_px",
                    "max_failures"):
            with pytest.raises(ValueError):
                LockOptions(**{key: float("nan")})
        per_frame = DoorLock(g, LockOptions(max_failures=2, attempt_s=0), out=out, clock=clock)
        assert [per_frame.process(photos["b1"], "f", "test")["decision"]
                for _ in range(3)] == ["deny", "deny", "cooldown"]   # attempt_s 0: frames
        with pytest.raises(ValueError, match="attempt"):
            LockOptions(attempt_s=-1)
        failing = DoorLock(g, LockOptions(unlock_cmd="exit 3"), out=out, clock=clock)
        record = failing.process(photos["a1"], "f", "test")
        assert record["decision"] == "unlock_failed" and "3" in record["error"]
        empty = DoorLock(Gallery(v), LockOptions(), out=out, clock=clock)
        assert empty.process(photos["a1"], "f", "test")["decision"] == "error"


class _FullDisk:
    """An audit log whose writes fail like a full disk's."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


def test_door_lock_never_unlocks_unrecorded_or_after_its_timeout(exported, yunet, photos,
                                                               tmp_path):
    import io

    door_lock = load_app("door_lock")
    DoorLock, LockOptions = door_lock.DoorLock, door_lock.LockOptions
    with FaceVerifier.create(exported["onnx_fp32"], yunet, threshold=1e-6) as v:
        g = Gallery(v)
        g.enroll("alice", photos["a1"])
        # a log that cannot be written keeps the door locked, and the loop goes on
        hook_log = tmp_path / "hook.txt"
        out = io.StringIO()
        lock = DoorLock(g, LockOptions(unlock_cmd=f'echo x >> "{hook_log}"'),
                        audit=_FullDisk(), out=out)
        record = lock.process(photos["a1"], "f", "test")
        assert record["decision"] == "error" and "No space" in record["error"]
        assert not hook_log.exists()
        assert "audit log not written" in out.getvalue()
        # a hook that outlives its timeout is killed with what it started: a program it
        # launched cannot open the door after the lock has logged the failure
        opened = tmp_path / "opened"
        hook = tmp_path / "slow_hook.py"
        hook.write_text(f"import time\ntime.sleep(1.5)\nopen({str(opened)!r}, 'w').close()\n")
        slow = DoorLock(g, LockOptions(unlock_cmd=f'"{sys.executable}" "{hook}"; true',
                                       hook_timeout_s=0.3), out=out)
        record = slow.process(photos["a1"], "f", "test")
        assert record["decision"] == "unlock_failed" and "timed out" in record["error"]
        # a hook that exits non-zero is killed with what it started, too; one that succeeds
        # at once and leaves a program running (a relock after a delay) is left alone, and
        # is not mistaken for a hung one although that program holds its stderr
        late, relocked = tmp_path / "late", tmp_path / "relocked"
        failing = DoorLock(g, LockOptions(unlock_cmd=f'(sleep 1; touch "{late}") & exit 3'),
                           out=out)
        assert failing.process(photos["a1"], "f", "test")["decision"] == "unlock_failed"
        relocking = DoorLock(g, LockOptions(unlock_cmd=f'(sleep 1; touch "{relocked}") &',
                                            hook_timeout_s=0.5), out=out)
        assert relocking.process(photos["a1"], "f", "test")["decision"] == "unlock"
        # Ctrl-C while the hook runs: the hook (its own session: no SIGINT reaches it) is
        # killed before the interrupt goes on; it opened the door after the lock had exited.
        # The hook itself sends this process the SIGINT once it runs (a timer could fire
        # before it started on a slow machine, and the test would test nothing).
        started, interrupted = tmp_path / "started", tmp_path / "interrupted"
        hook2 = tmp_path / "hook2.py"
        hook2.write_text(f"import os, signal, time\nopen({str(started)!r}, 'w').close()\n"
                         f"time.sleep(0.1)\nos.kill({os.getpid()}, signal.SIGINT)\n"
                         f"time.sleep(1.0)\nopen({str(interrupted)!r}, 'w').close()\n")
        waiting = DoorLock(g, LockOptions(unlock_cmd=f'"{sys.executable}" "{hook2}"'), out=out)
        with pytest.raises(KeyboardInterrupt):
            waiting.process(photos["a1"], "f", "test")
        assert started.exists()
        import time
        time.sleep(2.0)  # past the moment the hooks' programs would have acted
        assert not opened.exists() and not late.exists() and relocked.exists()
        assert not interrupted.exists()
        # an audit log on a pipe (it cannot be synced to a disk) still records unlocks
        read_end, write_end = os.pipe()
        with os.fdopen(write_end, "w") as pipe, os.fdopen(read_end) as reader:
            piped = DoorLock(g, LockOptions(), audit=pipe, out=out)
            assert piped.process(photos["a1"], "f", "test")["decision"] == "unlock"
            pipe.close()
            assert [json.loads(x)["decision"] for x in reader.read().splitlines()] == [
                "unlocking", "unlock"]


def test_demo_faces(exported, yunet, monkeypatch, tmp_path, capsys):
    demo_faces = load_app("demo_faces")

    shared_path("data", "faces", "deepface-pairs", "master.csv")
    monkeypatch.setenv("EDGE_SDK_YUNET", str(yunet))
    monkeypatch.delenv(verifier_module.FACE_MODEL_ENV, raising=False)
    assert demo_faces.main(["--model", str(exported["onnx_fp32"]), "--people", "2",
                            "--probes", "1", "--out", str(tmp_path / "demo"),
                            "--operating-point", "model"]) == 0
    out = capsys.readouterr().out
    assert "== summary" in out and "wrong unlocks" in out and " d=" in out
    # cooldown and hold are off: every photo is judged, once (the audit's "unlocking"
    # records before each unlock are no decisions)
    assert re.search(r"not judged \(locked\)\s+0\n", out)
    decided = re.search(r"^summary: (.*)$", out, re.M)[1]   # e.g. "deny 3, unlock 14"
    photos = sum(int(part.split()[-1]) for part in decided.split(", "))
    assert re.search(rf"wrong unlocks: \d+ of {photos} photos", out)
    # run again into the same folder: the first run's probe links are replaced, not
    # linked over (a raw FileExistsError/SameFileError) nor judged twice
    assert demo_faces.main(["--model", str(exported["onnx_fp32"]), "--people", "2",
                            "--probes", "1", "--out", str(tmp_path / "demo"),
                            "--operating-point", "model"]) == 0
    assert re.search(rf"wrong unlocks: \d+ of {photos} photos", capsys.readouterr().out)
    # until the released model exists, the demo stops with the typed error's message
    monkeypatch.setattr(verifier_module, "DEFAULT_FACE_MODEL", tmp_path / "absent.onnx")
    assert demo_faces.main([]) == 2
    assert "export faces release" in capsys.readouterr().err


def test_demo_never_shows_an_enrolled_photo_as_a_stranger(yunet, capsys):
    """`demo_faces --enroll-photos 2`: people with too few photos stay strangers and are
    not left in the gallery (they used to be enrolled and then shown as strangers with
    their own enrolment photos, d = 0)."""
    released = Path(__file__).resolve().parents[1] / "models" / "faces" / "face_encoder_int8.onnx"
    data = shared_path("data", "faces", "deepface-pairs")
    demo = load_app("demo_faces")
    assert demo.main(["--data", str(data), "--people", "2", "--enroll-photos", "2",
                      "--probes", "1", "--model", str(released), "--yunet", str(yunet)]) == 0
    out = capsys.readouterr().out
    strangers = [ln for ln in out.splitlines() if ln.startswith("stranger-")]
    assert strangers and not any("d=0.0000" in ln for ln in strangers)
    assert "let in as someone else       0" in out
