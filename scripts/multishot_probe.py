"""Probe (session 17): with several photos enrolled per person, nearest photo or their mean?

``sdk.Gallery`` scores a person by the nearest of their enrolled embeddings. With K photos a
stranger gets K chances to land near one of them, so the pair FAR a τ was fitted for
(``far_1e-4``: one pair in 10,000) grows about K-fold per person (run 19 let 3 of 100
unknown att-orl probes in with three photos at that τ, none with one). The other common
rule scores against the person's mean embedding, re-normalised (one template per person).

Every photo of the held-out pairs' people, att-orl and yale goes through the runtime
(detect, align, embed: what the door sees). Then, per rule and K (1, 3):

1. held-out people, verification of a probe photo against one person's template made of
   K other photos of a person (every person with at least K + 1 photos; ``--draws`` random
   enrolment sets each): genuine = probe of the same person, impostor = probe of anyone
   else. FAR and TAR at the file's ``far_1e-3`` / ``far_1e-4`` τ, and TAR at FAR 1e-3 /
   1e-4 with τ refitted on these scores (the rule's own ROC);
2. att-orl and yale, 1:N as ``export faces evaluate --enroll K`` does it (its ten further
   draws of who stays unknown, seeds 1-10; the rest enrol their first K photos in which
   the runtime found a face, where ``evaluate`` crops a photo without one as it is):
   enrolled probes let in as themselves, unknown people's probes let in, at the file's
   ``far_1e-4`` τ.

    python scripts/multishot_probe.py [--model models/faces/face_encoder_int8.onnx]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

import sdk  # noqa: E402

RULES = ("nearest", "mean")


def embed_all(fv: sdk.FaceVerifier, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, index of each file with a face)."""
    out, kept = [], []
    for i, f in enumerate(files):
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        faces = fv.detect(image) if image is not None else []
        if faces:
            out.append(fv.embed_aligned(fv.align(image, faces[0])))
            kept.append(i)
    return np.stack(out), np.array(kept)


def score(probes: np.ndarray, enrolled: np.ndarray, rule: str) -> np.ndarray:
    """d(probe, person) for each probe row: nearest enrolled photo, or the mean template."""
    # sdk.squared_l2: the one distance the SDK, training and evaluation use
    if rule == "nearest":
        return np.min(sdk.squared_l2(probes[:, None, :], enrolled[None]), axis=1)
    t = enrolled.mean(0)
    return sdk.squared_l2(probes, t / np.linalg.norm(t))


def tar_at_far(gen: np.ndarray, imp: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, τ) at the largest τ whose FAR over ``imp`` is at most ``far`` (match: d <= τ)."""
    imp = np.sort(imp)
    k = int(np.floor(far * len(imp)))  # impostors allowed in
    tau = np.nextafter(imp[k], -np.inf) if k < len(imp) else np.inf
    return float((gen <= tau).mean()), float(tau)


def verification(e: np.ndarray, who: np.ndarray, k: int, rule: str, draws: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores of probes against K-photo templates."""
    gen, imp = [], []
    people = [p for p in np.unique(who) if (who == p).sum() > k]
    for p in people:
        rows = np.flatnonzero(who == p)
        for _ in range(draws):
            pick = rng.choice(rows, size=k, replace=False)
            rest = np.setdiff1d(rows, pick)
            enrolled = e[pick]
            gen.append(score(e[rest], enrolled, rule))
            imp.append(score(e[who != p], enrolled, rule))
    return np.concatenate(gen), np.concatenate(imp)


def identification(e: np.ndarray, who: np.ndarray, k: int, rule: str, tau: float,
                   seed: int) -> tuple[float, float, int, int]:
    """(enrolled probes let in as themselves, unknown probes let in, counts) at τ, with
    ``evaluate``'s split of who stays unknown for ``seed``."""
    from export.faces.evaluate import unknown_people

    people = sorted(set(who))
    unknown = unknown_people(len(people), 0.25, seed)
    templates, labels, used = [], [], set()
    for j, p in enumerate(people):
        if j in unknown:
            continue
        rows = np.flatnonzero(who == p)[:k]
        templates.append(e[rows])
        labels.append(p)
        used.update(int(r) for r in rows)
    self_in = known = unk_in = unk = 0
    for r in range(len(e)):
        if r in used:
            continue
        d = np.array([score(e[r:r + 1], t, rule)[0] for t in templates])
        j = int(np.argmin(d))
        if people.index(who[r]) in unknown:
            unk += 1
            unk_in += d[j] <= tau
        else:
            known += 1
            self_in += (d[j] <= tau) and labels[j] == who[r]
    return self_in / max(known, 1), unk_in / max(unk, 1), known, unk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    ap.add_argument("--draws", type=int, default=3, help="enrolment sets per held-out person")
    ap.add_argument("--splits", type=int, default=10,
                    help="att-orl / yale: random unknown quarters to average over")
    args = ap.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    faces = Path(args.shared) / "data" / "faces"
    from export.faces.evaluate import photos_of_pairs  # numpy-only reader of pairs.txt

    with sdk.FaceVerifier.create(args.model, threads=1) as fv:
        taus = {p: fv.info.operating_points[p] for p in ("far_1e-3", "far_1e-4")}
        print(f"## {Path(args.model).name} ({fv.model_id}); τ far_1e-3 {taus['far_1e-3']:.3f}, "
              f"far_1e-4 {taus['far_1e-4']:.3f}\n")
        paths, names = photos_of_pairs(Path(args.pairs), faces)
        e_h, k_h = embed_all(fv, [Path(p) for p in paths])
        who_h = np.asarray(names)[k_h]
        sets = {}
        for name in ("att-orl", "yale"):
            people = sorted(p for p in (faces / name).iterdir() if p.is_dir())
            fs = [f for p in people for f in sorted(p.iterdir())]
            e, k = embed_all(fv, fs)
            sets[name] = (e, np.array([fs[i].parent.name for i in k]))

    print(f"Held-out people ({len(e_h)} photos, {len(set(who_h))} people), a probe against one "
          f"person's K-photo template ({args.draws} random enrolment sets per person):\n")
    print("| K | rule | genuine / impostor scores | at far_1e-3 τ: FAR, TAR | at far_1e-4 τ: FAR, "
          "TAR | TAR at FAR 1e-3 / 1e-4 (own τ) |")
    print("|---|---|---|---|---|---|")
    for k in (1, 3):
        for rule in RULES if k > 1 else RULES[:1]:
            gen, imp = verification(e_h, who_h, k, rule, args.draws, np.random.default_rng(0))
            cells = []
            for p in ("far_1e-3", "far_1e-4"):
                t = taus[p]
                cells.append(f"{(imp <= t).mean():.2e}, {100 * (gen <= t).mean():.1f} %")
            own = [tar_at_far(gen, imp, f)[0] for f in (1e-3, 1e-4)]
            print(f"| {k} | {rule} | {len(gen)} / {len(imp)} | {cells[0]} | {cells[1]} | "
                  f"{100 * own[0]:.1f} / {100 * own[1]:.1f} % |")
    print(f"\natt-orl and yale, 1:N at the file's far_1e-4 τ {taus['far_1e-4']:.3f} (a random "
          f"quarter of the people never enrolled, evaluate's draws 1-{args.splits}):\n")
    print("| set | K | rule | enrolled probes let in as themselves | unknown probes let in |")
    print("|---|---|---|---|---|")
    for name, (e, who) in sets.items():
        for k in (1, 3):
            for rule in RULES if k > 1 else RULES[:1]:
                res = [identification(e, who, k, rule, taus["far_1e-4"], seed)
                       for seed in range(1, args.splits + 1)]
                self_in = np.mean([r[0] for r in res])
                unk_in = np.mean([r[1] for r in res])
                unk_n = sum(round(r[1] * r[3]) for r in res)
                unk_total = sum(r[3] for r in res)
                print(f"| {name} | {k} | {rule} | {100 * self_in:.1f} % | {100 * unk_in:.1f} % "
                      f"({unk_n} of {unk_total}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
