"""Probe (session 13): does a printed photo of an enrolled person open the door, and can
the five landmarks tell a photo held to the camera from a live head?

The SDK has no presentation-attack (liveness) detection.  This probe measures what that
means and tries the one cue the runtime already has, the five YuNet landmarks:

1. **The threat.**  att-orl and yale, each person enrolled with their first photo (as in
   ``export faces evaluate``).  Each of their other photos is shown to the door twice:
   as it is (the live probe), and as a print of it held in front of the camera: the
   photo rendered as a flat sheet 20 cm tall at a random distance (30-60 cm) and tilt
   (yaw, pitch within +-25 degrees, roll within +-15), through a 60-degree pinhole
   camera, with a print's lower contrast and a little blur.  Reported: the share of
   each let in as the enrolled person at the file's ``far_1e-4`` τ.
2. **Planar parallax, a cue that fails.**  A flat sheet moves like a plane: the
   homography that maps one view's eyes and mouth corners onto another's also maps its
   nose.  A head is not flat: when it turns, the nose tip moves off that plane's
   prediction.  The cue is that residual over the eye distance, for two views of one
   live person (two att-orl or yale photos of them: pose and expression vary) against
   two views of one print (an att-orl photo rendered at two poses), and the AUC of
   telling them apart.
   Low AUC means YuNet's landmarks on a tilted print look as 3-D as a turning head's.

    python scripts/photo_attack_probe.py [--model models/faces/face_encoder_int8.onnx]
        [--views 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

import sdk  # noqa: E402
from apps.door_lock import IMAGE_SUFFIXES  # noqa: E402
from export.faces.metrics import roc_curve  # noqa: E402 - numpy only, no TensorFlow

#: Landmarks on the sheet's "plane" (eyes, mouth corners) and the one off it (nose tip).
PLANE = [0, 1, 3, 4]
NOSE = 2


def planar_parallax(a: np.ndarray, b: np.ndarray) -> float:
    """How far view b's nose lies from where the plane through a's eyes and mouth corners
    puts it, over b's eye distance (0 for any two views of a flat picture)."""
    a = np.asarray(a, np.float32).reshape(5, 2)
    b = np.asarray(b, np.float32).reshape(5, 2)
    h = cv2.getPerspectiveTransform(a[PLANE], b[PLANE])
    p = h @ np.array([a[NOSE, 0], a[NOSE, 1], 1.0])
    eye_distance = float(np.hypot(*(b[1] - b[0])))
    if abs(p[2]) < 1e-9 or eye_distance < 1e-6:
        return float("inf")
    return float(np.hypot(*(b[NOSE] - p[:2] / p[2])) / eye_distance)


def symmetric_parallax(a: np.ndarray, b: np.ndarray) -> float:
    return max(planar_parallax(a, b), planar_parallax(b, a))


def render_print(image: np.ndarray, rng: np.random.Generator, *, width: int = 640,
                 height: int = 480, max_yaw: float = 25.0, max_pitch: float = 25.0,
                 max_roll: float = 15.0) -> np.ndarray:
    """``image`` printed 20 cm tall and held in front of a 60-degree camera at a random
    distance and tilt: a perspective warp, a print's contrast, a little blur."""
    h, w = image.shape[:2]
    focal = width / (2 * np.tan(np.deg2rad(30)))
    cm_per_px = 20.0 / max(h, w)
    yaw, pitch, roll = (np.deg2rad(rng.uniform(-m, m)) for m in (max_yaw, max_pitch, max_roll))
    rot = (cv2.Rodrigues(np.array([0.0, 0.0, roll]))[0]
           @ cv2.Rodrigues(np.array([pitch, 0.0, 0.0]))[0]
           @ cv2.Rodrigues(np.array([0.0, yaw, 0.0]))[0])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    sheet = np.c_[(corners - [w / 2, h / 2]) * cm_per_px, np.zeros(4)]
    cam = sheet @ rot.T + [rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(30, 60)]
    proj = focal * cam[:, :2] / cam[:, 2:3] + [width / 2, height / 2]
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), proj.astype(np.float32))
    background = np.full((height, width, 3), 100, np.uint8)
    out = cv2.warpPerspective(image, warp, (width, height), dst=background,
                              borderMode=cv2.BORDER_TRANSPARENT, flags=cv2.INTER_LINEAR)
    # ink on paper: blacks lift, whites dim, edges soften
    out = (out.astype(np.float32) * rng.uniform(0.75, 0.9) + rng.uniform(15, 30))
    return cv2.GaussianBlur(np.clip(out, 0, 255).astype(np.uint8), (3, 3), 0.8)


def people(root: Path) -> list[list[Path]]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) >= 2:
            out.append(files)
    return out


def auc(live: np.ndarray, printed: np.ndarray) -> float:
    """P(a live pair's cue > a print pair's), ties counted half: the ROC of the face
    metrics, with the negated cue as the distance and live pairs as the "same" side."""
    cue = np.r_[live, printed]
    far, tar, _ = roc_curve(-cue, np.r_[np.ones(len(live), bool), np.zeros(len(printed), bool)])
    return float(np.trapezoid(tar, far))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--operating-point", default="far_1e-4")
    ap.add_argument("--views", type=int, default=6, help="print poses per photo (part 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(args.seed)
    faces_root = Path(args.shared) / "data/faces"

    with sdk.FaceVerifier.create(args.model, threads=args.threads) as fv:
        tau = fv.info.operating_points[args.operating_point]
        print(f"model {fv.model_id}, τ {args.operating_point} = {tau:.3f}\n")
        print("| set | people | probes | live photo let in | its print let in | "
              "print detected |")
        print("|---|---|---|---|---|---|")
        live_cues, print_cues = [], []
        for name in ("att-orl", "yale"):
            n_probe = live_in = print_in = print_seen = 0
            sets = people(faces_root / name)
            for files in sets:
                images = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
                faces = [fv.detect(im) for im in images]
                if not faces[0]:
                    continue
                enrolled = fv.embed(images[0], faces[0][0])
                landmarks = [f[0].landmarks for f in faces if f]
                live_cues += [symmetric_parallax(a, b)
                              for a, b in itertools.combinations(landmarks, 2)]
                for image, found in zip(images[1:], faces[1:]):
                    if not found:
                        continue
                    n_probe += 1
                    live_in += fv.distance(enrolled, fv.embed(image, found[0])) <= tau
                    printed = render_print(image, rng)
                    seen = fv.detect(printed)
                    if seen:
                        print_seen += 1
                        print_in += fv.distance(enrolled, fv.embed(printed, seen[0])) <= tau
                if name == "att-orl":  # part 2: one print of the first photo, several poses
                    views = [fv.detect(render_print(images[0], rng)) for _ in range(args.views)]
                    views = [v[0].landmarks for v in views if v]
                    print_cues += [symmetric_parallax(a, b)
                                   for a, b in itertools.combinations(views, 2)]
            print(f"| {name} | {len(sets)} | {n_probe} | {100 * live_in / n_probe:.1f} % | "
                  f"{100 * print_in / n_probe:.1f} % | {100 * print_seen / n_probe:.1f} % |")

    live_cues, print_cues = np.array(live_cues), np.array(print_cues)
    print(f"\nplanar parallax (nose residual / eye distance), two views of one live person "
          f"(att-orl and yale photo pairs, {len(live_cues)}) vs two views of one print "
          f"(att-orl, {len(print_cues)}):")
    for q in (10, 50, 90):
        print(f"  {q}th percentile: live {np.percentile(live_cues, q):.3f}, "
              f"print {np.percentile(print_cues, q):.3f}")
    print(f"  AUC (live above print): {auc(live_cues, print_cues):.3f}")
    for target in (0.01, 0.05):
        cut = np.percentile(print_cues, 100 * (1 - target))
        print(f"  a cut that passes {100 * target:.0f} % of print pairs ({cut:.3f}) passes "
              f"{100 * np.mean(live_cues > cut):.1f} % of live pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
