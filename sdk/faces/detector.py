"""Face detection (YuNet through ``cv2.FaceDetectorYN``) and 5-point alignment.

The same code aligns faces for training (``export/``) and on the device, so
the encoder always sees faces cropped the same way: a similarity transform
that maps the five landmarks onto the standard 112x112 ArcFace template.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ClosedError, FaceError, InferenceError, InputShapeError, ModelFormatError
from ..image import check_bgr
from ..paths import yunet_path

#: Landmarks of the 112x112 ArcFace/MobileFaceNet template, in YuNet's order:
#: eye on the image's left, eye on the image's right, nose tip, mouth left, mouth right.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
ALIGNED_SIZE = 112


@dataclass(frozen=True)
class Face:
    """One detected face in image coordinates."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray                   # (5, 2) float32, template order
    score: float

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate a BGR uint8 image (H, W, 3), each side >= 16; grey and BGRA are converted."""
    return check_bgr(image, what, min_side=16)


def _five_points(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float32)
    if points.size != 10:
        raise InputShapeError(f"expected five (x, y) landmarks in template order, got an "
                              f"array of shape {points.shape}")
    return points.reshape(5, 2)


def alignment_matrix(landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The 2x3 similarity transform taking the image to the ``size``x``size`` aligned face.

    Raises:
        InputShapeError: not five landmarks.
        FaceError: landmarks that cannot be aligned (not finite, or all in one point).
    """
    src = _five_points(landmarks)
    dst = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)
    matrix = None
    if np.all(np.isfinite(src)):
        matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:  # LMEDS gave up: a least-squares fit on all five (OpenCV has none)
        matrix = _similarity_least_squares(src, dst)
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE, *,
               matrix: np.ndarray | None = None) -> np.ndarray:
    """Warp the face with these 5 landmarks onto the ``size``x``size`` template (BGR uint8).

    Raises:
        InputDtypeError, InputShapeError: not a BGR uint8 image (grey and BGRA are
            converted), or not five landmarks.
        FaceError: landmarks that cannot be aligned.
        ValueError: ``size`` is not an int of at least 16.

    ``matrix``: the :func:`alignment_matrix` of these landmarks when already computed.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an int >= 16 (pixels of the aligned face), got {size!r}")
    image = check_image(image)
    if matrix is None:
        matrix = alignment_matrix(landmarks, size)
    return cv2.warpAffine(image, matrix, (int(size), int(size)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _similarity_least_squares(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation taking ``src`` nearest to ``dst`` in
    least squares (Umeyama 1991, reflections excluded, as estimateAffinePartial2D).

    Raises:
        FaceError: the landmarks are not finite or all in one point.
    """
    src64, dst64 = src.astype(np.float64), dst.astype(np.float64)
    mean_s, mean_d = src64.mean(axis=0), dst64.mean(axis=0)
    xs, xd = src64 - mean_s, dst64 - mean_d
    var_s = float((xs ** 2).sum(axis=1).mean()) if np.all(np.isfinite(xs)) else 0.0
    if not var_s > 1e-12:
        raise FaceError("the face's landmarks are degenerate (not finite, or all in one point): "
                        "it cannot be aligned")
    u, d, vt = np.linalg.svd(xd.T @ xs / len(src64))
    flip = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(d) @ flip)) / var_s
    shift = mean_d - scale * rotation @ mean_s
    return np.hstack([scale * rotation, shift[:, None]]).astype(np.float64)


@dataclass(frozen=True)
class FaceDetectorOptions:
    """Options of :class:`FaceDetector`.

    Attributes:
        model_path: YuNet ONNX file; ``None`` finds it (see ``sdk.paths``).
        score_threshold: minimum detection confidence.
        nms_threshold: overlap above which boxes are merged.
        max_side: images are downscaled so their longest side is at most this
            before detection (speed); coordinates are reported in the original image.
        pad_retry: when nothing is found, retry once on the image padded by a
            25 % border: tightly cropped faces (ID photos, AT&T/ORL) then get found.
    """

    model_path: str | os.PathLike | None = None
    score_threshold: float = 0.7
    nms_threshold: float = 0.3
    max_side: int = 640
    pad_retry: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_threshold < 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1), got {self.nms_threshold}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {self.max_side}")


class FaceDetector:
    """YuNet face detector with 5 landmarks.

    >>> with FaceDetector.create_from_options(FaceDetectorOptions()) as det:
    ...     faces = det.detect(cv2.imread("photo.jpg"))
    """

    def __init__(self, detector, options: FaceDetectorOptions, path: Path) -> None:
        self._det = detector
        self.options = options
        self.path = path

    @classmethod
    def create_from_options(cls, options: FaceDetectorOptions) -> "FaceDetector":
        """Load YuNet from ``options.model_path`` (``None``: ``$EDGE_SDK_YUNET``, the file ``make
        setup`` put in ``models/yunet``, else ``../shared``).

        Raises:
            ModelNotFoundError: no YuNet file there.
            ModelFormatError: OpenCV cannot load the file.
        """
        path = yunet_path(options.model_path)
        # OpenCV 5 warns on every YuNet load that its new graph engine ignores the target
        # (harmless); quiet it for this call only and leave the caller's log level as it was
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(min(level, cv2.utils.logging.LOG_LEVEL_ERROR))
        try:
            det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), options.score_threshold,
                                            options.nms_threshold, 5000)
        except cv2.error as exc:
            raise ModelFormatError(f"{path}: OpenCV cannot load this YuNet model: {exc}") from None
        finally:
            cv2.utils.logging.setLogLevel(level)
        detector = cls(det, options, path)
        # OpenCV loads any ONNX graph here and fails only on the first image: try one now
        # so that a foreign model is refused where it is named, not in the middle of a run
        try:
            detector._run(np.zeros((64, 64, 3), np.uint8))
        except InferenceError:
            raise ModelFormatError(f"{path}: not a YuNet face detector (OpenCV cannot run it "
                                   "on a test image, or its outputs are not YuNet's)") from None
        return detector

    @classmethod
    def create(cls, model_path: str | os.PathLike | None = None, **kwargs) -> "FaceDetector":
        """``create_from_options(FaceDetectorOptions(model_path, **kwargs))``."""
        return cls.create_from_options(FaceDetectorOptions(model_path=model_path, **kwargs))

    def _run(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        scale = min(1.0, self.options.max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA)
        try:
            self._det.setInputSize((small.shape[1], small.shape[0]))
            _, rows = self._det.detect(small)
        except cv2.error as exc:
            raise InferenceError(f"{self.path}: YuNet failed: {exc}") from None
        if rows is None:
            return []
        if rows.ndim != 2 or rows.shape[1] < 15:
            raise InferenceError(f"{self.path}: YuNet gave rows shaped {rows.shape}, expected "
                                 "(N, 15): box, 5 landmarks, score")
        faces = []
        for r in rows:
            coords = r[:14] / np.float32(scale)
            faces.append(Face(box=tuple(float(v) for v in coords[:4]),
                              landmarks=coords[4:14].reshape(5, 2).astype(np.float32),
                              score=float(r[14])))
        return faces

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in a BGR uint8 image, largest first."""
        if self._det is None:
            raise ClosedError("the detector is closed; create a new one")
        image = check_image(image)
        faces = self._run(image)
        if not faces and self.options.pad_retry:
            h, w = image.shape[:2]
            py, px = h // 4, w // 4
            padded = cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_CONSTANT, value=0)
            offset = np.array([px, py], dtype=np.float32)
            faces = [Face(box=(f.box[0] - px, f.box[1] - py, f.box[2], f.box[3]),
                          landmarks=f.landmarks - offset, score=f.score)
                     for f in self._run(padded)]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def close(self) -> None:
        self._det = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
