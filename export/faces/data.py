"""Training data for the face encoder: scan, detect + align once, cache, split, augment.

Every photo is aligned with the runtime's own code (``sdk.faces.detector``:
YuNet, largest face, 5-point similarity warp onto the 112x112 ArcFace
template) and cached as uint8 BGR in ``runs/faces/aligned.npz``, so training
sees faces cropped exactly as the device will crop them.

Identities are merged across sets by normalised name (``cfp-500/001_50_Cent``
and ``pins-14/50_cent`` become one person); purely numeric folder names
(CelebA ids, faces94 ids) are kept set-qualified because they cannot be
matched by name.  About 10 % of identities are held out of training and turned
into an LFW-format ``pairs.txt`` with 10 identity-disjoint folds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sdk.contract import LUMA_BGR
from sdk.paths import SHARED_DIR

#: Training sets under ``../shared/data/faces``.
TRAIN_SETS = ("celeba-299", "cfp-500", "imfdb-100", "pins-14", "kpop-15", "faces94-18")
DEFAULT_FACES_ROOT = SHARED_DIR / "data" / "faces"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".gif", ".webp")


class FacesDataError(RuntimeError):
    """The face data is missing, empty or inconsistent."""


def normalise_name(folder: str, source: str) -> str:
    """Identity key of a person folder, used to merge the same person across sets.

    ``001_50_Cent`` -> ``50cent``; ``Alex_Lawther`` -> ``alexlawther``.  Purely
    numeric names are qualified by their set (``celeba-299:07201``) since a
    number says nothing about who it is.
    """
    name = re.sub(r"^\d{3}_", "", folder) if source == "cfp-500" else folder
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    if not key or key.isdigit() or not re.search(r"[a-z]{3}", key):
        return f"{source}:{folder}"
    return key


def list_images(folder: Path) -> list[Path]:
    """Image files of one person folder, sorted by name (the LFW index order)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


@dataclass
class Record:
    """One training photo before alignment."""

    path: Path
    source: str
    folder: str
    key: str


def scan(root: str | os.PathLike = DEFAULT_FACES_ROOT,
         sets: tuple[str, ...] = TRAIN_SETS) -> list[Record]:
    """All photos of ``sets`` under ``root`` as :class:`Record` s, in a stable order."""
    root = Path(root)
    records: list[Record] = []
    missing = [s for s in sets if not (root / s).is_dir()]
    if missing:
        raise FacesDataError(f"{root}: training sets not found: {', '.join(missing)}")
    for source in sets:
        for person in sorted(p for p in (root / source).iterdir() if p.is_dir()):
            key = normalise_name(person.name, source)
            records.extend(Record(img, source, person.name, key) for img in list_images(person))
    if not records:
        raise FacesDataError(f"{root}: no images in {sets}")
    return records


def read_bgr(path: str | os.PathLike) -> np.ndarray | None:
    """An image as BGR uint8 (grey and GIF handled), or ``None`` when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:  # e.g. GIF on some OpenCV builds
        cap = cv2.VideoCapture(str(path))
        ok, img = cap.read()
        cap.release()
        if not ok:
            return None
    return img


def build_cache(out: str | os.PathLike, root: str | os.PathLike = DEFAULT_FACES_ROOT,
                sets: tuple[str, ...] = TRAIN_SETS, detector=None,
                progress: bool = True, limit: int | None = None) -> dict:
    """Detect and align every training photo once and save the result as ``out`` (.npz).

    The arrays saved: ``images`` (N,112,112,3 uint8 BGR), ``labels`` (N int32,
    merged identity index), ``names`` (identity keys), ``sources`` (N, set of
    each photo), ``paths`` (N, relative to ``root``), ``boxes`` (N,4) and
    ``landmarks`` (N,5,2) in original image coordinates.  Photos without a
    detected face are counted and left out.  Returns the arrays.
    """
    from tqdm import tqdm

    from sdk.faces.detector import FaceDetector, align_face

    root = Path(root)
    records = scan(root, sets)
    if limit:
        records = records[:limit]
    det = detector or FaceDetector.create()
    images, keys, sources, paths, boxes, lms = [], [], [], [], [], []
    failed = 0
    for rec in tqdm(records, desc="detect+align", disable=not progress, mininterval=5):
        img = read_bgr(rec.path)
        faces = []
        if img is not None and min(img.shape[:2]) >= 16:
            faces = det.detect(img)
        if not faces:
            failed += 1
            continue
        face = faces[0]
        images.append(align_face(img, face.landmarks))
        keys.append(rec.key)
        sources.append(rec.source)
        paths.append(str(rec.path.relative_to(root)))
        boxes.append(face.box)
        lms.append(face.landmarks)
    if not images:
        raise FacesDataError("no face was detected in any training photo")
    names = sorted(set(keys))
    index = {k: i for i, k in enumerate(names)}
    data = {
        "images": np.stack(images).astype(np.uint8),
        "labels": np.array([index[k] for k in keys], dtype=np.int32),
        "names": np.array(names),
        "sources": np.array(sources),
        "paths": np.array(paths),
        "boxes": np.array(boxes, dtype=np.float32),
        "landmarks": np.stack(lms).astype(np.float32),
        "n_failed": np.array(failed),
        "n_scanned": np.array(len(records)),
        "settings": np.array(json.dumps(cache_settings(root, sets, limit))),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, out)
    return data


def cache_settings(root: str | os.PathLike, sets: tuple[str, ...], limit: int | None) -> dict:
    """What a cache of :func:`build_cache` was made from (stored in it, checked on reuse)."""
    return {"root": str(Path(root).resolve()), "sets": list(sets), "limit": limit}


def cache_mismatch(data: dict, root: str | os.PathLike, sets: tuple[str, ...],
                   limit: int | None) -> list[str]:
    """How a loaded cache's recorded settings differ from these (empty: the same).

    A cache written before caches recorded their settings has none: it reads as unknown.
    """
    if "settings" not in data:
        return ["the cache records no settings (written by an older version)"]
    had = json.loads(str(data["settings"]))
    now = cache_settings(root, sets, limit)
    return [f"{k} {had.get(k)!r} -> {v!r}" for k, v in now.items() if had.get(k) != v]


def load_cache(path: str | os.PathLike) -> dict:
    """The arrays written by :func:`build_cache` (plus any merge applied later)."""
    path = Path(path)
    if not path.is_file():
        raise FacesDataError(f"{path}: aligned-face cache not found; run "
                             f"`python -m export faces prepare` first")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def split_identities(labels: np.ndarray, holdout_fraction: float = 0.1, seed: int = 0,
                     sources: np.ndarray | None = None, min_images: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_ids, holdout_ids): identity indices, disjoint; held-out ones have
    at least ``min_images`` photos and (when ``sources`` is given) come from one set."""
    ids, counts = np.unique(labels, return_counts=True)
    eligible = []
    for i, c in zip(ids, counts):
        if c < min_images:
            continue
        if sources is not None and len(np.unique(sources[labels == i])) > 1:
            continue
        eligible.append(i)
    rng = np.random.default_rng(seed)
    n_hold = max(10, int(round(holdout_fraction * len(ids))))
    if len(eligible) < n_hold:
        raise FacesDataError(f"only {len(eligible)} identities can be held out, need {n_hold}")
    hold = np.sort(rng.choice(np.array(eligible), size=n_hold, replace=False))
    train = np.setdiff1d(ids, hold)
    return train, hold


def write_pairs(path: str | os.PathLike, data: dict, holdout_ids: np.ndarray,
                root: str | os.PathLike = DEFAULT_FACES_ROOT, folds: int = 10,
                pairs_per_fold: int = 150, seed: int = 0) -> dict:
    """Write an LFW-format ``pairs.txt`` over held-out identities, identity-disjoint folds.

    Names are ``<set>/<folder>`` relative to ``root`` and image numbers are
    1-based indices into the folder's sorted image list (see
    :func:`resolve_lfw_image`).  Line 1 is ``<folds> <pairs_per_fold>``; each
    fold has that many matched lines ``name i j`` then that many mismatched
    ``name1 i name2 j``.  Only photos with a detected face are used.
    Returns a summary dict.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = np.array(holdout_ids)
    rng.shuffle(ids)
    fold_ids = np.array_split(ids, folds)
    # per identity: (folder name "set/person", list of 1-based indices into sorted listing)
    person: dict[int, tuple[str, list[int]]] = {}
    for i in ids:
        rel = [Path(p) for p in data["paths"][data["labels"] == i]]
        folder = rel[0].parent
        listing = [p.name for p in list_images(root / folder)]
        person[int(i)] = (folder.as_posix(), sorted(listing.index(r.name) + 1 for r in rel))
    lines = [f"{folds} {pairs_per_fold}"]
    for fids in fold_ids:
        fids = [int(i) for i in fids]
        same = [(i, a, b) for i in fids for a_i, a in enumerate(person[i][1])
                for b in person[i][1][a_i + 1:]]
        counts = np.array([len(person[i][1]) for i in fids])
        # distinct ordered different-person draws (i, a, j, b) the loop below can make
        different = int(counts.sum() ** 2 - (counts ** 2).sum())
        if len(same) < pairs_per_fold or len(fids) < 2 or different < pairs_per_fold:
            raise FacesDataError(
                f"too few held-out photos for {pairs_per_fold} pairs per fold: a fold of "
                f"{len(fids)} people has {len(same)} same-person and {different} "
                "different-person pairs")
        pick = rng.choice(len(same), size=pairs_per_fold, replace=False)
        for k in pick:
            i, a, b = same[k]
            lines.append(f"{person[i][0]} {a} {b}")
        seen = set()
        while len(seen) < pairs_per_fold:
            i, j = rng.choice(fids, size=2, replace=False)
            a = int(rng.choice(person[int(i)][1]))
            b = int(rng.choice(person[int(j)][1]))
            if (i, a, j, b) in seen:
                continue
            seen.add((i, a, j, b))
            lines.append(f"{person[int(i)][0]} {a} {person[int(j)][0]} {b}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return {"folds": folds, "pairs_per_fold": pairs_per_fold, "identities": len(ids),
            "photos": sum(len(v[1]) for v in person.values())}


def resolve_lfw_image(images: str | os.PathLike, name: str, number: int) -> Path:
    """The file of LFW pair entry ``name number`` under ``images``.

    LFW's own layout ``<name>/<name>_<number:04d>.jpg`` is tried first; otherwise
    the ``number``-th (1-based) file of the folder's sorted image list.
    """
    folder = Path(images) / name
    for ext in (".jpg", ".png", ".jpeg"):
        p = folder / f"{Path(name).name}_{number:04d}{ext}"
        if p.is_file():
            return p
    if not folder.is_dir():
        raise FacesDataError(f"{folder}: person folder of pair entry {name!r} not found")
    files = list_images(folder)
    if not 1 <= number <= len(files):
        raise FacesDataError(f"{folder}: image number {number} out of range (1..{len(files)})")
    return files[number - 1]


def parse_lfw_pairs(path: str | os.PathLike) -> tuple[list[tuple[str, int, str, int, bool]], int]:
    """Parse an LFW ``pairs.txt``: ([(name1, n1, name2, n2, same)], folds).

    Pairs are in file order; fold ``k`` is lines ``k*2*n .. (k+1)*2*n``.
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 2:
        raise FacesDataError(f"{path}: first line must be '<folds> <pairs per fold>'")
    folds, n = int(lines[0][0]), int(lines[0][1])
    pairs = []
    for parts in lines[1:]:
        if len(parts) == 3:
            pairs.append((parts[0], int(parts[1]), parts[0], int(parts[2]), True))
        elif len(parts) == 4:
            pairs.append((parts[0], int(parts[1]), parts[2], int(parts[3]), False))
        else:
            raise FacesDataError(f"{path}: bad pair line {' '.join(parts)!r}")
    if len(pairs) != folds * 2 * n:
        raise FacesDataError(f"{path}: expected {folds * 2 * n} pairs, found {len(pairs)}")
    return pairs, folds


# --------------------------------------------------------------------------- augmentation

def augment_batch(images: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                  side_light: float = 0.0) -> np.ndarray:
    """Randomly augmented copies of aligned BGR uint8 faces (N,112,112,3) -> same shape.

    Horizontal flip, small scale/shift/rotation, brightness/contrast/colour
    jitter, blur, greyscale and a random occluding rectangle, each with its
    own probability, so the encoder also holds up on grey and badly lit faces.
    ``side_light``: probability of light from one side, a shading ramp in a random
    direction that darkens the far side of the face by up to 30-90 % (a lamp
    beside a door, a window); 0 draws nothing, so earlier runs' augmentation is unchanged.
    """
    out = np.empty_like(images)
    n, h, w = images.shape[:3]
    if side_light > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        xx, yy = xx / (w - 1) * 2 - 1, yy / (h - 1) * 2 - 1
    for k in range(n):
        img = images[k]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.7 * strength:
            s = 1.0 + rng.uniform(-0.1, 0.1) * strength
            ang = rng.uniform(-8, 8) * strength
            m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, s)
            m[:, 2] += rng.uniform(-5, 5, size=2) * strength
            img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h),
                                 borderMode=cv2.BORDER_REPLICATE)
        img = img.astype(np.float32)
        if rng.random() < 0.8:
            contrast = rng.uniform(1 - 0.35 * strength, 1 + 0.35 * strength)
            bright = rng.uniform(-40, 40) * strength
            colour = rng.uniform(1 - 0.12 * strength, 1 + 0.12 * strength, size=3)
            mean = img.mean()
            img = (img - mean) * contrast + mean + bright
            img = img * colour
            if rng.random() < 0.2 * strength:  # gamma: dark / washed-out light
                g = rng.uniform(0.6, 1.6)
                img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** g
        if side_light > 0 and rng.random() < side_light:
            a = rng.uniform(0, 2 * np.pi)
            # 0 on the lit side, 1 on the far side along a random direction; a soft or a
            # sharp edge (a shadow along the nose under a lamp to one side)
            along = np.cos(a) * xx + np.sin(a) * yy - rng.uniform(-0.3, 0.3)
            t = 1 / (1 + np.exp(-rng.uniform(2, 8) * along))
            gain = (1 - rng.uniform(0.3, 0.9) * t) * rng.uniform(1.0, 1.3)
            img = img * gain[..., None]
        if rng.random() < 0.2 * strength:
            img = np.repeat(img @ LUMA_BGR, 3).reshape(h, w, 3)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if rng.random() < 0.2 * strength:
            kz = int(rng.choice([3, 5]))
            img = cv2.GaussianBlur(img, (kz, kz), 0)
        if rng.random() < 0.15 * strength:  # low resolution
            f = rng.uniform(0.3, 0.6)
            small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))),
                               interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.2 * strength:
            oh, ow = rng.integers(20, 50), rng.integers(20, 60)
            y, x = rng.integers(0, h - oh), rng.integers(0, w - ow)
            img = img.copy()
            img[y:y + oh, x:x + ow] = rng.integers(0, 255, size=3, dtype=np.uint8)
        out[k] = img
    return out


def greyscale(images: np.ndarray) -> np.ndarray:
    """BGR uint8 faces (N,H,W,3) -> the same faces in grey, still 3 channels (uint8)."""
    grey = np.asarray(images, np.float32) @ LUMA_BGR
    return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def bgr_to_model_input(images: np.ndarray) -> np.ndarray:
    """Aligned BGR uint8 faces -> the encoder's input: RGB float32 in 0..255."""
    return images[..., ::-1].astype(np.float32)


def holdout_pairs_on_cache(cache: dict, pairs_file: Path, root: Path
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row_a, row_b, same, fold) of ``pairs_file`` mapped onto cached crops."""
    pairs, folds = parse_lfw_pairs(pairs_file)
    index = {p: k for k, p in enumerate(cache["paths"])}
    ra, rb, same, fold = [], [], [], []
    per_fold = len(pairs) // folds
    for n, (n1, i1, n2, i2, s) in enumerate(pairs):
        a = resolve_lfw_image(root, n1, i1).relative_to(root).as_posix()
        b = resolve_lfw_image(root, n2, i2).relative_to(root).as_posix()
        ra.append(index[a])
        rb.append(index[b])
        same.append(s)
        fold.append(n // per_fold)
    return np.array(ra), np.array(rb), np.array(same), np.array(fold)
