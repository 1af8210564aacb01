"""Is this face photo good enough to enrol, or this camera frame good enough to decide on?

A one-shot gallery is only as good as its one photo: a face turned away, lit from
one side, blurred or a few pixels wide embeds far from the same person's other
photos, and every later frame of that person is then refused.  At the door the
same holds for each frame, but there the camera can simply wait for a better one.

:func:`assess_face` measures a detected face with plain image statistics (no
model): its resolution (pixels between the eyes in the source image), how far it
is turned (yaw and pitch from the five landmarks), sharpness, exposure, contrast
and how unevenly it is lit, all on the 112x112 aligned crop the encoder sees.
:class:`QualityOptions` holds the limits; :meth:`FaceQuality.problems` says, in
words a user can act on, which limits a face misses.

>>> q = assess_face(image, face)                 # face from FaceDetector.detect
>>> q.problems(QualityOptions())                 # [] when good enough
['face too small (px between the eyes): 14, need >= 20 (move closer or use a larger photo)']

The default limits were measured (``scripts/quality_probe.py``; docs/FACES.md,
"Face quality"): on the held-out in-the-wild photos they refuse a third (small,
turned, blurred faces), and over the pairs of the rest TAR at FAR 1e-4 rises from
5 % to 8 % against 5 % when as many photos are dropped at random; on att-orl and
yale, photos from one fixed camera, they refuse under 3 %.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from ..errors import FaceError, InputDtypeError, InputShapeError
from .detector import (ALIGNED_SIZE, ARCFACE_TEMPLATE, Face, align_face, alignment_matrix,
                       check_image)

# Where the template puts the nose between the eye line and the mouth line (0.495): a
# face looking straight at the camera has its nose there, one tilted up or down does not.
_TEMPLATE_EYES_Y = float(ARCFACE_TEMPLATE[:2, 1].mean())
_TEMPLATE_MOUTH_Y = float(ARCFACE_TEMPLATE[3:, 1].mean())
_TEMPLATE_NOSE_RATIO = float((ARCFACE_TEMPLATE[2, 1] - _TEMPLATE_EYES_Y)
                             / (_TEMPLATE_MOUTH_Y - _TEMPLATE_EYES_Y))
# The face's own skin on the aligned crop: between the eyebrows and the chin, inside
# the cheeks.  The crop's corners hold hair, background or replicated border pixels.
_ROWS = slice(36, 104)
_COLS = slice(24, 88)
# points of that region, every 4 px: where each comes from in the source image tells how
# much of the face the photo holds
_GRID = np.stack(np.meshgrid(np.arange(_COLS.start, _COLS.stop, 4) + 0.5,
                             np.arange(_ROWS.start, _ROWS.stop, 4) + 0.5), -1).reshape(-1, 2)


@dataclass(frozen=True)
class QualityOptions:
    """Limits a face must meet (see :meth:`FaceQuality.problems`).

    ``None`` switches a limit off.  The defaults are measured
    (``scripts/quality_probe.py``; docs/FACES.md, "Face quality").

    Attributes:
        min_eye_distance: pixels between the eye centres in the source image.
        max_yaw: how far the nose sits off the eyes' midline, as a share of the
            eye distance (0 frontal; about 0.5 at a half profile).
        max_pitch: how far the nose sits off its template height between the
            eye and mouth lines, as a share of that span (0 level).
        min_sharpness: mean absolute Laplacian of the aligned grey face
            (grey levels; low on blurred or up-scaled faces).
        min_brightness, max_brightness: mean grey level of the face (0..255).
        min_contrast: standard deviation of the face's grey levels.
        max_lighting_asymmetry: difference between the mean grey levels of the
            face's two halves over their mean (0 even; near 1 lit from one side).
            Off by default: on yale, photos lit from one side were let in *more*
            often than the others, so refusing them only cost attempts.
        min_score: the detector's confidence.
        min_in_frame: share of the face (the aligned crop's skin region, between
            the eyebrows and the chin, inside the cheeks) that lies inside the photo.
            A face cut by the photo's edge is filled in by repeating edge pixels;
            cut by a third of its width it is about 0.72.
    """

    min_eye_distance: float | None = 20.0
    max_yaw: float | None = 0.35
    max_pitch: float | None = 0.35
    min_sharpness: float | None = 2.0
    min_brightness: float | None = 40.0
    max_brightness: float | None = 225.0
    min_contrast: float | None = 12.0
    max_lighting_asymmetry: float | None = None
    min_score: float | None = 0.8
    min_in_frame: float | None = 0.8

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not isinstance(v, (int, float)) or not np.isfinite(v)
                                  or v < 0):
                raise ValueError(f"{f.name} must be a non-negative number or None, got {v!r}")
        if (self.min_brightness is not None and self.max_brightness is not None
                and self.min_brightness >= self.max_brightness):
            raise ValueError(f"min_brightness ({self.min_brightness}) must be below "
                             f"max_brightness ({self.max_brightness})")

    @classmethod
    def off(cls) -> "QualityOptions":
        """No limit at all (every detected face passes)."""
        return cls(**{f.name: None for f in fields(cls)})


@dataclass(frozen=True)
class FaceQuality:
    """Measurements of one detected face (see the module docstring)."""

    eye_distance: float
    yaw: float
    pitch: float
    sharpness: float
    brightness: float
    contrast: float
    lighting_asymmetry: float
    score: float
    in_frame: float = 1.0

    def problems(self, options: QualityOptions | None = None) -> list[str]:
        """What is wrong with this face under ``options`` (default limits), in words
        that tell the user what to change; empty when it is good enough."""
        o = options if options is not None else QualityOptions()
        out = []

        def low(value: float, limit: float | None, what: str, fix: str, fmt: str = ".1f"):
            if limit is not None and value < limit:
                shown, need = _apart(value, limit, fmt)
                out.append(f"{what}: {shown}, need >= {need} ({fix})")

        def high(value: float, limit: float | None, what: str, fix: str, fmt: str = ".2f"):
            if limit is not None and value > limit:
                shown, need = _apart(value, limit, fmt)
                out.append(f"{what}: {shown}, need <= {need} ({fix})")

        low(self.eye_distance, o.min_eye_distance, "face too small (px between the eyes)",
            "move closer or use a larger photo", ".0f")
        high(abs(self.yaw), o.max_yaw, "face turned sideways (yaw)", "look at the camera")
        high(abs(self.pitch), o.max_pitch, "face tilted up or down (pitch)",
             "look straight at the camera")
        low(self.sharpness, o.min_sharpness, "face blurred (sharpness)",
            "hold still, focus, or use a sharper photo")
        low(self.brightness, o.min_brightness, "face too dark (mean grey level)",
            "add light in front of the face", ".0f")
        high(self.brightness, o.max_brightness, "face overexposed (mean grey level)",
             "less light or exposure", ".0f")
        low(self.contrast, o.min_contrast, "face washed out (contrast)",
            "more even, brighter light")
        high(self.lighting_asymmetry, o.max_lighting_asymmetry,
             "face lit from one side (lighting asymmetry)", "light the face from the front")
        low(self.score, o.min_score, "face unclear to the detector (score)",
            "a clearer, frontal view", ".2f")
        low(self.in_frame, o.min_in_frame, "face cut by the photo's edge (share in the photo)",
            "the whole face in the picture, away from its edges", ".2f")
        return out

    def ok(self, options: QualityOptions | None = None) -> bool:
        """True when :meth:`problems` is empty."""
        return not self.problems(options)

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def _apart(value: float, limit: float, fmt: str) -> tuple[str, str]:
    """``value`` and ``limit`` printed with ``fmt`` (".1f"), or with more decimals where
    that rounds the value onto the limit ("20, need >= 20" reads as a contradiction)."""
    digits = int(fmt[1:-1])
    for extra in range(5):
        shown, need = f"{value:.{digits + extra}f}", f"{limit:.{digits + extra}f}"
        if shown != need:
            break
    return shown, need


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(eye distance in px, yaw, pitch) from five landmarks in template order.

    The landmarks are first rotated so the eye line is level (a tilted head is
    not a turned one: alignment undoes roll).  Yaw is the nose's offset from the
    eyes' midpoint along that line over the eye distance (positive: nose toward
    the image's right); pitch is the nose's height between the eye and mouth
    lines minus the template's, over that span (positive: nose low, head down).
    """
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    left, right = p[0], p[1]
    axis = right - left
    eye_distance = float(np.hypot(*axis))
    if eye_distance < 1e-6:
        return 0.0, 0.0, 0.0
    ux = axis / eye_distance
    uy = np.array([-ux[1], ux[0]])                 # image "down" when the eye line is level
    centre = (left + right) / 2
    rel = p - centre
    x, y = rel @ ux, rel @ uy
    yaw = float(x[2] / eye_distance)
    span = float((y[3] + y[4]) / 2)                 # eye line to mouth line
    pitch = float(y[2] / span - _TEMPLATE_NOSE_RATIO) if span > 1e-6 else 0.0
    return eye_distance, yaw, pitch


def assess_aligned(aligned: np.ndarray) -> tuple[float, float, float, float]:
    """(sharpness, brightness, contrast, lighting asymmetry) of a 112x112 aligned face."""
    aligned = np.asarray(aligned)
    if aligned.dtype != np.uint8:
        raise InputDtypeError(f"expected an aligned face of dtype uint8, got {aligned.dtype}")
    if aligned.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        raise InputShapeError(f"expected an aligned {ALIGNED_SIZE}x{ALIGNED_SIZE} face, "
                         f"got {aligned.shape}")
    grey = aligned if aligned.ndim == 2 else cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    face = grey[_ROWS, _COLS].astype(np.float32)
    # mean |Laplacian| rather than its variance: a few specular pixels or a dark
    # hairline do not dominate it
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=1)[_ROWS, _COLS]
    sharpness = float(np.mean(np.abs(lap)))
    brightness = float(face.mean())
    contrast = float(face.std())
    half = face.shape[1] // 2
    a, b = float(face[:, :half].mean()), float(face[:, half:].mean())
    asymmetry = abs(a - b) / max((a + b) / 2, 1.0)
    return sharpness, brightness, contrast, float(asymmetry)


def share_in_frame(image_shape: tuple[int, ...], matrix: np.ndarray) -> float:
    """Share of the aligned face's skin region whose pixels come from inside an image of
    ``image_shape`` (1.0 for a face well inside the photo); ``matrix`` is the face's
    :func:`~sdk.faces.detector.alignment_matrix`."""
    inverse = cv2.invertAffineTransform(matrix)
    points = _GRID @ inverse[:, :2].T + inverse[:, 2]
    h, w = image_shape[:2]
    inside = ((points[:, 0] >= 0) & (points[:, 0] <= w)
              & (points[:, 1] >= 0) & (points[:, 1] <= h))
    return float(inside.mean())


def assess_face(image: np.ndarray, face: Face, aligned: np.ndarray | None = None
                ) -> FaceQuality:
    """Measure ``face`` (from ``FaceDetector.detect`` on ``image``).

    Args:
        image: the BGR uint8 image the face was found in.
        face: the detection.
        aligned: its 112x112 aligned crop when already made (saves a warp).

    Raises:
        FaceError: landmarks that are not finite (no measurement could be trusted).
    """
    image = check_image(image)
    if not np.all(np.isfinite(np.asarray(face.landmarks, np.float64))):
        raise FaceError("the face's landmarks are not finite: it cannot be measured")
    matrix = alignment_matrix(face.landmarks)  # once: the crop and the in-frame share
    if aligned is None:
        aligned = align_face(image, face.landmarks, matrix=matrix)
    eye_distance, yaw, pitch = pose_from_landmarks(face.landmarks)
    sharpness, brightness, contrast, asymmetry = assess_aligned(aligned)
    return FaceQuality(eye_distance=eye_distance, yaw=yaw, pitch=pitch, sharpness=sharpness,
                       brightness=brightness, contrast=contrast,
                       lighting_asymmetry=asymmetry, score=float(face.score),
                       in_frame=share_in_frame(image.shape, matrix))
