"""Audit (session 15): is every held-out face really unseen in training?

The split (``runs/faces/split.json``) holds out *labels*.  A person filed under two
names, or the same photo under two identities, would put a "held-out" face into
training.  This script looks for both, on the cached aligned crops:

1. byte-identical crops, and groups of them that span training and held-out rows;
2. near-identical crops across the split (32x32 grey thumbnails, correlation);
3. one person under two names: a held-out identity with a crop nearer than
   ``--max-photo-distance`` to a training crop (embeddings of ``--model``), or whose
   name reads like a training identity's; drawn next to each other in ``--plot``, to
   look at (a look-alike is not the same person);
4. the held-out numbers with and without ``--exclude`` identities (default: the
   candidates of 3): the listed pairs' 10-fold accuracy and AUC, and TAR at FAR
   1e-2 / 1e-3 / 1e-4 over every pair of the listed photos, on the cached crops.

    python scripts/split_audit.py [--model models/faces/face_encoder_fp32.onnx]
        [--plot build/split_audit.png] [--exclude NAME ...]

Needs runs/faces/aligned.npz, split.json and pairs.txt (`make faces-data`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

import sdk  # noqa: E402
from export.faces import data as fdata  # noqa: E402 - numpy and OpenCV only, no TensorFlow
from export.faces.metrics import roc_curve, roc_metrics, tar_on_roc, ten_fold  # noqa: E402
from sdk.distance import squared_l2  # noqa: E402


def thumbnails(images: np.ndarray, size: int = 32) -> np.ndarray:
    """Zero-mean, unit-length grey thumbnails: their dot product is a correlation that
    ignores brightness and contrast (a re-encoded or re-exposed copy stays near 1)."""
    grey = np.stack([cv2.resize(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), (size, size),
                                interpolation=cv2.INTER_AREA) for im in images])
    t = grey.reshape(len(grey), -1).astype(np.float64)
    t -= t.mean(1, keepdims=True)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)


def _name_alike(a: str, b: str, ratio: float = 0.85) -> bool:
    """Names that read alike once set prefixes, digits and separators are dropped
    (``aamairkhan`` / ``027_Amir_Khan``): CelebA's numeric ids never match."""
    import difflib

    def key(n: str) -> str:
        return "".join(ch for ch in n.split(":")[-1].lower() if ch.isalpha())

    ka, kb = key(a), key(b)
    return len(ka) >= 5 and len(kb) >= 5 and difflib.SequenceMatcher(None, ka, kb).ratio() >= ratio


def held_out_numbers(emb, labels, ra, rb, same, fold, drop: set[int]) -> str:
    keep = ~(np.isin(labels[ra], list(drop)) | np.isin(labels[rb], list(drop)))
    d = squared_l2(emb[ra[keep]], emb[rb[keep]])
    tf = ten_fold(d, same[keep], fold[keep])
    auc = roc_metrics(d, same[keep])["auc"]
    rows = np.unique(np.concatenate([ra[keep], rb[keep]]))
    i, j = np.triu_indices(len(rows), 1)
    dd = squared_l2(emb[rows[i]], emb[rows[j]])
    s = labels[rows[i]] == labels[rows[j]]
    far, tar, _ = roc_curve(dd, s)
    tars = " / ".join(f"{100 * tar_on_roc(far, tar, t):.2f}" for t in (1e-2, 1e-3, 1e-4))
    return (f"{keep.sum()} listed pairs: 10-fold {100 * tf['accuracy_mean']:.2f} %, AUC "
            f"{auc:.4f}; every pair of {len(rows)} photos ({s.sum()} same, {(~s).sum()} "
            f"different): TAR at FAR 1e-2 / 1e-3 / 1e-4 {tars} %")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_fp32.onnx"))
    ap.add_argument("--runs", default=str(ROOT / "runs/faces"))
    ap.add_argument("--root", default=str(fdata.DEFAULT_FACES_ROOT))
    ap.add_argument("--max-photo-distance", type=float, default=0.2,
                    help="a held-out and a training crop this close (squared L2) are the "
                         "same person's (default 0.2)")
    ap.add_argument("--min-correlation", type=float, default=0.97,
                    help="near-identical crops: thumbnail correlation at least this")
    ap.add_argument("--exclude", nargs="*", default=None,
                    help="identities left out in step 4 (default: the alias candidates)")
    ap.add_argument("--plot", default=str(ROOT / "build/split_audit.png"))
    args = ap.parse_args()
    runs = Path(args.runs)
    for name in ("aligned.npz", "split.json", "pairs.txt"):
        if not (runs / name).exists():
            raise SystemExit(f"{runs / name} is missing: run `make faces-data`")

    cache = fdata.load_cache(runs / "aligned.npz")
    images, labels, names = cache["images"], cache["labels"], list(cache["names"])
    holdout = json.loads((runs / "split.json").read_text())["holdout"]
    held_ids = {names.index(h) for h in holdout}
    held = np.isin(labels, list(held_ids))
    print(f"{len(images)} cached crops of {len(names)} identities; held out: "
          f"{len(held_ids)} identities, {held.sum()} crops")

    # 1. byte-identical crops
    groups = defaultdict(list)
    for k, im in enumerate(images):
        groups[hashlib.sha1(im.tobytes()).hexdigest()].append(k)
    same_bytes = [g for g in groups.values() if len(g) > 1]
    across = [g for g in same_bytes if held[g].any() and not held[g].all()]
    two_names = [g for g in same_bytes if len(set(labels[g])) > 1]
    print(f"1. byte-identical groups: {len(same_bytes)}; spanning training and held-out: "
          f"{len(across)}; under two or more identities: {len(two_names)}")

    # 2. near-identical crops across the split
    th, tt = thumbnails(images[held]), thumbnails(images[~held])
    corr = th @ tt.T
    best = corr.max(1)
    near = np.flatnonzero(best >= args.min_correlation)
    held_rows, train_rows = np.flatnonzero(held), np.flatnonzero(~held)
    print(f"2. held-out crops with a training crop of thumbnail correlation >= "
          f"{args.min_correlation}: {len(near)}")
    for k in near[np.argsort(-best[near])][:10]:
        a, b = held_rows[k], train_rows[corr[k].argmax()]
        print(f"   {cache['paths'][a]} ~ {cache['paths'][b]} ({best[k]:.3f})")

    # 3. one person under two names.  Identity centres cannot tell that apart from
    # look-alikes (K-pop idols and IMFDB actors sit as close as anyone), so two sharper
    # signals: a pair of crops closer than --max-photo-distance (the same photo or the
    # same session), and names that read alike across the sets.
    with sdk.FaceVerifier.create(args.model, threads=2) as fv:
        emb = np.concatenate([fv.embed_aligned(images[i:i + 256])
                              for i in range(0, len(images), 256)])
    photo_pairs = defaultdict(list)
    for start in range(0, len(held_rows), 16):  # 16 x 13k x 128 floats at a time
        rows = held_rows[start:start + 16]
        dist = squared_l2(emb[rows][:, None, :], emb[train_rows][None, :, :])
        for a, b in zip(*np.nonzero(dist < args.max_photo_distance)):
            photo_pairs[(int(labels[rows[a]]), int(labels[train_rows[b]]))].append(
                float(dist[a, b]))
    train_ids = sorted(set(labels[~held].tolist()))
    by_name = [(h, t) for h in sorted(held_ids) for t in train_ids
               if _name_alike(names[h], names[t])]
    candidates = sorted(set(photo_pairs) | set(by_name))
    print(f"3. held-out identities that may be a training identity under another name: "
          f"{len(candidates)} (crop pairs with d < {args.max_photo_distance:g}, or names "
          "alike)")
    tiles = []
    for h, t in candidates:
        close = sorted(photo_pairs.get((h, t), []))
        why = (f"{len(close)} crop pair(s) at d {', '.join(f'{x:.3f}' for x in close[:3])}"
               if close else "names alike")
        print(f"   {names[h]} (held out, {(labels == h).sum()} crops) ~ {names[t]} "
              f"(training, {(labels == t).sum()} crops): {why}")
        row = [images[k] for k in np.flatnonzero(labels == h)[:4]]
        row += [images[k] for k in np.flatnonzero(labels == t)[:4]]
        row += [np.zeros_like(images[0])] * (8 - len(row))
        tiles.append(np.concatenate(row, axis=1))
    if tiles:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(args.plot, np.concatenate(tiles, axis=0))
        print(f"   4 held-out crops (left) next to 4 of the training identity -> {args.plot}; "
              "look: a look-alike is not the same person")

    # 4. the held-out numbers with and without them
    drop = ({names.index(n) for n in args.exclude} if args.exclude is not None
            else {h for h, _ in candidates})
    ra, rb, same, fold = fdata.holdout_pairs_on_cache(cache, runs / "pairs.txt", Path(args.root))
    print(f"4. {Path(args.model).name} on the cached crops")
    print(f"   all {len(held_ids)} held-out identities: "
          + held_out_numbers(emb, labels, ra, rb, same, fold, set()))
    if drop:
        print(f"   without {', '.join(sorted(str(names[k]) for k in drop))}: "
              + held_out_numbers(emb, labels, ra, rb, same, fold, drop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
