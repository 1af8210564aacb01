"""Probe (session 7): does enlarging a small picture before the style student, then
shrinking its output back, bring the student's costs closer to the optimiser's?

For each released stylizer and content sample (fitted to 256 px like `export style
evaluate`), the student runs on the picture enlarged 1, 1.5, 2 and 3 times (bicubic) and
its output is shrunk back (area); J_style and J_content are given as ratios to the
optimiser's output that an earlier `export style evaluate` wrote (default
runs/style/evaluate_s5r).  Needs the [train] extra (TensorFlow, for the loss network).

    python scripts/style_upscale_probe.py [--evaluation runs/style/evaluate_s5r]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.style.evaluate import student_costs  # noqa: E402
from export.style.lossnet import feature_extractor  # noqa: E402
from export.style.optimize import CostModel, CostWeights, fit_side  # noqa: E402
from export.style.student import SIZE_MULTIPLE  # noqa: E402
from export.style.train import list_images, read_rgb  # noqa: E402

SCALES = (1.0, 1.5, 2.0, 3.0)


def main(argv: list[str] | None = None) -> int:
    import sdk
    from sdk import Stylizer, StylizerOptions

    shared = ROOT.parent / "shared" / "data" / "style"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evaluation", type=Path, default=ROOT / "runs/style/evaluate_s5r",
                    help="an `export style evaluate` --out folder (its optimiser images)")
    ap.add_argument("--styles", nargs="+", default=["udnie", "wave"])
    ap.add_argument("--style-dir", type=Path, default=shared / "styles")
    ap.add_argument("--content-dir", type=Path, default=shared / "content-samples")
    ap.add_argument("--models", type=Path, default=ROOT / "models/style")
    args = ap.parse_args(argv)
    extractor = None
    print("content style " + " ".join(f"x{f}:J_style/J_content" for f in SCALES))
    for style in args.styles:
        path = args.models / f"{style}_fp32.onnx"
        with sdk.load_model(path) as m:
            weights = CostWeights().with_trained_weights(m.info.extra)
        if extractor is None:
            extractor = feature_extractor(weights.network, weights.layer_choice.names)
        costs = CostModel(extractor, weights)
        style_image = read_rgb(args.style_dir / f"{style}.jpg")
        with Stylizer.create_from_options(StylizerOptions(model_path=path, threads=1)) as st:
            for cpath in list_images(args.content_dir):
                content = fit_side(read_rgb(cpath), 256, SIZE_MULTIPLE)
                h, w = content.shape[:2]
                reference = read_rgb(args.evaluation / f"{cpath.stem}_{style}_optimizer.png")
                ref = student_costs(costs, content, style_image, reference)
                cells = []
                for f in SCALES:
                    big = cv2.resize(content, (round(w * f), round(h * f)),
                                     interpolation=cv2.INTER_CUBIC) if f != 1 else content
                    out = st(np.ascontiguousarray(big[:, :, ::-1]))[:, :, ::-1]
                    if f != 1:
                        out = cv2.resize(np.ascontiguousarray(out), (w, h),
                                         interpolation=cv2.INTER_AREA)
                    c = student_costs(costs, content, style_image, np.ascontiguousarray(out))
                    cells.append(f"x{f}:{c['J_style'] / ref['J_style']:.2f}/"
                                 f"{c['J_content'] / ref['J_content']:.2f}")
                print(cpath.stem, style, *cells, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
