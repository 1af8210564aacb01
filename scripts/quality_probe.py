"""Probe (session 11): do image-quality limits (``sdk.QualityOptions``) help the door?

Every photo of the held-out pairs' people, att-orl and yale goes through the runtime
detector and is measured with ``sdk.faces.quality.assess_face`` and embedded with the
model.  Then:

1. each measurement's distribution per photo set (to choose limits);
2. held-out, every pair of photos: TAR and FAR at the file's ``far_1e-3`` and
   ``far_1e-4`` τ over the pairs whose two photos pass each limit alone and all
   limits together, next to dropping as many photos at random (mean of 10 draws):
   a limit is worth having only when it beats chance;
3. held-out, att-orl and yale one-shot at ``far_1e-4`` (att-orl and yale split as in
   ``export faces evaluate``, a random quarter of the held-out people never enrolled):
   enrolled with each person's first photo, as there, or with their first photo that
   passes the limits (what ``door_lock.py enroll`` does when it refuses a poor one);
   probes all, or only those that pass (the door waits for a better frame): enrolled
   probes let in as themselves, unknown people's probes let in, probes skipped; also
   with τ refitted on the good faces, with a lighting limit and with stricter limits;
4. the share of the training cache's faces that miss the limits, per photo set;
5. ``--plot``: held-out TAR at the file's τ against the worse photo's eye distance,
   yaw, sharpness and detector score.

    python scripts/quality_probe.py [--model models/faces/face_encoder_int8.onnx]
        [--plot docs/img/quality_heldout.png]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

import sdk  # noqa: E402
from sdk.faces.calibration import _upper_pairs  # noqa: E402
from sdk.faces.quality import FaceQuality, QualityOptions, assess_face  # noqa: E402

FEATURES = [f.name for f in fields(FaceQuality)]
TARGETS = (1e-3, 1e-4)


def detected(fv: sdk.FaceVerifier, files: list[Path]):
    """(index, image, largest face, its aligned crop) of each photo with a face."""
    for i, f in enumerate(files):
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        faces = fv.detect(image) if image is not None else []
        if faces:
            yield i, image, faces[0], fv.align(image, faces[0])


def measure(fv: sdk.FaceVerifier, files: list[Path]) -> tuple[np.ndarray, list[FaceQuality],
                                                             np.ndarray]:
    """(embeddings, qualities, index of each kept file) of the photos with a face."""
    found = list(detected(fv, files))
    qual = [assess_face(image, face, aligned) for _, image, face, aligned in found]
    emb = fv.embed_aligned(np.stack([aligned for *_, aligned in found]))
    return emb, qual, np.array([i for i, *_ in found])


def table_of(quals: list[FaceQuality]) -> np.ndarray:
    return np.array([[getattr(q, n) for n in FEATURES] for q in quals], np.float64)


def upper_pairs(e: np.ndarray, who: np.ndarray):
    """Distances and same-person flags of every pair i < j, with their rows and columns
    (``sdk.SitePairs``' block-wise pairs: all at once would hold ~0.5 GB here)."""
    (i, j), d = _upper_pairs(e)
    return d, who[i] == who[j], i, j


def rates(d, same, keep_pair, tau) -> tuple[float, float, int]:
    s, o = same & keep_pair, ~same & keep_pair
    tar = float(np.mean(d[s] <= tau)) if s.any() else float("nan")
    far = float(np.mean(d[o] <= tau)) if o.any() else float("nan")
    return tar, far, int(o.sum())


def tar_at_far(d, same, keep_pair, target) -> float:
    """TAR at the largest τ whose FAR over the kept pairs is at most ``target``."""
    imp = np.sort(d[~same & keep_pair])
    k = int(np.floor(target * len(imp)))  # at most k different-person pairs accepted
    tau = imp[k] - 1e-9 if k < len(imp) else np.inf
    gen = d[same & keep_pair]
    return float(np.mean(gen <= tau)) if len(gen) else float("nan")


def passes(quals: list[FaceQuality], options: QualityOptions) -> np.ndarray:
    return np.array([q.ok(options) for q in quals])


def only(name: str, base: QualityOptions) -> QualityOptions:
    """``base`` with every limit off except those of measurement ``name``."""
    keep = {"eye_distance": ["min_eye_distance"], "yaw": ["max_yaw"], "pitch": ["max_pitch"],
            "sharpness": ["min_sharpness"], "brightness": ["min_brightness", "max_brightness"],
            "contrast": ["min_contrast"], "lighting_asymmetry": ["max_lighting_asymmetry"],
            "score": ["min_score"], "in_frame": ["min_in_frame"]}[name]
    return replace(QualityOptions.off(), **{k: getattr(base, k) for k in keep})


def heldout_photos(pairs: Path, images: Path) -> tuple[list[Path], np.ndarray]:
    from export.faces.evaluate import photos_of_pairs

    paths, names = photos_of_pairs(pairs, images)
    return [Path(p) for p in paths], names


def identification(e, who, quals, files_idx, tau, options, unknown: set[int],
                   enrol_by_quality: bool, gate_probes: bool) -> dict[str, float]:
    people = sorted(set(who))
    ok = passes(quals, options)
    gallery, labels, used = [], [], set()
    for p in people:
        if people.index(p) in unknown:
            continue
        rows = np.flatnonzero(who == p)
        rows = rows[np.argsort(files_idx[rows])]
        pick = rows[ok[rows]][:1] if enrol_by_quality else rows[:1]
        if len(pick) == 0:
            pick = rows[:1]  # nobody good enough: enrol the first (counted below)
        gallery.append(e[pick[0]])
        labels.append(p)
        used.add(int(pick[0]))
    g, labels = np.stack(gallery), np.array(labels)
    self_in, known, unk_in, unk, skipped, total = 0, 0, 0, 0, 0, 0
    for r in range(len(e)):
        if r in used:
            continue
        total += 1
        if gate_probes and not ok[r]:
            skipped += 1
            continue
        d = sdk.squared_l2(e[r], g)
        j = int(np.argmin(d))
        if people.index(who[r]) in unknown:
            unk += 1
            unk_in += d[j] <= tau
        else:
            known += 1
            self_in += (d[j] <= tau) and labels[j] == who[r]
    return {"self_in": self_in / max(known, 1), "unknown_in": unk_in / max(unk, 1),
            "unknown_in_count": int(unk_in), "skipped": skipped / max(total, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--cache", default=str(ROOT / "runs/faces/aligned.npz"),
                    help="the training cache (export faces prepare): its faces are measured too")
    ap.add_argument("--plot", default=None, metavar="PNG",
                    help="draw held-out TAR and FAR at the file's τ against each measurement")
    args = ap.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    faces = Path(args.shared) / "data" / "faces"
    base = QualityOptions()
    # the per-limit rows also show the lighting limit, which is off by default
    lit = replace(base, max_lighting_asymmetry=0.5)
    # stricter on what the held-out curves say matters most (--plot)
    strict = replace(base, min_eye_distance=25.0, max_yaw=0.25, min_score=0.9)
    rows_of = {**{n: only(n, lit) for n in FEATURES}, "all": base, "strict": strict}
    rng = np.random.default_rng(0)
    with sdk.FaceVerifier.create(args.model, threads=1) as fv:
        points = fv.info.operating_points
        taus = {k: points[k] for k in ("far_1e-3", "far_1e-4")}
        print(f"## {Path(args.model).name} ({fv.model_id}); limits: {base}\n")
        files, names = heldout_photos(Path(args.pairs), faces)
        e_h, q_h, k_h = measure(fv, files)
        who_h = names[k_h]
        sets = {"held-out": (e_h, q_h, who_h, k_h)}
        for name in ("att-orl", "yale"):
            people = sorted(p for p in (faces / name).iterdir() if p.is_dir())
            fs = [f for p in people for f in sorted(p.iterdir())]
            e, q, k = measure(fv, fs)
            sets[name] = (e, q, np.array([fs[i].parent.name for i in k]), k)

    print("Each measurement's 1 / 5 / 50 / 95 / 99 % quantiles per photo set:\n")
    print("| measurement | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    tables = {s: table_of(v[1]) for s, v in sets.items()}
    for c, n in enumerate(FEATURES):
        cells = [" / ".join(f"{np.quantile(t[:, c], q):.2f}" for q in (.01, .05, .5, .95, .99))
                 for t in tables.values()]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nShare of photos each limit refuses (default limits; lighting at 0.5, off by "
          "default; `all` = the defaults together; `strict` = eyes >= 25 px, |yaw| <= 0.25, score "
          ">= 0.9 with the other defaults):\n")
    print("| limit | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    for n, opt in rows_of.items():
        print(f"| {n} | " + " | ".join(f"{100 * (1 - passes(v[1], opt).mean()):.1f} %"
                                        for v in sets.values()) + " |")

    e, q, who, _ = sets["held-out"]
    d, same, i, j = upper_pairs(e, who)
    print(f"\nHeld-out, every pair of {len(e)} photos ({int((~same).sum())} different-person "
          "pairs): TAR % / FAR over pairs whose both photos pass, against dropping as many "
          f"photos at random (mean of {args.draws} draws):\n")
    head = " | ".join(f"{k} τ {v:.3f}: limit | random" for k, v in taus.items())
    refit = " | ".join(f"TAR at FAR {t:g} refitted: limit | random" for t in TARGETS)
    print(f"| limit | photos refused | {head} | {refit} |")
    print("|---|---|" + "---|---|" * (len(taus) + len(TARGETS)))
    everything = np.ones(len(d), bool)
    cells = []
    for tau in taus.values():
        tar, far, _ = rates(d, same, everything, tau)
        cells.append(f"{100 * tar:.1f} / {far:.1e} | ")
    cells += [f"{100 * tar_at_far(d, same, everything, t):.1f} | " for t in TARGETS]
    print("| none | 0 % | " + " | ".join(cells) + " |")
    for n, opt in rows_of.items():
        ok = passes(q, opt)
        if ok.all():
            continue
        keep = ok[i] & ok[j]
        cells = []
        for tau in taus.values():
            tar, far, _ = rates(d, same, keep, tau)
            rnd = []
            for _ in range(args.draws):
                r_ok = np.zeros(len(e), bool)
                r_ok[rng.permutation(len(e))[:int(ok.sum())]] = True
                rnd.append(rates(d, same, r_ok[i] & r_ok[j], tau)[:2])
            rt, rf = np.nanmean(np.array(rnd), axis=0)
            cells.append(f"{100 * tar:.1f} / {far:.1e} | {100 * rt:.1f} / {rf:.1e}")
        for t in TARGETS:
            rnd = []
            for _ in range(args.draws):
                r_ok = np.zeros(len(e), bool)
                r_ok[rng.permutation(len(e))[:int(ok.sum())]] = True
                rnd.append(tar_at_far(d, same, r_ok[i] & r_ok[j], t))
            cells.append(f"{100 * tar_at_far(d, same, keep, t):.1f} | {100 * np.mean(rnd):.1f}")
        print(f"| {n} | {100 * (1 - ok.mean()):.1f} % | " + " | ".join(cells) + " |")

    print("\nGenuine (same-person) median distance by quantile band of each measurement, "
          "held-out (a measurement that matters has a slope):\n")
    t = tables["held-out"]
    bands = [(0, .1), (.1, .5), (.5, .9), (.9, 1.0)]
    print("| measurement | " + " | ".join(f"{int(100 * a)}-{int(100 * b)} %" for a, b in bands)
          + " |")
    print("|---|" + "---|" * len(bands))
    for c, n in enumerate(FEATURES):
        v = np.abs(t[:, c]) if n in ("yaw", "pitch") else t[:, c]
        cells = []
        for a, b in bands:
            lo, hi = np.quantile(v, a), np.quantile(v, b)
            sel = (v >= lo) & (v <= hi)
            g = same & (sel[i] | sel[j])
            cells.append(f"{np.median(d[g]):.2f}")
        print(f"| {n}{' (abs)' if n in ('yaw', 'pitch') else ''} | " + " | ".join(cells) + " |")

    from export.faces.evaluate import identification_split

    variants = {"default limits": base, "default + lighting 0.5": lit, "strict": strict}
    print("\nThe door's τ for FAR 1e-4 refitted on the held-out pairs whose photos pass "
          "(what a release calibrated on good faces only would carry), and one-shot "
          "identification at each τ: enrolled probes let in as themselves % / unknown "
          "people's probes let in % (how many) / probes skipped %. `first` enrols each "
          "person's first photo, `good` their first photo that passes; probes `all` or only "
          "those that "
          "pass (the door waits for a better frame):\n")
    print("| limits | τ | set | first, all probes | good, all probes | first, good probes "
          "| good, good probes |")
    print("|---|---|---|---|---|---|---|")
    rows = [("none (the file's far_1e-4)", QualityOptions.off(), taus["far_1e-4"])]
    for label, opt in variants.items():
        ok = passes(q, opt)
        keep = ok[i] & ok[j]
        imp = np.sort(d[~same & keep])
        rows.append((label, opt, float(imp[int(np.floor(1e-4 * len(imp)))] - 1e-9)))
        rows.append((label + ", file's τ", opt, taus["far_1e-4"]))
    for label, opt, tau in rows:
        for name in ("held-out", "att-orl", "yale"):
            e_s, q_s, who_s, k_s = sets[name]
            names_s = sorted(set(who_s))
            if name == "held-out":  # a random quarter of the people are never enrolled
                order = np.random.default_rng(0).permutation(len(names_s))
                unk = {int(u) for u in order[:len(names_s) // 4]}
            else:  # as `export faces evaluate` splits them
                people, _, unknown = identification_split(faces / name)
                unk = {names_s.index(people[u].name) for u in unknown
                       if people[u].name in names_s}
            cells = []
            for by_q, gate in ((False, False), (True, False), (False, True), (True, True)):
                r = identification(e_s, who_s, q_s, k_s, tau, opt, unk, by_q, gate)
                cells.append(f"{100 * r['self_in']:.1f} / {100 * r['unknown_in']:.1f} "
                             f"({r['unknown_in_count']}) / {100 * r['skipped']:.1f}")
            print(f"| {label} | {tau:.3f} | {name} | " + " | ".join(cells) + " |")
    if Path(args.cache).is_file():
        training_faces(Path(args.cache), base)
    if args.plot:
        plot(tables["held-out"], d, same, i, j, taus, base, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def training_faces(cache: Path, limits: QualityOptions) -> None:
    """Share of the training cache's faces that miss the limits, per photo set (the
    cache has no detector score and no photo size, so those limits are left out here)."""
    from sdk.faces.quality import assess_aligned, pose_from_landmarks

    with np.load(cache) as z:
        landmarks, images, sources = z["landmarks"], z["images"], z["sources"]
    no_score = replace(limits, min_score=None)
    bad = np.zeros(len(images), bool)
    for k in range(len(images)):
        eyes, yaw, pitch = pose_from_landmarks(landmarks[k])
        sharp, bright, contrast, asym = assess_aligned(images[k])
        q = FaceQuality(eyes, yaw, pitch, sharp, bright, contrast, asym, score=1.0)
        bad[k] = not q.ok(no_score)
    print(f"\nFaces of the training cache ({len(images)}, every identity) that miss the "
          "default limits (the detector score is not in the cache):\n")
    print("| photo set | faces | miss a limit |")
    print("|---|---|---|")
    for src in np.unique(sources):
        m = sources == src
        print(f"| {src} | {int(m.sum())} | {100 * bad[m].mean():.1f} % |")
    print(f"| all | {len(images)} | {100 * bad.mean():.1f} % |")


def plot(t: np.ndarray, d, same, i, j, taus: dict[str, float], limits: QualityOptions,
         path: str) -> None:
    """TAR (and FAR) at the file's τ over the held-out pairs, binned by the *worse* of the
    pair's two photos on each measurement, with the default limit as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [("eye_distance", "px between the eyes", "min_eye_distance", False),
             ("yaw", "|yaw|", "max_yaw", True), ("sharpness", "sharpness", "min_sharpness", False),
             ("score", "detector score", "min_score", False)]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4), sharey=True)
    for ax, (name, label, limit, higher_is_worse) in zip(axes, shown):
        v = t[:, FEATURES.index(name)]
        v = np.abs(v) if higher_is_worse else v
        worse = np.maximum(v[i], v[j]) if higher_is_worse else np.minimum(v[i], v[j])
        edges = np.unique(np.quantile(worse[same], np.linspace(0, 1, 11)))
        centres = (edges[:-1] + edges[1:]) / 2
        for (pname, tau), style in zip(taus.items(), ("-", "--")):
            tar = [np.mean(d[same & (worse >= a) & (worse <= b)] <= tau)
                   for a, b in zip(edges[:-1], edges[1:])]
            ax.plot(centres, 100 * np.array(tar), "o" + style, color="tab:blue", ms=3,
                    label=f"TAR at {pname}")
        ax.axvline(getattr(limits, limit), color="tab:red", lw=1, label="default limit")
        ax.set_xlabel(f"{label} (worse photo of the pair)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("same-person pairs accepted, %")
    axes[0].legend(fontsize=8)
    fig.suptitle("held-out pairs: how the worse photo's quality moves true accepts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
