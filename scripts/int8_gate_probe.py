"""Probe (session 11): how noisy is the release's int8 gate?

`export faces release` refuses a quantised file whose 10-fold accuracy on the held-out
pair list is more than 0.5 points below the float model's.  Both accuracies come from
the same 3000 pairs, so the drop is a paired difference: this probe counts, per float /
quantised pair of files, the pairs each one alone decides right under the 10-fold
protocol (τ from the other nine folds), McNemar's exact two-sided p-value for those
discordant pairs, and a bootstrap interval of the drop (pairs resampled within folds,
thresholds kept).  A drop that is many discordant pairs in one direction is a real loss;
one that is a handful net out of many both ways is noise.

    python scripts/int8_gate_probe.py FLOAT QUANTISED [FLOAT QUANTISED ...]

Session 11 ran it on runs/faces/run10/model.keras with release10/face_encoder_int8.onnx and
.tflite, then runs/faces/run11/model.keras with export11/face_encoder_int8.onnx and
release11/face_encoder_int8.tflite (runs/faces/int8_gate_probe.log).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from export.faces import data as fdata  # noqa: E402
from export.faces.evaluate import Encoder, FaceCropper, _embed_paths  # noqa: E402
from export.faces.metrics import best_threshold  # noqa: E402
from sdk.distance import squared_l2  # noqa: E402


def fold_decisions(d: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Whether each pair is decided right with τ fitted on the other folds."""
    right = np.zeros(len(d), bool)
    for f in np.unique(folds):
        held = folds == f
        tau, _ = best_threshold(d[~held], same[~held])
        right[held] = (d[held] <= tau) == same[held]
    return right


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for b and c discordant pairs."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="float and quantised files, in pairs")
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "faces"))
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args(argv)
    if len(args.models) % 2:
        ap.error("give the models in float / quantised pairs")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    images = Path(args.images)
    parsed, n_folds = fdata.parse_lfw_pairs(Path(args.pairs))
    per = len(parsed) // n_folds
    items = [(fdata.resolve_lfw_image(images, a, i), fdata.resolve_lfw_image(images, b, j), s)
             for a, i, b, j, s in parsed]
    folds = np.arange(len(items)) // per
    same = np.array([s for _, _, s in items], bool)
    crop = FaceCropper()
    right = {}
    for path in args.models:
        enc = Encoder(path, threads=2)
        emb = _embed_paths([p for a, b, _ in items for p in (a, b)], crop, enc)
        enc.close()
        d = squared_l2(np.stack([emb[str(a)] for a, _, _ in items]),
                       np.stack([emb[str(b)] for _, b, _ in items]))
        right[path] = fold_decisions(d, same, folds)
    rng = np.random.default_rng(0)
    print(f"{len(items)} pairs, {n_folds} folds; drop = float - quantised, 10-fold protocol\n")
    print("| float | quantised | accuracy float / quantised | drop (points) | right only in "
          "float / only in quantised | McNemar p | 95 % bootstrap interval of the drop |")
    print("|---|---|---|---|---|---|---|")
    for f_path, q_path in zip(args.models[0::2], args.models[1::2]):
        rf, rq = right[f_path], right[q_path]
        b, c = int((rf & ~rq).sum()), int((~rf & rq).sum())
        drops = []
        for _ in range(args.draws):
            idx = np.concatenate([rng.choice(np.flatnonzero(folds == f), per)
                                  for f in range(n_folds)])
            drops.append(100 * (rf[idx].mean() - rq[idx].mean()))
        lo, hi = np.percentile(drops, [2.5, 97.5])
        print(f"| {f_path} | {q_path} | {100 * rf.mean():.2f} / {100 * rq.mean():.2f} | "
              f"{100 * (rf.mean() - rq.mean()):+.2f} | {b} / {c} | {mcnemar_p(b, c):.2f} | "
              f"{lo:+.2f} … {hi:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
