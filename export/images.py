"""Image folders as the export tools read them: listing, and photos prepared at a model's
input size the way the device sees them (faces detected and aligned by the SDK's own code,
other photos centre-cropped to the aspect ratio and resized)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm")


def list_images(folder: str | Path, count: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted); with ``count``, that many spread
    evenly over the list (deterministic, covering many identities/scenes, not the first few).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {folder}")
    if count is None or len(files) <= count:
        return files
    idx = np.unique(np.linspace(0, len(files) - 1, count).round().astype(int))
    return [files[i] for i in idx]


def fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (no distortion)."""
    h, w = image.shape[:2]
    target = width / height
    if w / h > target:
        nw = max(1, round(h * target))
        x0 = (w - nw) // 2
        image = image[:, x0:x0 + nw]
    else:
        nh = max(1, round(w / target))
        y0 = (h - nh) // 2
        image = image[y0:y0 + nh]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def load_images(paths: Iterable[Path], height: int, width: int, *, align_faces: bool = False,
                yunet: str | Path | None = None, progress=None) -> list[np.ndarray]:
    """BGR uint8 images of ``height`` x ``width``: with ``align_faces`` the largest face of
    each photo aligned exactly as on the device (photos without a face are skipped),
    otherwise the photo fitted by :func:`fit`. Unreadable files are skipped."""
    detector = None
    if align_faces:
        if height != width:
            raise ValueError(f"aligned faces are square, asked for {height}x{width}")
        from sdk.faces import FaceDetector, align_face

        detector = FaceDetector.create(yunet)
    out = []
    try:
        for path in (paths if progress is None else progress(paths)):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                continue
            if detector is not None:
                faces = detector.detect(img)
                if not faces:
                    continue
                img = align_face(img, faces[0].landmarks, size=height)
            else:
                img = fit(img, height, width)
            out.append(img)
    finally:
        if detector is not None:
            detector.close()
    return out
