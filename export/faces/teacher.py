"""Teacher embeddings for distillation: dlib's ResNet face descriptor (128-d).

The weights come from the ``face-recognition-models`` package (CC0, by Davis
King) and run with ``dlib-bin``; neither is needed by the SDK runtime.  Two
ways of feeding the teacher are implemented and compared by
``python -m export faces teacher --compare``:

* ``original``: the original photo, dlib's 5-point shape predictor inside the
  YuNet box, ``dlib.get_face_chip`` (150x150, dlib's own alignment);
* ``aligned``: the cached 112x112 ArcFace-aligned crop, upscaled, shape
  predictor over the whole crop, then ``get_face_chip``.

``python -m export faces teacher`` writes ``runs/faces/teacher.npz`` with the
L2-normalised teacher embedding of every cached face (``emb``, N x 128) and
``ok`` (False where the teacher was not run: by default 3 faces per training
identity, ~0.15 s per face).  It also flags identity folders of *different*
sets whose teacher centroids are very close (maybe one person under two
names); ``train --merge-duplicates`` merges them.  With 3 faces per identity
the flags were not reliable here (one CelebA id matched two different actors),
so the released model was trained without merging them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from sdk.distance import l2_normalize, squared_l2

from . import data as fdata


class TeacherUnavailableError(RuntimeError):
    """dlib or the face-recognition-models weights are not installed."""


class DlibTeacher:
    """dlib ResNet descriptor with dlib's own 5-point chip alignment."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise TeacherUnavailableError(
                "distillation needs `pip install dlib-bin face-recognition-models` "
                f"({exc})") from None
        self._dlib = dlib
        self.sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def _chip(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        x, y, w, h = box
        rect = self._dlib.rectangle(int(round(x)), int(round(y)),
                                    int(round(x + w)), int(round(y + h)))
        shape = self.sp(rgb, rect)
        return self._dlib.get_face_chip(rgb, shape, size=150, padding=0.25)

    def chip_original(self, bgr: np.ndarray, box) -> np.ndarray:
        """The teacher's 150x150 RGB chip from the original photo and the YuNet box."""
        return self._chip(np.ascontiguousarray(bgr[..., ::-1]), box)

    def chip_aligned(self, aligned_bgr: np.ndarray) -> np.ndarray:
        """The teacher's chip from a 112x112 ArcFace-aligned crop (upscaled to 224)."""
        big = cv2.resize(aligned_bgr, (224, 224), interpolation=cv2.INTER_CUBIC)
        rgb = np.ascontiguousarray(big[..., ::-1])
        # the aligned face fills roughly this box of the template (x 20..92, y 25..112)*2
        return self._chip(rgb, (36.0, 50.0, 152.0, 170.0))

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """(N,128) L2-normalised descriptors of 150x150 RGB chips."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        out = self.net.compute_face_descriptor(chips)
        return l2_normalize(np.array([np.array(v) for v in out], dtype=np.float32))


def pair_separation(emb: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    n: int = 400) -> dict:
    """ROC AUC and best accuracy of squared-L2 on ``n`` random same and ``n`` different pairs."""
    from .metrics import roc_metrics

    idx = np.arange(len(labels))
    same, diff = [], []
    while len(same) < n:
        i = rng.choice(idx)
        js = idx[(labels == labels[i]) & (idx != i)]
        if len(js):
            same.append((i, rng.choice(js)))
    while len(diff) < n:
        i, j = rng.choice(idx, 2)
        if labels[i] != labels[j]:
            diff.append((i, j))
    pairs = np.array(same + diff)
    d = squared_l2(emb[pairs[:, 0]], emb[pairs[:, 1]])
    y = np.r_[np.ones(n), np.zeros(n)].astype(bool)
    m = roc_metrics(d, y)
    return {"auc": m["auc"], "best_accuracy": m["best_accuracy"], "eer": m["eer"]}


def compare(cache: dict, root: Path, ids: np.ndarray, seed: int = 0, per_id: int = 6) -> dict:
    """Teacher separation with ``original`` vs ``aligned`` input on faces of identities ``ids``."""
    rng = np.random.default_rng(seed)
    t = DlibTeacher()
    sel = []
    for i in ids:
        rows = np.flatnonzero(cache["labels"] == i)
        sel.extend(rng.choice(rows, size=min(per_id, len(rows)), replace=False))
    sel = np.array(sel)
    results = {}
    for mode in ("original", "aligned"):
        t0 = time.time()
        chips = []
        for k in sel:
            if mode == "original":
                img = fdata.read_bgr(root / str(cache["paths"][k]))
                chips.append(t.chip_original(img, cache["boxes"][k]))
            else:
                chips.append(t.chip_aligned(cache["images"][k]))
        emb = t.embed_chips(chips)
        r = pair_separation(emb, cache["labels"][sel], np.random.default_rng(seed))
        r["seconds_per_face"] = (time.time() - t0) / len(sel)
        results[mode] = r
    results["faces"] = int(len(sel))
    return results


def select_rows(labels: np.ndarray, per_identity: int | None, skip_ids=(),
                seed: int = 0) -> np.ndarray:
    """Rows to run the teacher on: at most ``per_identity`` random faces of each
    identity not in ``skip_ids`` (all faces when ``per_identity`` is None)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in np.unique(labels):
        if i in set(int(s) for s in skip_ids):
            continue
        r = np.flatnonzero(labels == i)
        if per_identity is not None and len(r) > per_identity:
            r = rng.choice(r, size=per_identity, replace=False)
        rows.extend(int(k) for k in r)
    return np.sort(np.array(rows, dtype=np.int64))


def compute_all(cache: dict, root: Path, mode: str, batch: int = 32, progress: bool = True,
                rows: np.ndarray | None = None, start: tuple | None = None,
                checkpoint=None, every: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Teacher embeddings of the cached faces ``rows`` (default all):
    (emb (N,128), ok (N,) bool; ok is False for faces not computed).

    ``start`` = (emb, ok) from an earlier run: faces already done are kept and skipped.
    ``checkpoint(emb, ok)`` is called every ``every`` batches so a killed run loses little.
    """
    from tqdm import tqdm

    t = DlibTeacher()
    n = len(cache["labels"])
    rows_all = np.arange(n) if rows is None else np.asarray(rows)
    if start is not None:
        emb, ok = start[0].copy(), start[1].copy()
        rows_all = rows_all[~ok[rows_all]]
    else:
        emb = np.zeros((n, 128), np.float32)
        ok = np.zeros(n, bool)
    for j, s in enumerate(tqdm(range(0, len(rows_all), batch), desc=f"teacher ({mode})",
                               disable=not progress, mininterval=10)):
        if checkpoint is not None and j and j % every == 0:
            checkpoint(emb, ok)
        rows = [int(k) for k in rows_all[s:s + batch]]
        chips, good = [], []
        for k in rows:
            if mode == "original":
                img = fdata.read_bgr(root / str(cache["paths"][k]))
                if img is None:
                    continue
                chips.append(t.chip_original(img, cache["boxes"][k]))
            else:
                chips.append(t.chip_aligned(cache["images"][k]))
            good.append(k)
        emb[good] = t.embed_chips(chips)
        ok[good] = True
    return emb, ok


def near_duplicate_identities(cache: dict, emb: np.ndarray, ok: np.ndarray,
                              threshold: float = 0.12) -> list[tuple[int, int, float]]:
    """Pairs of identities from *different* sets whose teacher centroids are closer
    than ``threshold`` (squared L2 of normalised centroids): likely one person."""
    labels, sources = cache["labels"], cache["sources"]
    ids = np.unique(labels)
    ids = np.array([i for i in ids if ok[labels == i].any()])
    cents = np.stack([l2_normalize(emb[(labels == i) & ok].mean(0)) for i in ids])
    src = [set(sources[labels == i]) for i in ids]
    d = squared_l2(cents[:, None], cents[None])
    out = []
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            if d[a, b] < threshold and not (src[a] & src[b]):
                out.append((int(ids[a]), int(ids[b]), float(d[a, b])))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m export faces teacher [--compare] [--mode original|aligned] [--merge]``."""
    from .cli import FACES, RUNS

    ap = argparse.ArgumentParser(prog="python -m export faces teacher")
    ap.add_argument("--cache", default=str(RUNS / "aligned.npz"))
    ap.add_argument("--root", default=str(FACES))
    ap.add_argument("--out", default=str(RUNS / "teacher.npz"))
    ap.add_argument("--split", default=str(RUNS / "split.json"))
    ap.add_argument("--compare", action="store_true",
                    help="only measure original vs aligned teacher input on held-out faces")
    ap.add_argument("--mode", choices=("original", "aligned"), default="aligned",
                    help="teacher input (aligned measured better here: see --compare)")
    ap.add_argument("--per-identity", type=int, default=8,
                    help="teacher on at most this many faces per training identity "
                         "(0: all; ~0.15 s per face on one CPU core)")
    ap.add_argument("--fresh", action="store_true",
                    help="recompute every face instead of keeping those already in --out")
    ap.add_argument("--merge-threshold", type=float, default=0.04)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import json

    cache = fdata.load_cache(args.cache)
    root = Path(args.root)
    if args.compare:
        names = list(cache["names"])
        hold = json.loads(Path(args.split).read_text())["holdout"]
        ids = np.array([names.index(h) for h in hold])
        print(json.dumps(compare(cache, root, ids, seed=args.seed), indent=1))
        return 0
    names = list(cache["names"])
    hold = json.loads(Path(args.split).read_text())["holdout"] if Path(args.split).is_file() else []
    rows = select_rows(cache["labels"], args.per_identity or None,
                       skip_ids=[names.index(h) for h in hold], seed=args.seed)
    start = None
    if Path(args.out).is_file() and not args.fresh:
        with np.load(args.out) as z:
            if str(z["mode"]) == args.mode and len(z["ok"]) == len(cache["labels"]):
                start = (z["emb"], z["ok"])
                print(f"{args.out}: {int(z['ok'].sum())} faces already embedded, kept")
            else:
                print(f"{args.out} was made with another mode or cache: starting afresh")

    def save(emb, ok, dups=()):
        tmp = Path(args.out).with_suffix(".tmp.npz")
        np.savez(tmp, emb=emb, ok=ok, mode=np.array(args.mode),
                 duplicates=np.array(dups, dtype=np.float64).reshape(-1, 3))
        os.replace(tmp, args.out)  # atomic: a killed run leaves the last checkpoint

    emb, ok = compute_all(cache, root, args.mode, rows=rows, start=start, checkpoint=save)
    dups = near_duplicate_identities(cache, emb, ok, args.merge_threshold)
    names = cache["names"]
    for a, b, dist in dups:
        print(f"likely same person: {names[a]} ~ {names[b]} (centroid d={dist:.3f})")
    save(emb, ok, dups)
    print(f"teacher embeddings of {int(ok.sum())}/{len(ok)} faces -> {args.out}; "
          f"{len(dups)} cross-set identity pairs flagged as the same person")
    return 0
