"""Probe (session 9): does cohort score normalisation (AS-norm) help the door lock?

Adaptive symmetric score normalisation compares a pair's distance with how close each
face lies to a cohort of other people: with μ_x, σ_x the mean and spread of face x's
``k`` smallest distances to the cohort, the pair score is
``½((d−μ_a)/σ_a + (d−μ_b)/σ_b)`` and a pair is accepted when that score is low.  The
cohort here is the training identities' centroids (the mean embedding of up to four of
each one's photos; no held-out identity), i.e. what a released model could carry.

Part 1: TAR at FAR 1e-2 / 1e-3 / 1e-4 over every pair of the held-out photos (the
``evaluate --dense`` set), plain distance against the normalised score for several ``k``.
Part 2: the door at FAR 1e-4 (points fitted on part 1's pairs) on att-orl and yale,
one and three photos enrolled, a quarter of the people never enrolled (the split of
``export faces evaluate``): enrolled probes
let in as themselves, unknown probes let in at all -- for the plain distance, the
normalised score, and both together (distance ≤ the ``far_1e-3`` τ *and* score ≤ z).
Part 3: the median same-person and different-person distance and the 0.1 % quantile of
the different-person ones on each photo set, and on the held-out photos split by the
training set they come from (strangers from one set, i.e. photographed alike, against
strangers from two different sets): where strangers photographed alike sit in the space.
Part 4: the held-out photos made grey (as an infrared door camera would see them): TAR
and the real FAR at the colour photos' ``far_1e-3`` / ``far_1e-4`` τ.

    python scripts/cohort_norm_probe.py [--model models/faces/face_encoder_int8.onnx]
                                        [--model peer] [--k 100]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.faces import data as fdata  # noqa: E402
from export.faces.evaluate import (PEER, Encoder, FaceCropper, _embed_paths,  # noqa: E402
                                   identification_split, photos_of_pairs)
from export.faces.metrics import roc_curve  # noqa: E402
from sdk.distance import l2_normalize, squared_l2  # noqa: E402

FARS = (1e-2, 1e-3, 1e-4)


class Cohort:
    """Per-face statistics of the ``k`` nearest cohort centroids."""

    def __init__(self, centroids: np.ndarray, k: int) -> None:
        self.c, self.k = centroids, min(k, len(centroids))

    def stats(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.sort(squared_l2(e[:, None, :], self.c[None, :, :]), axis=1)[:, :self.k]
        return d.mean(1), d.std(1) + 1e-6

    @staticmethod
    def score(d: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
        (ma, sa), (mb, sb) = a, b
        return 0.5 * ((d - ma[:, None]) / sa[:, None] + (d - mb[None, :]) / sb[None, :])


def tars(score: np.ndarray, same: np.ndarray) -> tuple[list[float], dict[float, float]]:
    far, tar, thr = roc_curve(score, same)
    return ([100 * float(tar[far <= f].max()) for f in FARS],
            {f: float(thr[far <= f][-1]) for f in FARS})


def centroids(enc: Encoder, cache: dict, holdout: set[str], per_identity: int = 4
              ) -> np.ndarray:
    rng = np.random.default_rng(0)
    labels, rows = cache["labels"], []
    for c in np.unique(labels):
        if str(cache["names"][c]) not in holdout:  # never a held-out identity
            rows.append(np.sort(rng.permutation(np.flatnonzero(labels == c))[:per_identity]))
    emb = [l2_normalize(np.asarray(enc(cache["images"][r]))) for r in rows]
    return l2_normalize(np.stack([e.mean(0) for e in emb]))


def door(enc: Encoder, crop: FaceCropper, root: Path, enrol: int, cohort: Cohort,
         rules: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """% of enrolled probes let in as themselves, % of unknown probes let in, per rule."""
    # the people, photos and never-enrolled quarter of `export faces evaluate --identify`
    people, by_person, unknown = identification_split(root)
    gal, glab, probes, plab, unk = [], [], [], [], []
    for i, files in by_person.items():
        if i in unknown:
            unk += files
            continue
        gal += files[:enrol]
        glab += [i] * len(files[:enrol])
        probes += files[enrol:]
        plab += [i] * len(files[enrol:])
    em = _embed_paths(gal + probes + unk, crop, enc)
    g = np.stack([em[str(f)] for f in gal])
    glab_a, gs = np.array(glab), cohort.stats(g)
    out = {}
    for name, (tau, z) in rules.items():
        rates = []
        for files, lab in ((probes, np.array(plab)), (unk, None)):
            x = np.stack([em[str(f)] for f in files])
            d = squared_l2(x[:, None, :], g[None, :, :])
            s = cohort.score(d, cohort.stats(x), gs)
            ok = (d <= tau) & (s <= z)
            key = np.where(ok, s if np.isfinite(z) else d, np.inf)  # nearest passing photo
            passed = np.isfinite(key.min(1))
            if lab is None:
                rates.append(100 * float(passed.mean()))
            else:
                rates.append(100 * float(np.mean(passed & (glab_a[key.argmin(1)] == lab))))
        out[name] = (rates[0], rates[1])
    return out


def main(argv: list[str] | None = None) -> int:
    runs = ROOT / "runs" / "faces"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append",
                    help="face encoder file or 'peer' (repeatable; default: the released "
                         "int8 ONNX file and the peer)")
    ap.add_argument("--k", type=int, default=100, help="cohort neighbours of part 2")
    ap.add_argument("--cache", default=str(runs / "aligned.npz"))
    ap.add_argument("--pairs", default=str(runs / "pairs.txt"))
    ap.add_argument("--split", default=str(runs / "split.json"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = ap.parse_args(argv)
    models = args.model or [str(ROOT / "models/faces/face_encoder_int8.onnx"), "peer"]
    faces = Path(args.shared) / "data" / "faces"
    cache = fdata.load_cache(args.cache)
    holdout = set(json.loads(Path(args.split).read_text())["holdout"])
    photos, names = photos_of_pairs(Path(args.pairs), faces)
    paths = [Path(p) for p in photos]
    crop = FaceCropper()
    for model in models:
        enc = Encoder(PEER if model == "peer" else model, threads=2)
        e = np.stack([v for _, v in sorted(_embed_paths(paths, crop, enc).items())])
        c = centroids(enc, cache, holdout)
        iu = np.triu_indices(len(e), 1)
        dd = squared_l2(e[:, None, :], e[None, :, :])
        same = (names[:, None] == names[None, :])[iu]
        print(f"\n## {enc.name}: {len(e)} held-out photos, cohort {len(c)} training "
              f"identities\n\n| score | TAR % at FAR 1e-2 | 1e-3 | 1e-4 |\n|---|---|---|---|")
        plain, points = tars(dd[iu], same)
        print("| distance d |" + " | ".join(f"{v:.1f}" for v in plain) + " |")
        for k in (10, 50, 100, 300, len(c)):
            co = Cohort(c, k)
            st = co.stats(e)
            t, pts = tars(co.score(dd, st, st)[iu], same)
            print(f"| AS-norm, k {k} |" + " | ".join(f"{v:.1f}" for v in t) + " |")
            if k == args.k:
                z4 = pts[1e-4]
        co = Cohort(c, args.k)
        st = co.stats(e)
        s_all = co.score(dd, st, st)[iu]
        both = (dd[iu] <= points[1e-3])
        imp = np.sort(s_all[both & ~same])
        zb = imp[int(1e-4 * (~same).sum())] - 1e-9
        tar_b = 100 * float(np.mean(both[same] & (s_all[same] <= zb)))
        print(f"| d ≤ τ(1e-3) and AS-norm k {args.k} | | | {tar_b:.1f} |")
        rules = {"distance": (points[1e-4], np.inf), f"AS-norm k {args.k}": (np.inf, z4),
                 "both": (points[1e-3], zb)}
        print(f"\nAt FAR 1e-4 of the held-out pairs: enrolled probes let in as themselves % / "
              f"unknown probes let in %\n\n| set, photos enrolled | "
              + " | ".join(rules) + " |\n|---|" + "---|" * len(rules))
        for setname in ("att-orl", "yale"):
            for enrol in (1, 3):
                r = door(enc, crop, faces / setname, enrol, co, rules)
                print(f"| {setname}, {enrol} | "
                      + " | ".join(f"{a:.0f} / {u:.0f}" for a, u in r.values()) + " |")
        print("\n| photo set | same-person median d | different-person median d | "
              "different-person 0.1 % quantile |\n|---|---|---|---|")
        sets = {"held-out": (paths, names)}
        for setname in ("att-orl", "yale"):
            _, by_person, _ = identification_split(faces / setname)
            files = [f for fs in by_person.values() for f in fs]
            sets[setname] = (files, np.array([f.parent.name for f in files]))
        def row(label: str, d: np.ndarray, s: np.ndarray) -> str:
            return (f"| {label} | {np.median(d[s]):.2f} | {np.median(d[~s]):.2f} | "
                    f"{np.quantile(d[~s], 1e-3):.2f} |")

        for setname, (files, who) in sets.items():
            em = _embed_paths(files, crop, enc)
            x = np.stack([em[str(f)] for f in files])
            ju = np.triu_indices(len(x), 1)
            d = squared_l2(x[:, None, :], x[None, :, :])[ju]
            s = (who[:, None] == who[None, :])[ju]
            print(row(setname, d, s))
        # the held-out photos by the training set each comes from (first part of the name)
        src = np.array([n.split("/")[0] for n in names])
        d, same = dd[iu], (names[:, None] == names[None, :])[iu]
        one_set = (src[:, None] == src[None, :])[iu]
        print(row("held-out, strangers from two sets", d[~one_set | same],
                  same[~one_set | same]))
        for name in np.unique(src):
            mine = one_set & (src[iu[0]] == name)
            if (mine & ~same).sum() >= 1000 and (mine & same).any():
                print(row(f"held-out, within {name}", d[mine], same[mine]))
        grey = enc(fdata.greyscale(np.stack([crop.cache[str(q)] for q in paths])))
        dg = squared_l2(grey[:, None, :], grey[None, :, :])[iu]
        print("\n| held-out photos | τ | FAR | TAR % |\n|---|---|---|---|")
        for f in (1e-3, 1e-4):
            for label, dist in (("colour", d), ("grey", dg)):
                tau = points[f]
                print(f"| {label} | far_{f:g} {tau:.3f} | {np.mean(dist[~same] <= tau):.1e} | "
                      f"{100 * np.mean(dist[same] <= tau):.1f} |")
        enc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
