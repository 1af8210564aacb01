"""Short grey clips (frames, h, w, 1) built from AT&T/ORL photos: a 3D input.

A clip cross-fades from one photo of a person to another while the frame
drifts (shift and zoom), so it has motion and a change of pose/expression.
Synthetic clips made from real photos: they show the 3D pipeline working end
to end, not accuracy on real video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces" / "att-orl"


def load_people(root: str | Path = DEFAULT_ROOT) -> list[list[np.ndarray]]:
    """One list of grey uint8 photos per person folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is absent (AT&T/ORL faces from ../shared)")
    people = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in sorted(d.glob("*.png"))]
        imgs = [i for i in imgs if i is not None]
        if imgs:
            people.append(imgs)
    if not people:
        raise FileNotFoundError(f"no photos under {root}")
    return people


def _frame(img: np.ndarray, size: int, shift: tuple[float, float], zoom: float) -> np.ndarray:
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, zoom)
    m[:, 2] += shift
    warped = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)


def make_clip(photos: list[np.ndarray], rng: np.random.Generator, frames: int = 8,
              size: int = 32) -> np.ndarray:
    """One clip (frames, size, size, 1) float32 in 0..255."""
    a, b = rng.choice(len(photos), size=2, replace=len(photos) < 2)
    start = rng.uniform(-4, 4, size=2)
    end = start + rng.uniform(-6, 6, size=2)
    z0, z1 = rng.uniform(0.95, 1.1, size=2)
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        fa = _frame(photos[a], size, tuple(start + t * (end - start)), z0 + t * (z1 - z0))
        fb = _frame(photos[b], size, tuple(start + t * (end - start)), z0 + t * (z1 - z0))
        out.append((1 - t) * fa.astype(np.float32) + t * fb.astype(np.float32))
    return np.stack(out)[..., None]


def make_dataset(root: str | Path = DEFAULT_ROOT, clips_per_person: int = 12, frames: int = 8,
                 size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Clips (N, frames, size, size, 1) float32 and person labels (N,)."""
    rng = np.random.default_rng(seed)
    people = load_people(root)
    xs, ys = [], []
    for label, photos in enumerate(people):
        for _ in range(clips_per_person):
            xs.append(make_clip(photos, rng, frames, size))
            ys.append(label)
    return {"x": np.stack(xs).astype(np.float32), "y": np.asarray(ys, np.int32),
            "names": np.asarray([f"s{i + 1}" for i in range(len(people))])}
