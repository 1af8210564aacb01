"""The binary verification heads on a pair, trained on frozen embeddings and
compared with the plain distance: ``python -m export faces heads --model M.keras``.

ŷ = σ(Σ_k w_k φ_k(f_i, f_j) + b) with φ = |f_i − f_j| (``abs``) or the
signed-safe χ² form (f_i − f_j)² / (|f_i| + |f_j| + ε) (``chi2``; see
:func:`export.faces.model.pair_features` for why |·| in the denominator).
The heads learn on pairs of *training* identities (balanced, random) and are
scored on the held-out ``pairs.txt`` with the same 10-fold protocol as the
distance (their decision threshold on ŷ is chosen on 9 folds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sdk.distance import squared_l2

from . import data as fdata
from .metrics import roc_metrics, ten_fold


def sample_pairs(labels: np.ndarray, rows: np.ndarray, n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` same and ``n`` different random pairs among ``rows``: (a, b, same)."""
    by = {}
    for r in rows:
        by.setdefault(int(labels[r]), []).append(int(r))
    multi = [i for i, v in by.items() if len(v) >= 2]
    a, b = [], []
    for _ in range(n):
        i = multi[rng.integers(len(multi))]
        x, y = rng.choice(by[i], 2, replace=False)
        a.append(x)
        b.append(y)
    while len(a) < 2 * n:
        x, y = rng.choice(rows, 2)
        if labels[x] != labels[y]:
            a.append(int(x))
            b.append(int(y))
    return np.array(a), np.array(b), np.r_[np.ones(n, bool), np.zeros(n, bool)]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces heads``."""
    import keras

    from .cli import FACES, RUNS
    from .model import build_pair_head
    from .data import holdout_pairs_on_cache
    from .train import embed_images

    ap = argparse.ArgumentParser(prog="python -m export faces heads")
    ap.add_argument("--model", required=True, help="trained encoder (.keras)")
    ap.add_argument("--cache", default=str(RUNS / "aligned.npz"))
    ap.add_argument("--split", default=str(RUNS / "split.json"))
    ap.add_argument("--pairs", default=str(RUNS / "pairs.txt"))
    ap.add_argument("--root", default=str(FACES))
    ap.add_argument("--train-pairs", type=int, default=4000, help="same (and different) pairs")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from . import model as _m  # noqa: F401

    keras.utils.set_random_seed(args.seed)
    enc = keras.models.load_model(args.model, compile=False)
    cache = fdata.load_cache(args.cache)
    names = list(cache["names"])
    hold = [names.index(h) for h in json.loads(Path(args.split).read_text())["holdout"]]
    labels = cache["labels"]
    train_rows = np.flatnonzero(~np.isin(labels, hold))
    rng = np.random.default_rng(args.seed)
    ta, tb, ts = sample_pairs(labels, train_rows, args.train_pairs, rng)
    va, vb, vs, vf = holdout_pairs_on_cache(cache, Path(args.pairs), Path(args.root))
    need = np.unique(np.r_[ta, tb, va, vb])
    emb = np.zeros((len(labels), 128), np.float32)
    emb[need] = embed_images(enc, cache["images"][need])

    results = {}
    d = squared_l2(emb[va], emb[vb])
    results["squared_l2"] = {**{k: v for k, v in roc_metrics(d, vs).items()
                                if k in ("auc", "eer", "tar_at_far_1e-3")},
                             "ten_fold": ten_fold(d, vs, vf)["accuracy_mean"]}
    for form in ("abs", "chi2"):
        head = build_pair_head(form)
        head.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        head.fit([emb[ta], emb[tb]], ts.astype(np.float32), epochs=args.epochs, batch_size=256,
                 verbose=0, shuffle=True)
        score = np.asarray(head.predict([emb[va], emb[vb]], verbose=0)).ravel()
        dist = 1.0 - score  # smaller = more alike, as for the metrics helpers
        tf_ = ten_fold(dist, vs, vf)
        rm = roc_metrics(dist, vs)
        results[f"head_{form}"] = {"auc": rm["auc"], "eer": rm["eer"],
                                   "tar_at_far_1e-3": rm["tar_at_far_1e-3"],
                                   "ten_fold": tf_["accuracy_mean"],
                                   "accuracy_at_0.5": float(np.mean((score >= 0.5) == vs))}
    for k, v in results.items():
        print(f"{k:>12}: 10-fold acc {100 * v['ten_fold']:.2f}%  AUC {v['auc']:.4f}  "
              f"EER {100 * v['eer']:.2f}%  TAR@FAR1e-3 {100 * v['tar_at_far_1e-3']:.1f}%"
              + (f"  acc@ŷ≥0.5 {100 * v['accuracy_at_0.5']:.2f}%"
                 if "accuracy_at_0.5" in v else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
