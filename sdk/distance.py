"""The one distance of the product: squared Euclidean between L2-normalised embeddings.

d(a, b) = ||a - b||^2, in [0, 4] for unit vectors.  Training (``export``'s
triplet loss and threshold calibration) and the runtime use this definition;
``export`` tests check its TensorFlow twin against this function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError, InputShapeError

#: How far from 1 an embedding's length may be: a float32 l2-normalised vector is
#: within ~1e-6 of it; 1e-3 also passes one that went through float16 on the way.
UNIT_TOLERANCE = 1e-3


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d(a, b) = sum_k (a_k - b_k)^2 over the last axis; broadcasts like numpy.

    ``squared_l2(e, gallery)`` with ``e`` of shape (D,) and ``gallery`` (K, D)
    gives the K distances.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim == 0 or b.ndim == 0:
        raise InputShapeError(f"embeddings are vectors, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-1]:
        raise InputShapeError(f"embedding sizes differ: {a.shape[-1]} vs {b.shape[-1]}")
    diff = a - b
    return np.einsum("...k,...k->...", diff, diff)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (the exported encoders already do this inside)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=-1, keepdims=True), eps))


def check_unit_embedding(e: np.ndarray, size: int, name: str = "embedding") -> np.ndarray:
    """``e`` as float32 after checking it is one ``(size,)`` unit vector.

    τ is a distance between unit vectors: a zero, scaled or non-finite vector sits at an
    arbitrary distance from everyone and could pass it, so it is refused.

    Raises:
        InputShapeError: ``e`` is not shaped ``(size,)``.
        InputError: ``e`` is not finite or not of unit length.
    """
    e = np.asarray(e, dtype=np.float32)
    if e.shape != (size,):
        raise InputShapeError(f"{name}: expected ({size},), got {e.shape}")
    norm = float(np.linalg.norm(e))
    if not (np.isfinite(norm) and abs(norm - 1.0) <= UNIT_TOLERANCE):
        raise InputError(f"{name}: expected a unit vector as the verifier gives it, got "
                         f"norm {norm:.4g}; normalise it with sdk.l2_normalize")
    return e


def unit_rows(e: np.ndarray) -> bool:
    """True when every row of the 2-D array ``e`` is a finite unit vector (τ is defined
    on those)."""
    norms = np.linalg.norm(np.asarray(e, dtype=np.float64), axis=-1)
    return bool(np.all(np.isfinite(norms)) and np.all(np.abs(norms - 1.0) <= UNIT_TOLERANCE))


def check_unit_rows(e: np.ndarray, name: str = "embeddings") -> None:
    """Refuse rows that are not unit vectors: τ is a distance between unit vectors, and a
    zero or scaled row could match any probe (or make a fitted τ mean nothing).

    Raises:
        InputError: a row is not finite or not of unit length.
    """
    if not unit_rows(e):
        norms = np.linalg.norm(np.asarray(e, dtype=np.float64), axis=-1)
        raise InputError(f"{name}: expected unit vectors as the verifier gives them, got "
                         f"norms {np.nanmin(norms):.4g}..{np.nanmax(norms):.4g}; normalise "
                         "them with sdk.l2_normalize")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 comparison: ``is_match`` is ``distance <= threshold``."""

    is_match: bool
    distance: float
    threshold: float
