"""The one check of an input picture, shared by the face and style APIs."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InputDtypeError, InputShapeError


def check_bgr(image, what: str, min_side: int) -> np.ndarray:
    """A BGR uint8 (H, W, 3) image; grey (H, W) or (H, W, 1) and BGRA (H, W, 4) ones are
    converted.

    Raises :class:`InputDtypeError` for anything but a uint8 numpy array (with a hint for
    ``None``, which is what ``cv2.imread`` returns for a missing or unreadable file) and
    :class:`InputShapeError` for another shape or a side under ``min_side`` pixels.
    """
    if not isinstance(image, np.ndarray):
        hint = (" (cv2.imread returns None when the file is missing or unreadable)"
                if image is None else "")
        raise InputDtypeError(f"{what}: expected a numpy array (BGR uint8, as cv2.imread gives), "
                              f"got {type(image).__name__}{hint}")
    if image.dtype != np.uint8:
        raise InputDtypeError(f"{what}: expected dtype uint8 (BGR, 0..255, as OpenCV gives it), "
                              f"got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:  # grey with a channel axis, as some APIs give
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputShapeError(f"{what}: expected shape (H, W, 3) BGR, got {image.shape}")
    # the size check comes before any conversion: OpenCV raises its own error on an
    # empty array, and a grey or BGRA image must be refused as small as a BGR one
    if min(image.shape[:2]) < min_side:
        raise InputShapeError(f"{what}: {image.shape[1]}x{image.shape[0]} is too small "
                              f"(each side must be >= {min_side})")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
