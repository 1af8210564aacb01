"""Probe (session 10): can one linear map after the encoder close the low-FAR gap?

The encoder's unit embeddings e are mapped to ``normalize(W (e − μ))`` -- a 128×128 layer
and a second L2 normalisation appended to the model, about 16 k multiply-adds -- with W
fitted on the training identities only (never a held-out one):

- WCCN (within-class covariance normalisation): ``W = (S_w + λ·s̄·I)^(−1/2)``, S_w the
  covariance of each training face around its identity's mean, s̄ its mean eigenvalue and
  λ a shrinkage towards the identity map.  It shrinks the directions along which one
  person's photos vary (pose, light, camera) and stretches the rest.
- NAP (nuisance attribute projection): ``W = I − U_r U_rᵀ``, U_r the r leading directions
  in which the six training photo sets' mean faces differ: what the photo set's look adds.
- both: NAP, then WCCN fitted on the projected embeddings.

Each map is judged on what the encoder never saw: TAR at FAR 1e-2 / 1e-3 / 1e-4 over every
pair of the held-out photos (the ``evaluate --dense`` set); the 0.1 % quantile of the
different-person distances within each held-out photo set and between sets (part 3 of
``cohort_norm_probe.py``); and the door at the map's own FAR-1e-4 τ (fitted on those
pairs) on att-orl and yale, one and three photos enrolled, a quarter of the people never
enrolled (the split of ``export faces evaluate``): enrolled probes let in as themselves %,
unknown probes let in %.

    python scripts/linear_map_probe.py [--model models/faces/face_encoder_int8.onnx]
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
from export.faces.evaluate import (Encoder, FaceCropper, _embed_paths,  # noqa: E402
                                   identification_split, photos_of_pairs)
from export.faces.metrics import roc_curve  # noqa: E402
from sdk.distance import l2_normalize, squared_l2  # noqa: E402

FARS = (1e-2, 1e-3, 1e-4)


def inv_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def within_cov(e: np.ndarray, labels: np.ndarray) -> np.ndarray:
    centred = e.copy()
    for c in np.unique(labels):
        m = labels == c
        centred[m] -= e[m].mean(0)
    return centred.T @ centred / max(len(e) - len(np.unique(labels)), 1)


def wccn(e: np.ndarray, labels: np.ndarray, lam: float) -> np.ndarray:
    s = within_cov(e, labels)
    return inv_sqrt(s + lam * np.trace(s) / len(s) * np.eye(len(s)))


def nap(e: np.ndarray, labels: np.ndarray, sources: np.ndarray, r: int) -> np.ndarray:
    # each set's mean over its identities' means, so a set with many photos per person
    # does not weigh its people by photo count
    ids = np.unique(labels)
    cent = np.stack([e[labels == c].mean(0) for c in ids])
    src = np.array([sources[labels == c][0] for c in ids])
    means = np.stack([cent[src == s].mean(0) for s in np.unique(src)])
    u, _, _ = np.linalg.svd((means - means.mean(0)).T, full_matrices=False)
    return np.eye(e.shape[1]) - u[:, :r] @ u[:, :r].T


class Map:
    def __init__(self, w: np.ndarray, mu: np.ndarray) -> None:
        self.w, self.mu = w, mu

    def __call__(self, e: np.ndarray) -> np.ndarray:
        return l2_normalize((e - self.mu) @ self.w.T)


def tars(d: np.ndarray, same: np.ndarray) -> tuple[list[float], dict[float, float]]:
    far, tar, thr = roc_curve(d, same)  # scores are distances: low = same person
    return ([100 * float(tar[far <= f].max()) for f in FARS],
            {f: float(thr[far <= f][-1]) for f in FARS})


def door(sets: dict, f: Map, tau: float) -> list[str]:
    cells = []
    for gal, glab, probes, plab, unk in sets.values():
        g = f(gal)
        rates = []
        for x, lab in ((f(probes), plab), (f(unk), None)):
            d = squared_l2(x[:, None, :], g[None, :, :])
            near = d.argmin(1)
            ok = d.min(1) <= tau
            rates.append(100 * float(ok.mean() if lab is None
                                     else np.mean(ok & (glab[near] == lab))))
        cells.append(f"{rates[0]:.0f} / {rates[1]:.0f}")
    return cells


def door_best(sets: dict, f: Map) -> list[str]:
    """Enrolled probes let in as themselves % at the largest τ that lets no unknown in:
    how well the map separates each camera's people, whatever τ a site would pick."""
    cells = []
    for gal, glab, probes, plab, unk in sets.values():
        g = f(gal)
        tau = squared_l2(f(unk)[:, None, :], g[None, :, :]).min() - 1e-9
        d = squared_l2(f(probes)[:, None, :], g[None, :, :])
        ok = (d.min(1) <= tau) & (glab[d.argmin(1)] == plab)
        cells.append(f"{100 * ok.mean():.0f}")
    return cells


def main(argv: list[str] | None = None) -> int:
    runs = ROOT / "runs" / "faces"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--cache", default=str(runs / "aligned.npz"))
    ap.add_argument("--pairs", default=str(runs / "pairs.txt"))
    ap.add_argument("--split", default=str(runs / "split.json"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    faces = Path(args.shared) / "data" / "faces"
    cache = fdata.load_cache(args.cache)
    holdout = set(json.loads(Path(args.split).read_text())["holdout"])
    enc = Encoder(args.model, threads=args.threads)
    crop = FaceCropper()

    keep = np.array([str(cache["names"][c]) not in holdout for c in cache["labels"]])
    tr_e = np.concatenate([enc(cache["images"][keep][s:s + 512])
                           for s in range(0, int(keep.sum()), 512)])
    tr_y, tr_src = cache["labels"][keep], cache["sources"][keep]
    photos, names = photos_of_pairs(Path(args.pairs), faces)
    paths = [Path(p) for p in photos]
    em = _embed_paths(paths, crop, enc)
    ho = np.stack([em[p] for p in photos])
    src = np.array([n.split("/")[0] for n in names])
    iu = np.triu_indices(len(ho), 1)
    same = (names[:, None] == names[None, :])[iu]
    one_set = (src[:, None] == src[None, :])[iu]
    groups = {"two sets": ~one_set}
    for s in np.unique(src):
        if (one_set & (src[iu[0]] == s) & ~same).sum() >= 1000:
            groups[s] = one_set & (src[iu[0]] == s)

    door_sets = {}
    for setname in ("att-orl", "yale"):
        _, by_person, unknown = identification_split(faces / setname)
        files = [f for fs in by_person.values() for f in fs]
        e = _embed_paths(files, crop, enc)
        for enrol in (1, 3):
            gal, glab, probes, plab, unk = [], [], [], [], []
            for i, fs in by_person.items():
                if i in unknown:
                    unk += [e[str(q)] for q in fs]
                    continue
                gal += [e[str(q)] for q in fs[:enrol]]
                glab += [i] * len(fs[:enrol])
                probes += [e[str(q)] for q in fs[enrol:]]
                plab += [i] * len(fs[enrol:])
            door_sets[f"{setname}, {enrol}"] = (np.stack(gal), np.array(glab), np.stack(probes),
                                                np.array(plab), np.stack(unk))

    mu = tr_e.mean(0)
    eye = np.eye(tr_e.shape[1])
    maps = {"none": Map(eye, np.zeros_like(mu))}
    for lam in (0.0, 0.1, 0.3, 1.0):
        maps[f"WCCN λ {lam:g}"] = Map(wccn(tr_e, tr_y, lam), mu)
    for r in (1, 2, 5):
        maps[f"NAP r {r}"] = Map(nap(tr_e, tr_y, tr_src, r), mu)
    for r in (2, 5):
        p = nap(tr_e, tr_y, tr_src, r)
        for lam in (0.1, 0.3):
            maps[f"NAP r {r} + WCCN λ {lam:g}"] = Map(wccn((tr_e - mu) @ p.T, tr_y, lam) @ p, mu)

    rows = []
    print(f"## {enc.name}: W fitted on {keep.sum()} training faces "
          f"({len(np.unique(tr_y))} identities); {len(ho)} held-out photos\n")
    print("| map | TAR % at FAR 1e-2 | 1e-3 | 1e-4 | different-person 0.1 % quantile: "
          + " / ".join(groups) + " | same-person median | τ far_1e-4 | "
          + " | ".join(f"{k}: in / unknown in %" for k in door_sets) + " |")
    print("|---" * (6 + len(door_sets)) + "|")
    for name, f in maps.items():
        x = f(ho)
        d = squared_l2(x[:, None, :], x[None, :, :])[iu]
        t, pts = tars(d, same)
        q = " / ".join(f"{np.quantile(d[g & ~same], 1e-3):.2f}" for g in groups.values())
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in t) + f" | {q} | "
              f"{np.median(d[same]):.2f} | {pts[1e-4]:.3f} | "
              + " | ".join(door(door_sets, f, pts[1e-4])) + " |", flush=True)
        within = d[one_set & ~same]
        tau_w = float(np.sort(within)[int(1e-4 * len(within))]) - 1e-9
        rows.append(f"| {name} | {tau_w:.3f} | {100 * np.mean(d[same & one_set] <= tau_w):.1f} | "
                    + " | ".join(door(door_sets, f, tau_w)) + " | "
                    + " | ".join(door_best(door_sets, f)) + " |")
    print("\nτ at FAR 1e-4 of the held-out strangers photographed alike (both from one photo "
          "set), and each door set's best case (the largest τ letting no unknown probe in)\n")
    print("| map | τ | held-out TAR % (one set) | "
          + " | ".join(f"{k}: in / unknown in %" for k in door_sets) + " | "
          + " | ".join(f"{k}: best in %" for k in door_sets) + " |")
    print("|---" * (3 + 2 * len(door_sets)) + "|")
    print("\n".join(rows))
    enc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
