"""Probe (session 14): are there wrong labels among the training faces?

Margin losses punish a wrongly labelled photo hardest at the strict end of the ROC, so a
cleaner training set is a candidate lever for the low-FAR gap (issue #5).  A photo is
*suspect* when it lies nearer another identity's centre than its own (its own centre
computed without it) for both the released encoder and the dlib teacher; *strongly
suspect* when it is also among the 5 % farthest from its own centre.  The counts are
printed per photo set, and a random sample of the strong suspects is drawn next to five
other photos of their identity, to look at: a wrong label shows another person.

    python scripts/label_noise_probe.py [--model models/faces/face_encoder_int8.onnx]
        [--plot build/label_noise.png] [--show 12] [--seed 1]

Needs runs/faces/aligned.npz, teacher.npz and split.json (`make faces-data faces-teacher`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

import sdk  # noqa: E402
from export.faces.data import load_cache  # noqa: E402 - numpy and OpenCV only, no TensorFlow
from sdk.distance import squared_l2  # noqa: E402


def centre_margins(emb: np.ndarray, labels: np.ndarray, chunk: int = 512
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The product's distance (``sdk.distance.squared_l2``) of each row to its own class
    centre (leave-one-out) and to the nearest other class centre."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), emb.shape[1]))
    np.add.at(sums, inverse, emb)
    centres = sums / counts[:, None]
    own_centre = (sums[inverse] - emb) / np.maximum(counts[inverse] - 1, 1)[:, None]
    own = squared_l2(emb, own_centre)
    other = np.empty(len(emb), np.float32)
    for start in range(0, len(emb), chunk):  # rows x centres x D at once would be gigabytes
        d = squared_l2(emb[start:start + chunk, None, :], centres[None, :, :])
        d[np.arange(len(d)), inverse[start:start + chunk]] = np.inf
        other[start:start + chunk] = d.min(1)
    return own, other


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--runs", default=str(ROOT / "runs/faces"))
    ap.add_argument("--plot", default=str(ROOT / "build/label_noise.png"))
    ap.add_argument("--show", type=int, default=12, help="strong suspects drawn")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    runs = Path(args.runs)
    for name in ("aligned.npz", "teacher.npz", "split.json"):
        if not (runs / name).exists():
            raise SystemExit(f"{runs / name} is missing: run `make faces-data faces-teacher`")

    cache = load_cache(runs / "aligned.npz")
    teacher = np.load(runs / "teacher.npz", allow_pickle=False)
    labels, names, sources = cache["labels"], cache["names"], cache["sources"]
    holdout = set(json.loads((runs / "split.json").read_text())["holdout"])
    in_training = np.array([names[label] not in holdout for label in labels])
    train = np.flatnonzero(in_training & teacher["ok"])
    with sdk.FaceVerifier.create(args.model, threads=1) as fv:
        student = np.concatenate([fv.embed_aligned(cache["images"][train[i:i + 256]])
                                  for i in range(0, len(train), 256)])
    s_own, s_other = centre_margins(student, labels[train])
    t_own, t_other = centre_margins(teacher["emb"][train], labels[train])
    suspect = (s_other < s_own) & (t_other < t_own)
    strong = suspect & (s_own > np.percentile(s_own, 95))

    print(f"{len(train)} training faces; nearer another identity's centre: encoder "
          f"{(s_other < s_own).mean():.1%}, teacher {(t_other < t_own).mean():.1%}, both "
          f"{suspect.mean():.1%}; strongly suspect {strong.sum()}")
    print(f"{'set':12s} {'faces':>6s} {'encoder':>8s} {'teacher':>8s} {'both':>6s} {'strong':>7s}")
    for s in np.unique(sources[train]):
        k = sources[train] == s
        print(f"{s:12s} {k.sum():6d} {(s_other[k] < s_own[k]).sum():8d} "
              f"{(t_other[k] < t_own[k]).sum():8d} {suspect[k].sum():6d} {strong[k].sum():7d}")

    rng = np.random.default_rng(args.seed)
    picks = train[rng.choice(np.flatnonzero(strong), min(args.show, strong.sum()), replace=False)]
    rows = []
    for i in picks:
        others = [j for j in np.flatnonzero(labels == labels[i]) if j != i][:5]
        tiles = [cache["images"][i]] + [cache["images"][j] for j in others]
        tiles += [np.zeros_like(tiles[0])] * (6 - len(tiles))
        row = np.concatenate(tiles, axis=1)
        cv2.putText(row, f"{sources[i]} {names[labels[i]]}"[:36], (2, 10),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1)
        rows.append(row)
    if rows:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(args.plot, np.concatenate(rows, axis=0))
        print(f"{len(rows)} strong suspects (left) next to 5 photos of their label -> {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
