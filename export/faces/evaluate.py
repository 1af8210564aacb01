"""Evaluate a face encoder (Keras checkpoint, exported .tflite/.onnx, or the peer).

``python -m export faces evaluate --pairs FILE --images DIR [--model PATH] [--json OUT]``

* ``--pairs`` an LFW ``pairs.txt``: 10-fold protocol (τ chosen on 9 folds,
  accuracy on the 10th, mean ± std), AUC, EER, TAR@FAR;
* ``--pairs`` a ``.csv`` like ``deepface-pairs/master.csv`` (``file_x,file_y,Decision``):
  accuracy at the model's τ (calibrated elsewhere), AUC, EER, TAR@FAR and, marked
  as optimistic, the accuracy at the best τ for that set;
* ``--identify DIR`` (``att-orl``, ``yale``): one-shot identification, one
  enrolled photo per person, rank-1 on the rest, and open-set rejection of
  people never enrolled at τ.

Every image goes through the runtime's detector and aligner; when no face is
found the whole image is resized to 112x112 and counted as a fallback.  τ is
taken from ``--threshold``, else the model's metadata, else the threshold
fitted on all pairs of the first LFW-format ``--pairs`` of the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from sdk.contract import Preprocessing
from sdk.distance import l2_normalize, squared_l2
from sdk.paths import SHARED_DIR

from . import data as fdata
from .metrics import (FAR_TARGETS, accuracy_at, operating_points, pair_rates, roc_curve,
                      roc_metrics, tar_on_roc, tau_on_roc, ten_fold)

TEACHER = "teacher"  # --model name of the dlib distillation teacher
PEER = SHARED_DIR / "models" / "peers" / "mobilefacenet" / "mobilefacenet.tflite"


class EvaluationError(RuntimeError):
    """The evaluation inputs are unusable (no pairs, unknown format...)."""


class Encoder:
    """Aligned BGR uint8 faces -> L2-normalised embeddings, for any model format.

    ``.keras`` runs in Keras; ``.tflite``/``.onnx`` run through ``sdk.load_model``
    (as on the device).  Models with the SDK contract take their channel order
    and pixel range from it; third-party models (the peer) are fed RGB 0..255.
    """

    def __init__(self, path: str | Path, threads: int | None = 2, flip: bool = False) -> None:
        self.path = Path(path)
        self.threads = threads
        # flip: average each face's embedding with its mirror image's (test-time
        # augmentation); the file's thresholds were fitted without it, so they are dropped
        # and fitted again on the pairs like a Keras model's
        self.flip = flip
        self.threshold: float | None = None
        self.operating_points: dict[str, float] = {}
        self._pre = None  # sdk.contract.Preprocessing of models that carry one
        self._keras = None
        self._model = None
        self._teacher = None
        if str(path) == TEACHER:
            # the distillation teacher on the same aligned crops as in training: the
            # ceiling the student is pulled towards, measured with the same code
            from .teacher import DlibTeacher

            self._teacher = DlibTeacher()
            self.name = "dlib ResNet teacher (aligned crop)"
        elif not self.path.is_file():
            raise EvaluationError(f"{self.path}: model file not found")
        elif self.path.suffix == ".keras":
            import keras

            from . import model as _m  # noqa: F401  (registers L2Normalize)

            self._keras = keras.models.load_model(self.path, compile=False)
            self.name = f"{self.path.parent.name}/{self.path.name} (Keras fp32)"
        else:
            import sdk

            self._model = sdk.load_model(self.path, threads=threads)
            self.name = self.path.name
            if self._model.has_info:
                info = self._model.info
                self.threshold = info.threshold
                self.operating_points = info.operating_points
                pre = info.preprocessing
                self._pre = pre
                self.name = f"{self.path.name} ({info.precision}, {self._model.backend})"
        if flip:
            self.threshold, self.operating_points = None, {}
            self.name += " + flip"

    def _input(self, faces_bgr: np.ndarray) -> np.ndarray:
        # models without a contract (Keras, the peer) take RGB 0..255: the default Preprocessing
        return (self._pre or Preprocessing()).apply(faces_bgr)

    def __call__(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(N,112,112,3) BGR uint8 -> (N,D) unit embeddings."""
        faces_bgr = np.asarray(faces_bgr)
        if self.flip:
            mirrored = np.ascontiguousarray(faces_bgr[:, :, ::-1])
            return l2_normalize(self._embed(faces_bgr) + self._embed(mirrored))
        return self._embed(faces_bgr)

    def _embed(self, faces_bgr: np.ndarray) -> np.ndarray:
        if self._teacher is not None:
            return self._teacher.embed_chips([self._teacher.chip_aligned(f) for f in faces_bgr])
        x = self._input(faces_bgr)
        if self._keras is not None:
            out = [np.asarray(self._keras(x[s:s + 64], training=False))
                   for s in range(0, len(x), 64)]
            return l2_normalize(np.concatenate(out))
        return l2_normalize(np.concatenate([np.asarray(self._model(x[i:i + 1])).reshape(1, -1)
                                            for i in range(len(x))]))

    def close(self) -> None:
        if self._model is not None:
            self._model.close()


class FaceCropper:
    """Image file -> aligned 112x112 BGR face, cached per path (runtime detector)."""

    def __init__(self) -> None:
        from sdk.faces.detector import FaceDetector

        self.det = FaceDetector.create()
        self.cache: dict[str, np.ndarray] = {}
        self.fallbacks: list[str] = []

    def __call__(self, path: Path) -> np.ndarray:
        from sdk.faces.detector import align_face

        key = str(path)
        if key not in self.cache:
            img = fdata.read_bgr(path)
            if img is None:
                raise EvaluationError(f"{path}: cannot read image")
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            faces = self.det.detect(img) if min(img.shape[:2]) >= 16 else []
            if faces:
                self.cache[key] = align_face(img, faces[0].landmarks)
            else:
                self.fallbacks.append(key)
                self.cache[key] = cv2.resize(img, (112, 112), interpolation=cv2.INTER_AREA)
        return self.cache[key]


def _fallbacks_among(crop: FaceCropper, paths) -> int:
    """How many of ``paths`` had no face, for every model that uses them (the crops are
    cached across models: counting the new fallbacks gave 0 after the first model)."""
    return len(set(map(str, paths)) & set(crop.fallbacks))


def _embed_paths(paths: list[Path], crop: FaceCropper, enc: Encoder) -> dict[str, np.ndarray]:
    uniq = sorted(set(str(p) for p in paths))
    faces = np.stack([crop(Path(p)) for p in uniq])
    emb = enc(faces)
    return dict(zip(uniq, emb))


def load_csv_pairs(path: Path, images: Path) -> list[tuple[Path, Path, bool]]:
    """Pairs of a deepface-style CSV (``file_x,file_y,Decision`` with Yes/No)."""
    pairs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                a, b, dec = row["file_x"], row["file_y"], row["Decision"].strip().lower()
            except KeyError as exc:
                raise EvaluationError(f"{path}: expected columns file_x,file_y,Decision") from exc
            pairs.append((images / Path(a).name, images / Path(b).name,
                          dec in ("yes", "1", "true")))
    if not pairs:
        raise EvaluationError(f"{path}: no pairs")
    return pairs


def closest_impostors(d: np.ndarray, same: np.ndarray, names: Sequence[tuple[str, str]],
                      n: int = 5) -> list[dict]:
    """The ``n`` different-person pairs with the smallest distance: the low-FAR
    operating points rest on them. ``tar_below`` is the share of same-person pairs
    closer than each, i.e. the TAR of a τ just under that pair."""
    d, same = np.asarray(d), np.asarray(same, bool)
    neg = np.flatnonzero(~same)
    pos_d = d[same]
    out = []
    for j in neg[np.argsort(d[neg], kind="stable")][:n]:
        out.append({"a": names[j][0], "b": names[j][1], "d": float(d[j]),
                    "tar_below": float((pos_d < d[j]).mean()) if len(pos_d) else 0.0})
    return out


def evaluate_pairs(pairs_file: Path, images: Path, enc: Encoder, crop: FaceCropper,
                   tau: float | None) -> dict:
    """Verification metrics of one pair list (LFW pairs.txt or CSV)."""
    t0 = time.time()
    if pairs_file.suffix.lower() == ".csv":
        items = load_csv_pairs(pairs_file, images)
        folds = None
    else:
        parsed, n_folds = fdata.parse_lfw_pairs(pairs_file)
        per = len(parsed) // n_folds
        items = [(fdata.resolve_lfw_image(images, a, i), fdata.resolve_lfw_image(images, b, j), s)
                 for a, i, b, j, s in parsed]
        folds = np.arange(len(items)) // per
    emb = _embed_paths([p for a, b, _ in items for p in (a, b)], crop, enc)
    d = squared_l2(np.stack([emb[str(a)] for a, _, _ in items]),
                   np.stack([emb[str(b)] for _, b, _ in items]))
    same = np.array([s for _, _, s in items])
    res = {"pairs_file": str(pairs_file), "images": str(images), **roc_metrics(d, same),
           "no_face_fallbacks": _fallbacks_among(crop, emb)}
    if folds is not None:
        res["ten_fold"] = ten_fold(d, same, folds)

    def rel(p: Path) -> str:
        return str(p.relative_to(images)) if p.is_relative_to(images) else str(p)

    res["closest_impostors"] = closest_impostors(d, same,
                                                 [(rel(a), rel(b)) for a, b, _ in items])
    if tau is not None:
        res["threshold"] = tau
        res["accuracy_at_threshold"] = accuracy_at(d, same, tau)
        rates = pair_rates(d, same, tau)
        res["far_at_threshold"] = rates["far"]
        res["frr_at_threshold"] = 1.0 - rates["tar"]
    res["seconds"] = time.time() - t0
    res["_dist"], res["_same"] = d, same
    return res


#: False-accept rates the all-pairs (``--dense``) evaluation reports TAR and τ at.
DENSE_FAR_TARGETS = (1e-2, 1e-3, 1e-4, 1e-5)

#: The named operating points fitted on every pair of the held-out photos (a release's,
#: and a model's without any when evaluated with ``--dense``): name -> its FAR target.
#: far_1e-5 rests on ~10 of about a million different-person pairs, so its real FAR is
#: known only roughly; it is there (since session 17) for galleries with several photos
#: per person, where the nearest of K photos gives a stranger about K chances
#: (docs/FACES.md, "How many photos to enrol").
DENSE_OPERATING_POINTS = {**FAR_TARGETS, "far_1e-4": 1e-4, "far_1e-5": 1e-5}


def dense_operating_points(dense: dict) -> dict[str, float]:
    """``{"far_1e-2": τ, "far_1e-3": τ, "far_1e-4": τ}`` from an :func:`evaluate_dense`
    result: the loosest τ whose false-accept rate over all its different-person pairs
    is at most the target."""
    return {name: dense["at_far"][f"{target:g}"]["threshold"]
            for name, target in DENSE_OPERATING_POINTS.items()}


def rates_at_thresholds(dense: dict, taus: dict[str, float]) -> None:
    """Add the false- and true-accept rates of each named τ to an :func:`evaluate_dense`
    result that still holds its distances (``_dist``/``_same``)."""
    for name, tau in taus.items():
        dense["at_threshold"][name] = {"threshold": float(tau),
                                       **pair_rates(dense["_dist"], dense["_same"], tau)}


#: FAR targets whose τ the same-person pairs of each photo set are scored at.
GENUINE_FARS = ("0.001", "0.0001")


def genuine_by_set(d: np.ndarray, same: np.ndarray, set_of_pair: np.ndarray,
                   at_far: dict) -> dict[str, dict]:
    """Where the true accepts are lost: per photo set (both sides of a same-person pair
    share it), the number of same-person pairs and the share accepted at the τ of
    each of :data:`GENUINE_FARS` (``at_far`` as :func:`evaluate_dense` fills it)."""
    out = {}
    for name in sorted(set(set_of_pair[same].tolist())):
        k = same & (set_of_pair == name)
        out[name] = {"pairs": int(k.sum()),
                     **{f"tar_at_far_{f}": float(np.mean(d[k] <= at_far[f]["threshold"]))
                        for f in GENUINE_FARS if f in at_far}}
    return out


def false_accepts_by_set(d: np.ndarray, same: np.ndarray, set_a: np.ndarray, set_b: np.ndarray,
                         tau: float) -> dict[str, int]:
    """Different-person pairs accepted at ``tau``, counted by the photo sets of their two
    sides (``"a ~ b"``, sorted), most first."""
    by_set: dict[str, int] = {}
    for k in np.flatnonzero(~same & (d <= tau)):
        key = " ~ ".join(sorted((str(set_a[k]), str(set_b[k]))))
        by_set[key] = by_set.get(key, 0) + 1
    return dict(sorted(by_set.items(), key=lambda kv: -kv[1]))


def photos_of_pairs(pairs_file: Path, images: Path) -> tuple[list[str], np.ndarray]:
    """The photos an LFW-format pair list names (sorted paths) and each one's identity."""
    parsed, _ = fdata.parse_lfw_pairs(pairs_file)
    person: dict[str, str] = {}
    for a, i, b, j, _ in parsed:
        person[str(fdata.resolve_lfw_image(images, a, i))] = a
        person[str(fdata.resolve_lfw_image(images, b, j))] = b
    paths = sorted(person)
    return paths, np.array([person[q] for q in paths])


def every_pair(emb: np.ndarray, labels: np.ndarray, chunk: int = 256
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(d, same, i, j) over every pair i < j of the rows of ``emb``: the product's distance
    and whether the two labels are equal, computed a block of ``chunk`` rows at a time."""
    labels = np.asarray(labels)
    n = len(emb)
    dist, same, rows, cols = [], [], [], []
    for start in range(0, n, chunk):  # the upper triangle, a block of rows at a time
        block = squared_l2(emb[start:start + chunk, None, :], emb[None, :, :])
        for k in range(block.shape[0]):
            i = start + k
            dist.append(block[k, i + 1:])
            same.append(labels[i + 1:] == labels[i])
            rows.append(np.full(n - i - 1, i, np.int32))
            cols.append(np.arange(i + 1, n, dtype=np.int32))
    return (np.concatenate(dist), np.concatenate(same), np.concatenate(rows),
            np.concatenate(cols))


def evaluate_dense(pairs_file: Path, images: Path, enc: Encoder, crop: FaceCropper,
                   chunk: int = 256) -> dict:
    """Every pair of the photos an LFW-format pair list names, not just its listed pairs.

    A 10-fold list holds ~1500 different-person pairs, so its "TAR at FAR 1e-3" rests on
    one or two of them; the same photos give ~N²/2 pairs (about a million for the
    held-out list), which resolve FAR down to 1e-5.  Identity is the pair entry's name.
    Reports TAR and τ at each of :data:`DENSE_FAR_TARGETS` and the nearest
    different-person pairs.  The distances stay in the private ``_dist``/``_same``
    entries, so that :func:`rates_at_thresholds` can add the rates of named τ values
    (e.g. the file's operating points) to ``at_threshold``; callers pop them.
    """
    t0 = time.time()
    paths, names = photos_of_pairs(pairs_file, images)
    emb = _embed_paths([Path(q) for q in paths], crop, enc)
    e = np.stack([emb[q] for q in paths])
    n = len(paths)
    d, s, rows_all, cols_all = every_pair(e, names, chunk)
    far, tar, thr = roc_curve(d, s)
    res = {"pairs_file": str(pairs_file), "photos": n, "identities": int(len(set(names))),
           "same": int(s.sum()), "different": int((~s).sum()), "at_far": {}, "at_threshold": {}}
    for target in DENSE_FAR_TARGETS:
        res["at_far"][f"{target:g}"] = {"tar": tar_on_roc(far, tar, target),
                                        "threshold": tau_on_roc(far, thr, target)}
    res["_dist"], res["_same"] = d, s
    # where the false accepts at FAR 1e-3 come from: the photo sets (the first folder of
    # an identity's name) of both sides of each accepted different-person pair
    sets = np.array([q.split("/")[0] for q in names])
    res["false_accepts_at_far_1e-3"] = false_accepts_by_set(
        d, s, sets[rows_all], sets[cols_all], res["at_far"]["0.001"]["threshold"])
    res["genuine_by_set"] = genuine_by_set(d, s, sets[rows_all], res["at_far"])
    def rel(q: str) -> str:
        return str(Path(q).relative_to(images)) if Path(q).is_relative_to(images) else q

    class PairNames:  # the names of pair k on demand: a million tuples are not needed
        def __getitem__(self, k: int) -> tuple[str, str]:
            return rel(paths[rows_all[k]]), rel(paths[cols_all[k]])

    res["closest_impostors"] = closest_impostors(d, s, PairNames())
    res["seconds"] = time.time() - t0
    return res


def unknown_people(n_people: int, unknown_fraction: float = 0.25, seed: int = 0) -> set[int]:
    """Indices of the people never enrolled: ``unknown_fraction`` of ``n_people``, random by
    ``seed``."""
    order = np.random.default_rng(seed).permutation(n_people)
    n_unknown = max(1, int(round(unknown_fraction * n_people)))
    return {int(i) for i in order[:n_unknown]}


def identification_split(root: Path, unknown_fraction: float = 0.25, seed: int = 0
                         ) -> tuple[list[Path], dict[int, list[Path]], set[int]]:
    """``root/<person>/<images>`` -> (person folders, each one's photos by index, the
    indices of the people never enrolled: ``unknown_fraction`` of them, random by ``seed``)."""
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if len(people) < 4:
        raise EvaluationError(f"{root}: need at least 4 person folders")
    files = {i: fdata.list_images(p) for i, p in enumerate(people)}
    return people, files, unknown_people(len(people), unknown_fraction, seed)


def _open_set_distances(files: dict[int, list[Path]], emb: dict[str, np.ndarray],
                        unknown: set[int], enroll: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-enrolled distances of the never-enrolled people's probes, and (distance,
    correct) of the enrolled people's probes, with the first ``enroll`` photos of everyone
    else enrolled (a person's distance is their nearest photo's, as in ``sdk.Gallery``)."""
    known = [i for i in files if i not in unknown]
    gallery = np.stack([emb[str(f)] for i in known for f in files[i][:enroll]])
    gal_labels = np.array([i for i in known for _ in files[i][:enroll]])
    dk, du = [], []
    for i in files:
        for f in (files[i] if i in unknown else files[i][enroll:]):
            d = squared_l2(emb[str(f)], gallery)
            j = int(np.argmin(d))
            if i in unknown:
                du.append(float(d[j]))
            else:
                dk.append((float(d[j]), bool(gal_labels[j] == i)))
    return np.array(du), np.array(dk)


def evaluate_identification(root: Path, enc: Encoder, crop: FaceCropper, tau: float | None,
                            unknown_fraction: float = 0.25, seed: int = 0,
                            enroll: int = 1, draws: int = 10) -> dict:
    """One-shot (or ``enroll``-shot) identification on ``root/<person>/<images>``.

    The first ``1 - unknown_fraction`` of the people (random, ``seed``) are enrolled
    with ``enroll`` photos each (their first files); their other photos are probes
    (rank-1 accuracy, closed set).  A probe's distance to a person is the smallest
    over that person's enrolled photos, as in ``sdk.Gallery``.  The remaining people
    are never enrolled: with τ, a probe is rejected when its nearest enrolled
    distance is > τ (open set).

    Who stays unknown decides much of the open-set numbers on sets of 15 or 40 people (one
    look-alike more or less), so ``draws`` further random splits (seeds ``seed + 1`` …) are
    kept for :func:`at_operating_points`, which reports their mean next to ``seed``'s split.
    A person who was unknown in ``seed``'s split and has no more than ``enroll`` photos is
    enrolled with all of them in a draw that keeps them known, and has no probe there.
    """
    if enroll < 1:
        raise EvaluationError(f"enroll must be >= 1 photo per person, got {enroll}")
    people, files, unknown = identification_split(root, unknown_fraction, seed)
    emb = _embed_paths([f for fs in files.values() for f in fs], crop, enc)
    known = [i for i in range(len(people)) if i not in unknown]
    short = [people[i].name for i in known if len(files[i]) <= enroll]
    if short:
        raise EvaluationError(f"{root}: {len(short)} people have no photo left to probe "
                              f"after enrolling {enroll} (e.g. {short[0]})")
    du, dk = _open_set_distances(files, emb, unknown, enroll)
    res = {"root": str(root), "people": len(people), "enrolled": len(known),
           "photos_per_person": enroll,
           "probes_known": len(dk), "probes_unknown": len(du),
           "rank1_closed_set": float(np.mean(dk[:, 1] > 0)),
           "no_face_fallbacks": _fallbacks_among(crop, emb)}
    res["_du"], res["_dk"] = du, dk
    res["_draws"] = [_open_set_distances(files, emb, unknown_people(len(people),
                                                                     unknown_fraction, s),
                                         enroll)
                     for s in range(seed + 1, seed + 1 + draws)]
    if tau is not None:
        o = open_set_rates(res["_du"], res["_dk"], tau)
        res["threshold"] = tau
        res["open_set_unknown_rejected"] = o["unknown_rejected"]
        res["open_set_known_correct_and_accepted"] = o["known_correct_and_accepted"]
        if res["_draws"]:
            res.update({f"open_set_{k}": v
                        for k, v in open_set_over_draws(res["_draws"], tau).items()})
    return res


def open_set_rates(d_unknown: np.ndarray, d_known: np.ndarray, tau: float) -> dict[str, float]:
    """Open-set identification at ``tau``: share of never-enrolled people's probes
    rejected (nearest distance > τ), and of enrolled people's probes whose nearest
    entry is themselves and within τ (``d_known`` rows: distance, correct)."""
    return {"unknown_rejected": float(np.mean(d_unknown > tau)),
            "known_correct_and_accepted": float(np.mean((d_known[:, 0] <= tau)
                                                        & (d_known[:, 1] > 0)))}


def open_set_over_draws(draws: list[tuple[np.ndarray, np.ndarray]], tau: float
                        ) -> dict[str, float | int]:
    """Open-set rates at ``tau`` over several random splits of who stays unknown: the mean
    share of enrolled probes accepted as themselves, and the unknown probes let in (count,
    out of how many, and their share)."""
    rates = [open_set_rates(du, dk, tau) for du, dk in draws]
    let_in = sum(int(np.sum(du <= tau)) for du, _ in draws)
    total = sum(len(du) for du, _ in draws)
    return {"draws": len(draws),
            "draws_known_correct_and_accepted": float(np.mean(
                [r["known_correct_and_accepted"] for r in rates])),
            "draws_unknown_let_in": let_in, "draws_unknown_probes": total,
            "draws_unknown_in": let_in / max(total, 1)}


def at_operating_points(report_model: dict, points: dict[str, float]) -> dict:
    """Decisions at each named threshold, on every set already evaluated: for pair
    lists the false-accept and true-accept rates, for identification sets the share
    of unknown people rejected and of enrolled people accepted as themselves."""
    out = {}
    for name, t in points.items():
        rec = {"threshold": float(t), "pairs": {}, "identification": {}}
        for r in report_model["pairs"]:
            rec["pairs"][Path(r["pairs_file"]).name] = pair_rates(r["_dist"], r["_same"], t)
        for r in report_model["identification"]:
            rates = open_set_rates(r["_du"], r["_dk"], t)
            if r.get("_draws"):
                rates.update(open_set_over_draws(r["_draws"], t))
            rec["identification"][Path(r["root"]).name] = rates
        out[name] = rec
    return out


def plot_roc(curves: list[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """ROC curves (TAR vs FAR, log FAR axis) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, d, s in curves:
        far, tar, _ = roc_curve(d, s)
        ax.plot(np.maximum(far, 1e-4), tar, label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def embed_latency(enc: Encoder, face: np.ndarray, runs: int = 100) -> dict:
    """Median and p90 milliseconds of one embedding (one aligned face, batch 1)."""
    x = face[None]
    for _ in range(5):
        enc(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        enc(x)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "runs": runs, "threads": enc.threads}


def run(models: list[str], pairs: list[tuple[Path, Path]], identify: list[Path],
        threshold: float | None, roc: Path | None, threads: int = 2, timing: int = 0,
        enroll: int = 1, flip: bool = False, dense: bool = False) -> dict:
    """Evaluate every model on every pair list and identification set (``enroll``
    photos per person enrolled there; ``flip``: mirror-averaged embeddings; ``dense``:
    also every pair of each LFW-format list's photos, :func:`evaluate_dense`)."""
    crop = FaceCropper()
    report = {"models": {}, "flip": flip}
    curves: dict[str, list] = {}
    for mpath in models:
        enc = Encoder(mpath, threads=threads, flip=flip)
        tau = threshold if threshold is not None else enc.threshold
        tau_source = ("--threshold" if threshold is not None else
                      "model metadata" if enc.threshold is not None else None)
        out = {"name": enc.name, "pairs": [], "identification": []}
        for pf, images in pairs:
            r = evaluate_pairs(pf, images, enc, crop, tau)
            if tau is None and "ten_fold" in r:
                tau = r["ten_fold"]["threshold_all"]
                tau_source = f"fitted on all pairs of {pf.name}"
                r["threshold"] = tau
                r["accuracy_at_threshold"] = accuracy_at(r["_dist"], r["_same"], tau)
            out["pairs"].append(r)
        for root in identify:
            out["identification"].append(evaluate_identification(root, enc, crop, tau,
                                                                 enroll=enroll))
        if dense:
            out["dense"] = [evaluate_dense(pf, images, enc, crop)
                            for pf, images in pairs if pf.suffix.lower() != ".csv"]
        # the file's own operating points; for a model without them (Keras, the peer)
        # fitted like a release's: on every pair of the first list's photos with --dense,
        # else (coarser: ~1500 different pairs) on the first pair list
        points, points_source = dict(enc.operating_points), "model metadata"
        if not points and out.get("dense"):
            points = dense_operating_points(out["dense"][0])
            points_source = ("fitted on every pair of "
                             f"{Path(out['dense'][0]['pairs_file']).name}'s photos")
        elif not points and out["pairs"] and "threshold_at_far_1e-3" in out["pairs"][0]:
            first = out["pairs"][0]
            points = operating_points(first)
            points_source = f"fitted on {Path(first['pairs_file']).name}"
        points.pop("best_accuracy", None)  # that one is τ, reported already
        if points:
            out["operating_points"] = at_operating_points(out, points)
            out["operating_points_source"] = points_source
        for r in out.get("dense", []):
            rates_at_thresholds(r, {**({"threshold": tau} if tau is not None else {}),
                                    **points})
            r.pop("_dist"), r.pop("_same")
        for r in out["pairs"]:
            curves.setdefault(Path(r["pairs_file"]).name, []).append(
                (enc.name, r.pop("_dist"), r.pop("_same")))
        for r in out["identification"]:
            r.pop("_du"), r.pop("_dk"), r.pop("_draws", None)
        if timing and enc._model is not None and crop.cache:
            out["embed_ms"] = embed_latency(enc, next(iter(crop.cache.values())), timing)
        out["threshold"], out["threshold_source"] = tau, tau_source
        report["models"][str(mpath)] = out
        enc.close()
    report["fallback_images"] = sorted(set(crop.fallbacks))
    if roc is not None:
        for k, (name, cs) in enumerate(curves.items()):
            p = (roc if len(curves) == 1 else
                 roc.with_name(f"{roc.stem}_{Path(name).stem}{roc.suffix}"))
            plot_roc(cs, p, f"ROC on {name}")
            report.setdefault("roc_png", []).append(str(p))
    return report


def summary_lines(report: dict) -> list[str]:
    """Human-readable lines of a report."""
    lines = []
    for _, m in report["models"].items():
        lines.append(f"## {m['name']}  (τ={m['threshold']}, {m['threshold_source']})")
        for r in m["pairs"]:
            head = f"  {Path(r['pairs_file']).name}: "
            if "ten_fold" in r:
                t = r["ten_fold"]
                head += (f"10-fold acc {100 * t['accuracy_mean']:.2f}"
                         f"±{100 * t['accuracy_std']:.2f}%, ")
            if "accuracy_at_threshold" in r:
                head += f"acc@τ {100 * r['accuracy_at_threshold']:.2f}%, "
            head += (f"AUC {r['auc']:.4f}, EER {100 * r['eer']:.2f}%, "
                     f"TAR@FAR1e-3 {100 * r['tar_at_far_1e-3']:.1f}%, "
                     f"best-τ acc {100 * r['best_accuracy']:.2f}% ({r['pairs']} pairs, "
                     f"{r['no_face_fallbacks']} no-face)")
            lines.append(head)
            if r.get("closest_impostors"):
                lines.append("    closest different-person pairs: " + "; ".join(
                    f"{c['a']} ~ {c['b']} d={c['d']:.3f}" for c in r["closest_impostors"][:3]))
        for r in m["identification"]:
            s = (f"  {Path(r['root']).name}: rank-1 {100 * r['rank1_closed_set']:.2f}% "
                 f"({r['enrolled']} enrolled with {r.get('photos_per_person', 1)} photo(s) "
                 f"each, {r['probes_known']} probes)")
            if "open_set_unknown_rejected" in r:
                s += (f"; open set at τ: unknown rejected "
                      f"{100 * r['open_set_unknown_rejected']:.1f}%, known correct+accepted "
                      f"{100 * r['open_set_known_correct_and_accepted']:.1f}%")
                if "open_set_draws" in r:
                    s += (f" (over {r['open_set_draws']} more draws of who is unknown: "
                          f"{r['open_set_draws_unknown_let_in']} of "
                          f"{r['open_set_draws_unknown_probes']} unknown probes in, known "
                          f"accepted {100 * r['open_set_draws_known_correct_and_accepted']:.1f}%)")
            lines.append(s + f" ({r['no_face_fallbacks']} no-face)")
        for name, op in m.get("operating_points", {}).items():
            parts = [f"{k} FAR {100 * v['far']:.1f}% TAR {100 * v['tar']:.1f}%"
                     for k, v in op["pairs"].items()]
            parts += [f"{k} unknown rejected {100 * v['unknown_rejected']:.1f}% known accepted "
                      f"{100 * v['known_correct_and_accepted']:.1f}%"
                      + (f" (over {v['draws']} more draws of who is unknown: "
                         f"{v['draws_unknown_let_in']} of {v['draws_unknown_probes']} unknown "
                         f"probes in, known accepted "
                         f"{100 * v['draws_known_correct_and_accepted']:.1f}%)"
                         if "draws" in v else "")
                      for k, v in op["identification"].items()]
            lines.append(f"  at {name} (τ={op['threshold']:.4f}, "
                         f"{m['operating_points_source']}): " + "; ".join(parts))
        for r in m.get("dense", []):
            lines.append(f"  every pair of {Path(r['pairs_file']).name}'s {r['photos']} photos "
                         f"({r['same']} same, {r['different']} different): " + ", ".join(
                             f"TAR@FAR{k} {100 * v['tar']:.1f}% (τ {v['threshold']:.3f})"
                             for k, v in r["at_far"].items()))
            for name, v in r["at_threshold"].items():
                lines.append(f"    at {name} τ={v['threshold']:.4f}: FAR {v['far']:.2e}, "
                             f"TAR {100 * v['tar']:.1f}%")
            lines.append("    closest different-person pairs: " + "; ".join(
                f"{c['a']} ~ {c['b']} d={c['d']:.3f}" for c in r["closest_impostors"][:3]))
        if "embed_ms" in m:
            t = m["embed_ms"]
            lines.append(f"  embed time: median {t['median']:.2f} ms, p90 {t['p90']:.2f} ms "
                         f"({t['threads']} thread(s), batch 1)")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces evaluate``."""
    from .cli import FACES, RUNS

    ap = argparse.ArgumentParser(prog="python -m export faces evaluate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append",
                    help="model file (.keras, .tflite, .onnx), 'peer' (MobileFaceNet) or "
                         "'teacher' (the dlib descriptor distilled from); repeat for several "
                         "(default: models/faces/face_encoder_int8.onnx, the SDK's default)")
    ap.add_argument("--pairs", action="append", default=[], type=Path,
                    help="pairs.txt (LFW format) or master.csv; repeat, each with --images")
    ap.add_argument("--images", action="append", default=[], type=Path,
                    help="image root of the matching --pairs (default: the file's folder "
                         "for .csv, ../shared/data/faces otherwise)")
    ap.add_argument("--identify", action="append", default=[], type=Path,
                    help="identification set root (<person>/<image>), e.g. att-orl, yale")
    ap.add_argument("--standard", action="store_true",
                    help="all standard sets: runs/faces/pairs.txt (the held-out pairs), deepface "
                         "master.csv, att-orl, yale")
    ap.add_argument("--enroll", type=int, default=1, metavar="N",
                    help="photos enrolled per person in the identification sets (default 1: "
                         "one-shot; a person's distance is the smallest over them)")
    ap.add_argument("--dense", action="store_true",
                    help="also score every pair of the photos each LFW-format --pairs list "
                         "names (about a million for the held-out list): TAR at FAR down to "
                         "1e-5, and the real FAR of each operating point")
    ap.add_argument("--flip", action="store_true",
                    help="average each face's embedding with its mirror image's (two model "
                         "runs per face); thresholds are then fitted on the first pair list")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--roc", type=Path, default=None, help="ROC PNG path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=int, default=0, metavar="N",
                    help="also time N single-face embeddings (exported models only)")
    args = ap.parse_args(argv)
    from sdk.paths import REPO_ROOT

    models = [str(PEER) if m == "peer" else m for m in
              (args.model or [str(REPO_ROOT / "models" / "faces" / "face_encoder_int8.onnx")])]
    pairs = list(args.pairs)
    images = list(args.images)
    identify = list(args.identify)
    if args.standard:
        pairs += [RUNS / "pairs.txt", FACES / "deepface-pairs" / "master.csv"]
        identify += [FACES / "att-orl", FACES / "yale"]
    if not pairs and not identify:
        raise SystemExit("nothing to evaluate: give --pairs, --identify or --standard")
    resolved = []
    for k, pf in enumerate(pairs):
        if k < len(images):
            img = images[k]
        else:
            img = pf.parent if pf.suffix.lower() == ".csv" else FACES
        if not pf.is_file():
            raise SystemExit(f"{pf}: pairs file not found")
        resolved.append((pf, img))
    if args.enroll < 1:
        raise SystemExit(f"--enroll must be >= 1, got {args.enroll}")
    report = run(models, resolved, identify, args.threshold, args.roc, args.threads, args.time,
                 enroll=args.enroll, flip=args.flip, dense=args.dense)
    for line in summary_lines(report):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float))
        print(f"report -> {args.json}")
    return 0
