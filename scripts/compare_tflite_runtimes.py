"""Run every released .tflite model and the face pipeline through the SDK in this Python
environment and save the outputs, so two environments can be compared:

    # the default stack (LiteRT, numpy 2, OpenCV 5)
    .venv/bin/python scripts/compare_tflite_runtimes.py save build/litert.npz
    # a device-like stack: tflite-runtime 2.14, numpy 1.26, OpenCV 4 (see docs/JETSON.md)
    legacy/bin/python scripts/compare_tflite_runtimes.py save build/legacy.npz
    .venv/bin/python scripts/compare_tflite_runtimes.py compare build/litert.npz build/legacy.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def save(out: Path, shared: Path) -> None:
    import cv2

    import sdk

    rng = np.random.default_rng(0)
    arrays, runtimes = {}, []
    for f in sorted((REPO / "models").rglob("*.tflite")):
        with sdk.load_model(f) as m:
            shape = [64 if d is None else d for d in m.inputs[0].shape]
            shape[0] = 1
            arrays[f.stem] = m(rng.uniform(0, 255, size=shape).astype(np.float32))
            runtimes.append(m.runtime)
    photos = sorted((shared / "data" / "faces" / "deepface-pairs").glob("*.jpg"))[:8]
    with sdk.FaceVerifier.create(REPO / "models" / "faces" / "face_encoder_int8.tflite") as fv:
        arrays["pipeline"] = np.stack([fv.embed(cv2.imread(str(p))) for p in photos])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{out}: {len(arrays)} outputs; {sorted(set(runtimes))}, numpy {np.__version__}, "
          f"OpenCV {cv2.__version__}")


def compare(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        for k in x.files:
            d = np.abs(x[k].astype(np.float64) - y[k])
            scale = max(float(np.abs(x[k]).max()), 1e-12)
            print(f"{k:20s} max|Δ| {d.max():.3g}  mean|Δ| {d.mean():.3g}  "
                  f"max relative to the output range {d.max() / scale:.2e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("out", type=Path)
    s.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "save":
        save(args.out, args.shared)
    else:
        compare(args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
