"""Probe (session 10): does a threshold fitted on one camera's people hold for its others?

``door_lock.py calibrate`` fits τ on photos the site's own camera took.  Whether that τ
keeps its promise for people who were not in the calibration photos is the question a
site cares about.  For att-orl and yale (each one camera and one light set-up), the
people are split in two random halves many times: τ is fitted on one half
(``sdk.calibrate_threshold``, target FAR ``--far`` at 95 % confidence) and measured on
every pair of the other half's photos, next to the file's own operating point for the
same target.  Reported: the mean over splits of each τ, its false-accept rate on the
unseen half (and the share of splits where that rate exceeded the target) and its
true-accept rate there.  The first table is each whole set measured at the file's points.

    python scripts/site_calibration_probe.py [--model models/faces/face_encoder_int8.onnx]
        [--far 1e-3 --far 1e-2] [--splits 20]
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
from apps.door_lock import embed_site, site_photos  # noqa: E402  (what `calibrate` embeds)
from sdk.errors import CalibrationError  # noqa: E402
from sdk.faces.calibration import calibrate_threshold  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--far", type=float, action="append",
                    help="target false-accept rate (repeatable; default 1e-3 and 1e-2)")
    ap.add_argument("--splits", type=int, default=20)
    args = ap.parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    fars = args.far or [1e-3, 1e-2]
    with sdk.FaceVerifier.create(args.model, threads=1) as fv:
        points = dict(sorted(fv.info.operating_points.items(), key=lambda kv: kv[1]))
        sets = {}
        for name in ("att-orl", "yale"):
            e, who, _ = embed_site(fv, site_photos(str(Path(args.shared) / "data" / "faces"
                                                       / name)))
            sets[name] = (e, np.array(who))
        print(f"## {Path(args.model).name} ({fv.model_id})\n")
    print("Each whole set at the file's thresholds (every pair of its photos):\n")
    print("| set | photos / people | different-person pairs | "
          + " | ".join(f"{k} τ {v:.3f}: FAR / TAR %" for k, v in points.items()) + " |")
    print("|---|---|---|" + "---|" * len(points))
    for name, (e, who) in sets.items():
        cells, pairs = [], sdk.SitePairs(e, who)
        for tau in points.values():
            r = pairs.rates(tau)
            cells.append(f"{r.far:.1e} / {100 * r.tar:.1f}")
        print(f"| {name} | {len(e)} / {len(set(who))} | {r.impostor_pairs} | "
              + " | ".join(cells) + " |")
    print("\nτ fitted on half the people (95 %), measured on the other half; "
          f"{args.splits} random splits, means:\n")
    print("| set, target FAR, τ | τ | FAR on the unseen half | splits over the target | "
          "TAR % on the unseen half | τ refused (too few pairs) |\n|---|---|---|---|---|---|")
    for far in fars:
        point = "far_" + f"{far:.0e}".replace("e-0", "e-")  # the files' own names
        rng = np.random.default_rng(0)
        for name, (e, who) in sets.items():
            people = np.unique(who)
            rows = {"fitted on the other half": [], f"the file's {point}": []}
            refused = 0
            for _ in range(args.splits):
                half = set(rng.permutation(people)[:len(people) // 2])
                a = np.array([w in half for w in who])
                try:
                    site = calibrate_threshold(e[a], who[a], target_far=far).threshold
                except CalibrationError:
                    refused += 1
                    continue
                unseen = sdk.SitePairs(e[~a], who[~a])
                for key, tau in zip(rows, (site, points[point])):
                    r = unseen.rates(tau)
                    rows[key].append((tau, r.far, r.far > far, r.tar))
            for key, vals in rows.items():
                label = f"| {name}, {far:g}, {key} |"
                if not vals:
                    print(f"{label} – | – | – | – | {refused} of {args.splits} |")
                    continue
                v = np.array(vals, dtype=float)
                print(f"{label} {v[:, 0].mean():.3f} | {v[:, 1].mean():.1e} | "
                      f"{int(v[:, 2].sum())} of {len(v)} | {100 * v[:, 3].mean():.1f} | "
                      f"{refused} of {args.splits} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
