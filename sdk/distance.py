"""The one distance of the product: squared Euclidean between L2-normalised embeddings.

d(a, b) = ||a - b||^2, in [0, 4] for unit vectors.  Training (``export``'s
triplet loss and threshold calibration) and the runtime use this definition;
``export`` tests check its TensorFlow twin against this function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputShapeError


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d(a, b) = sum_k (a_k - b_k)^2 over the last axis; broadcasts like numpy.

    ``squared_l2(e, gallery)`` with ``e`` of shape (D,) and ``gallery`` (K, D)
    gives the K distances.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape[-1] != b.shape[-1]:
        raise InputShapeError(f"embedding sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    diff = a - b
    return np.einsum("...k,...k->...", diff, diff)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (the exported encoders already do this inside)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=-1, keepdims=True), eps))


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 comparison: ``is_match`` is ``distance <= threshold``."""

    is_match: bool
    distance: float
    threshold: float
