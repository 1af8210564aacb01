"""Probe (session 11): does enrolling synthetic variants of the one photo help the door?

One-shot enrolment is the door's weak point (docs/FACES.md, "How many photos to enrol").
Adding the photo's mirror image and relit copies (gamma 0.6 and 1.6, a shading ramp from
either side) to a person's gallery entries gives each probe more chances to match, its
own person and strangers alike.  The question is whether the true accepts grow faster than
the false ones.  Each person of the held-out photos, att-orl and yale is enrolled with
their first photo (plus its variants); every other photo is a probe against every
enrolled person, a person's distance being the nearest of their entries (``sdk.Gallery``).
Reported: TAR and FAR (probe × person) at the file's ``far_1e-4`` τ, and TAR at FAR 1e-2 /
1e-3 / 1e-4 with τ refitted on those pairs (the comparison at matched false accepts).

    python scripts/enrol_variants_probe.py [--model models/faces/face_encoder_int8.onnx]
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
from scripts.quality_probe import detected, tar_at_far  # noqa: E402

_RAMP = np.linspace(0.35, 1.0, 112, dtype=np.float32)[None, :, None]


def variants(faces: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Aligned BGR faces (N, 112, 112, 3) -> named lists of variant batches."""
    def gamma(g):
        return np.clip(255 * (faces / 255.0) ** g, 0, 255).astype(np.uint8)

    def shade(ramp):
        return np.ascontiguousarray(np.clip(faces * ramp, 0, 255).astype(np.uint8))

    mirror = [np.ascontiguousarray(faces[:, :, ::-1])]  # the template is left-right symmetric
    light = [gamma(0.6), gamma(1.6), shade(_RAMP), shade(_RAMP[:, ::-1])]
    return {"first photo": [], "+ mirror": mirror, "+ relit (4)": light,
            "+ mirror + relit": mirror + light}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    args = ap.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    from export.faces.evaluate import photos_of_pairs

    root = Path(args.shared) / "data" / "faces"
    with sdk.FaceVerifier.create(args.model, threads=2) as fv:
        tau = fv.info.operating_points["far_1e-4"]
        print(f"## {Path(args.model).name} ({fv.model_id}), far_1e-4 τ {tau:.3f}\n")
        print("| set | enrolled | at the file's τ: TAR %, FAR (false accepts / probe × person "
              "pairs) | TAR % at FAR 1e-2 / 1e-3 / 1e-4, τ refitted |")
        print("|---|---|---|---|")
        paths, names = photos_of_pairs(Path(args.pairs), root)
        sets = {"held-out": ([Path(p) for p in paths], names)}
        for name in ("att-orl", "yale"):
            files = [f for p in sorted(q for q in (root / name).iterdir() if q.is_dir())
                     for f in sorted(p.iterdir())]
            sets[name] = (files, np.array([f.parent.name for f in files]))
        for set_name, (files, who_all) in sets.items():
            found = list(detected(fv, files))
            faces = np.stack([aligned for *_, aligned in found])
            kept = np.array([i for i, *_ in found])
            who = who_all[kept]
            e = fv.embed_aligned(faces)
            people = sorted(set(who))
            first = np.array([np.flatnonzero(who == p)[0] for p in people])
            probe = np.ones(len(e), bool)
            probe[first] = False
            same = who[probe][:, None] == np.array(people)[None]
            for label, batches in variants(faces[first]).items():
                entries = [e[first]] + [fv.embed_aligned(b) for b in batches]
                # nearest entry of each person: (probes, people)
                d = np.min([sdk.squared_l2(e[probe][:, None, :], g[None]) for g in entries],
                           axis=0)
                gen, imp = d[same], d[~same]
                pairs = np.ones(d.shape, bool)
                refit = [f"{100 * tar_at_far(d, same, pairs, far):.1f}" if imp.size >= 1 / far
                         else "-" for far in (1e-2, 1e-3, 1e-4)]
                print(f"| {set_name} | {label} | {100 * np.mean(gen <= tau):.1f}, "
                      f"{np.mean(imp <= tau):.1e} ({int((imp <= tau).sum())} / {len(imp)}) | "
                      + " / ".join(refit) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
