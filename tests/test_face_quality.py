"""Face quality (``sdk.faces.quality``): the measurements, the limits, and where they act:
enrolment (``Gallery.enroll``), the door (``DoorLock``) and camera enrolment shots."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

import sdk
from sdk.errors import FaceError, PoorFaceQualityError
from sdk.faces.detector import ARCFACE_TEMPLATE
from sdk.faces.quality import (FaceQuality, QualityOptions, assess_aligned, assess_face,
                               pose_from_landmarks)

from conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
GOOD = FaceQuality(eye_distance=60, yaw=0.0, pitch=0.05, sharpness=10, brightness=120,
                   contrast=40, lighting_asymmetry=0.1, score=0.93)


def _rotate(points: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    a = np.deg2rad(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (points - points.mean(0)) @ r.T * scale + np.array([300.0, 200.0])


def test_pose_of_the_template_is_frontal_whatever_the_roll_and_scale():
    for degrees, scale in ((0, 1.0), (30, 1.0), (-45, 2.5)):
        eyes, yaw, pitch = pose_from_landmarks(_rotate(ARCFACE_TEMPLATE, degrees, scale))
        assert eyes == pytest.approx(35.24 * scale, abs=0.01)
        assert abs(yaw) < 0.01 and abs(pitch) < 0.01


def test_pose_follows_the_nose():
    p = ARCFACE_TEMPLATE.copy()
    p[2, 0] += 0.25 * 35.24  # nose a quarter of the eye distance toward the image's right
    _, yaw, pitch = pose_from_landmarks(_rotate(p, 20))
    assert yaw == pytest.approx(0.25, abs=0.01) and abs(pitch) < 0.01
    q = ARCFACE_TEMPLATE.copy()
    q[2, 1] += 8.0  # nose lower: the head tilted down
    _, yaw, pitch = pose_from_landmarks(q)
    assert abs(yaw) < 0.01 and pitch == pytest.approx(8.0 / 40.7, abs=0.01)
    assert pose_from_landmarks(np.zeros((5, 2))) == (0.0, 0.0, 0.0)  # degenerate: no crash


def test_image_measurements():
    flat = np.full((112, 112, 3), 128, np.uint8)
    sharp, bright, contrast, asym = assess_aligned(flat)
    assert (sharp, bright, contrast, asym) == (0.0, 128.0, 0.0, 0.0)
    half = flat.copy()
    half[:, 56:] = 64  # the face's right half in shadow
    asym = assess_aligned(half)[3]
    assert asym == pytest.approx(64 / 96, abs=1e-6)
    noise = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(noise, (0, 0), 3)
    assert assess_aligned(noise)[0] > 10 * assess_aligned(blurred)[0]
    assert assess_aligned(flat[:, :, 0])[1] == 128.0  # grey input
    with pytest.raises(ValueError, match="112x112"):
        assess_aligned(np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("change, words", [
    ({"eye_distance": 12}, "too small"), ({"yaw": -0.6}, "turned sideways"),
    ({"pitch": 0.5}, "tilted"), ({"sharpness": 1.0}, "blurred"),
    ({"brightness": 20}, "too dark"), ({"brightness": 240}, "overexposed"),
    ({"contrast": 5}, "washed out"), ({"score": 0.5}, "unclear"),
    ({"in_frame": 0.6}, "cut by the photo's edge")])
def test_each_limit_names_its_problem(change, words):
    assert GOOD.problems() == [] and GOOD.ok()
    poor = replace(GOOD, **change)
    problems = poor.problems()
    assert len(problems) == 1 and words in problems[0] and "need" in problems[0]
    assert poor.problems(QualityOptions.off()) == []


def test_a_value_just_under_its_limit_is_not_printed_as_the_limit():
    """att-orl's s2/3.png was refused with "20, need >= 20"."""
    (problem,) = replace(GOOD, eye_distance=19.7).problems()
    assert "19.7, need >= 20.0" in problem
    (problem,) = replace(GOOD, sharpness=1.96).problems()
    assert "1.96, need >= 2.00" in problem


def test_lighting_limit_is_off_by_default():
    side_lit = replace(GOOD, lighting_asymmetry=0.9)
    assert side_lit.ok()
    assert "one side" in side_lit.problems(QualityOptions(max_lighting_asymmetry=0.5))[0]


@pytest.mark.parametrize("kwargs", [{"min_eye_distance": -1}, {"max_yaw": float("nan")},
                                    {"min_brightness": 200, "max_brightness": 100},
                                    {"min_score": "high"}])
def test_options_validated(kwargs):
    with pytest.raises(ValueError):
        QualityOptions(**kwargs)


def test_real_photos(yunet):
    """att-orl s1/3.png (face turned away) misses the yaw limit; s1/1.png passes; the
    verifier's quality() and assess_face agree; sdk exports the names."""
    att = shared_path("data", "faces", "att-orl")
    model = ROOT / "models" / "faces" / "face_encoder_int8.onnx"
    with sdk.FaceVerifier.create(model, yunet, threads=1) as fv:
        front = cv2.imread(str(att / "s1" / "1.png"))
        turned = cv2.imread(str(att / "s1" / "3.png"))
        q = fv.quality(front)
        assert q.ok(), q.problems()
        assert q == assess_face(front, fv.detect(front)[0])
        assert any("turned sideways" in p for p in fv.quality(turned).problems())
        with pytest.raises(sdk.errors.NoFaceError):
            fv.quality(np.zeros((120, 120, 3), np.uint8))
    assert sdk.QualityOptions is QualityOptions and sdk.assess_face is assess_face


def test_a_face_cut_by_the_photos_edge_is_refused(exported, yunet):
    """Cut by a third of its width or more, a face is mostly edge pixels repeated by the
    alignment: measured and refused, at enrolment too; the whole photo passes."""
    photo = cv2.imread(str(shared_path("data", "faces", "deepface-pairs", "img1.jpg")))
    with sdk.FaceVerifier.create(exported["onnx_fp32"], yunet, threads=1) as fv:
        x, _, w, _ = fv.detect(photo)[0].box
        assert fv.quality(photo).in_frame == 1.0
        for cut in (0.35, 0.5):
            part = np.ascontiguousarray(photo[:, int(x + cut * w):])
            q = fv.quality(part)
            assert q.in_frame < 0.8
            assert any("cut by the photo's edge" in p for p in q.problems())
            with pytest.raises(PoorFaceQualityError, match="cut by the photo's edge"):
                sdk.Gallery(fv).enroll("half", part)


def test_alignment_and_measurements_refuse_bad_input(yunet):
    from sdk.errors import InputDtypeError, InputShapeError
    from sdk.faces.detector import Face, align_face

    image = np.full((200, 200, 3), 128, np.uint8)
    points = _rotate(ARCFACE_TEMPLATE, 0) - np.array([200.0, 100.0])  # a face at (100, 100)
    assert align_face(image, points).shape == (112, 112, 3)
    assert align_face(image[:, :, 0], points).shape == (112, 112, 3)   # grey: BGR out
    assert align_face(image[:, :, :1], points).shape == (112, 112, 3)  # grey (H, W, 1)
    with pytest.raises(InputDtypeError, match="cv2.imread returns None"):
        align_face(None, points)
    with pytest.raises(InputDtypeError):
        align_face(image.astype(np.float32), points)
    with pytest.raises(InputShapeError, match="five"):
        align_face(image, points[:4])
    for size in (0, 8, 1.5):
        with pytest.raises(ValueError, match="size"):
            align_face(image, points, size=size)
    with pytest.raises(InputDtypeError):
        assess_aligned(np.zeros((112, 112, 3), np.float32))
    # NaN landmarks measured nothing and passed every limit when the crop was given
    nan = points.copy()
    nan[0] = np.nan
    face = Face(box=(50.0, 50.0, 100.0, 100.0), landmarks=nan.astype(np.float32), score=0.9)
    with pytest.raises(FaceError, match="not finite"):
        assess_face(image, face, align_face(image, points))


@pytest.fixture(scope="module")
def att():
    root = shared_path("data", "faces", "att-orl")
    return {k: cv2.imread(str(root / "s1" / f"{k}.png")) for k in ("1", "2", "3")}


def test_enrolment_refuses_a_poor_photo(exported, yunet, att):
    with sdk.FaceVerifier.create(exported["onnx_fp32"], yunet) as fv:
        gallery = sdk.Gallery(fv)
        with pytest.raises(PoorFaceQualityError) as info:
            gallery.enroll("ann", [att["1"], att["3"]])  # photo 1 (the second) is turned
        assert "'ann' photo #2 of 2 (index 1): " in str(info.value)
        assert "turned sideways" in str(info.value) and "turned sideways" in info.value.reason
        assert info.value.problems and info.value.index == 1
        assert isinstance(info.value, FaceError)
        assert "ann" not in gallery  # all or nothing
        assert gallery.enroll("ann", [att["1"], att["3"]], quality=None) == 2
        strict = QualityOptions(min_eye_distance=1000)
        with pytest.raises(PoorFaceQualityError, match="too small"):
            gallery.enroll("bob", att["2"], quality=strict)
        with pytest.raises(TypeError):
            gallery.enroll("bob", att["2"], quality={"min_eye_distance": 1})


def _door_lock():
    from conftest import load_app

    return load_app("door_lock")


def test_door_skips_poor_faces_without_counting_failures(exported, yunet, att):
    door_lock = _door_lock()
    with sdk.FaceVerifier.create(exported["onnx_fp32"], yunet, threshold=1e-6) as fv:
        gallery = sdk.Gallery(fv)
        gallery.enroll("ann", att["1"])
        now = [0.0]
        strict = QualityOptions(min_eye_distance=1000)
        out = io.StringIO()
        lock = door_lock.DoorLock(gallery, door_lock.LockOptions(max_failures=1, attempt_s=0,
                                                                 quality=strict),
                                  out=out, clock=lambda: now[0])
        for i in range(3):  # any number of poor frames: no decision, no cooldown
            now[0] += 1
            r = lock.process(att["2"], str(i), "test")
            assert r["decision"] == door_lock.POOR_FACE and "too small" in r["problems"][0]
        assert "POOR_FACE" in out.getvalue() and "move closer" in out.getvalue()
        lock.options = replace(lock.options, quality=None)  # judged now: refused (τ tiny)
        now[0] += 1
        assert lock.process(att["2"], "3", "test")["decision"] == door_lock.DENY
        now[0] += 1
        assert lock.process(att["2"], "4", "test")["decision"] == door_lock.COOLDOWN


def test_camera_enrolment_skips_poor_frames(exported, yunet, att):
    door_lock = _door_lock()
    frames = [door_lock.Frame(str(i), image, None)
              for i, image in enumerate((att["3"], att["1"], att["2"]))]
    out = io.StringIO()
    with sdk.FaceVerifier.create(exported["onnx_fp32"], yunet) as fv:
        shots = door_lock.collect_shots(fv, iter(frames), shots=2, every=1, out=out,
                                        quality=QualityOptions())
        assert len(shots.embeddings) == 2 and shots.looked_at == 3
        assert list(shots.rejected) == ["poor face (face too small, face turned sideways)"]
        assert out.getvalue().startswith("0: skipped (") and "turned sideways" in out.getvalue()
        assert len(door_lock.collect_shots(fv, iter(frames), 3, 1,
                                           io.StringIO()).embeddings) == 3


def test_door_lock_enroll_names_the_poor_file(exported, yunet, tmp_path, capsys):
    door_lock = _door_lock()
    att = shared_path("data", "faces", "att-orl", "s1")
    common = ["--model", str(exported["onnx_fp32"]), "--yunet", str(yunet),
              "--gallery", str(tmp_path / "g.npz"), "--threshold", "0.5"]
    assert door_lock.main(["enroll", "ann", str(att / "1.png"), str(att / "3.png"),
                           *common]) == 2
    err = capsys.readouterr().err
    assert f"{att / '3.png'}: " in err and "turned sideways" in err
    assert "--no-quality-check" in err and not (tmp_path / "g.npz").exists()
    assert door_lock.main(["enroll", "ann", str(att / "1.png"), str(att / "3.png"),
                           "--no-quality-check", *common]) == 0
    assert "2 photo(s) added" in capsys.readouterr().out
