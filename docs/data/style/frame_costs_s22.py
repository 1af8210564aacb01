"""Session 22: total cost of each stylizer on the content samples at a camera-frame size
(longest side 640 px, aspect kept), for two model folders side by side. Informational (not
a release rule): total J = alpha J_content + (H W / 256^2) beta J_style, each file's alpha
and beta from its metadata, beta scaled to the pixel count as the rules do.

    .venv/bin/python docs/data/style/frame_costs_s22.py OLD_DIR NEW_DIR [--side 640] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--side", type=int, default=640)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import sdk
    from export.style.evaluate import student_costs
    from export.style.lossnet import feature_extractor
    from export.style.optimize import CostModel, CostWeights, fit_side
    from export.style.student import SIZE_MULTIPLE
    from export.style.train import list_images, read_rgb
    from sdk.paths import SHARED_DIR

    samples = SHARED_DIR / "data" / "style" / "content-samples"
    styles = SHARED_DIR / "data" / "style" / "styles"
    extractor = None
    rows = []
    for cpath in list_images(samples):
        content = fit_side(read_rgb(cpath), args.side, SIZE_MULTIPLE)
        h, w = content.shape[:2]
        bgr = np.ascontiguousarray(content[:, :, ::-1])
        for style in ("udnie", "wave"):
            style_rgb = read_rgb(styles / f"{style}.jpg")
            for precision in ("fp32", "int8"):
                row = {"content": cpath.stem, "style": style, "precision": precision,
                       "size": [w, h]}
                for which in ("old", "new"):
                    path = Path(getattr(args, which)) / f"{style}_{precision}.tflite"
                    with sdk.Stylizer.create_from_options(
                            sdk.StylizerOptions(model_path=path, threads=1)) as st:
                        extra = st.model.info.extra
                        out = np.ascontiguousarray(st(bgr)[:, :, ::-1])
                    weights = CostWeights().with_trained_weights(extra)
                    if extractor is None:
                        extractor = feature_extractor(weights.network, weights.layer_choice.names)
                    c = student_costs(CostModel(extractor, weights), content, style_rgb, out)
                    c["J"] = (weights.alpha * c["J_content"]
                              + h * w / 256 ** 2 * weights.beta * c["J_style"])
                    row[which] = c
                row["change"] = round(row["new"]["J"] / row["old"]["J"] - 1, 4)
                rows.append(row)
                print(f"{cpath.stem} {style} {precision} {w}x{h}: J {row['old']['J']:.4g} -> "
                      f"{row['new']['J']:.4g} ({100 * row['change']:+.1f} %); J_style "
                      f"{row['old']['J_style']:.3g} -> {row['new']['J_style']:.3g}, J_content "
                      f"{row['old']['J_content']:.3g} -> {row['new']['J_content']:.3g}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"side": args.side, "old": args.old,
                                               "new": args.new, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
