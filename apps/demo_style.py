"""Stylise the sample content images with every released style and write the
results (one file per content x style, plus a grid) to an output folder.

    python apps/demo_style.py --models models/style --out runs/style/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sdk import Stylizer, StylizerOptions  # noqa: E402
from sdk.paths import SHARED_DIR  # noqa: E402
from sdk.style import stylizer_paths  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(REPO / "models" / "style"),
                        help="folder of released stylizers (<style>_<precision>.<ext>)")
    parser.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--format", default=".tflite", choices=(".tflite", ".onnx"))
    parser.add_argument("--shared", default=str(SHARED_DIR),
                        help="third-party data folder (default: ../shared)")
    parser.add_argument("--content", default=None,
                        help="content images (default: <shared>/data/style/content-samples)")
    parser.add_argument("--out", default=str(REPO / "runs" / "style" / "demo"))
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.max_side < 16:
        parser.error(f"--max-side must be at least 16 pixels, got {args.max_side}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")

    models = stylizer_paths(args.models, args.precision, args.format)
    if not models:
        print(f"no *_{args.precision}{args.format} stylizers in {args.models}", file=sys.stderr)
        return 2
    content_dir = Path(args.content or Path(args.shared) / "data" / "style" / "content-samples")
    if not content_dir.is_dir():
        print(f"content folder not found: {content_dir} (see ../shared/README.md)", file=sys.stderr)
        return 2
    contents = sorted(p for p in content_dir.iterdir()
                      if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not contents:
        print(f"no .jpg/.png images in {content_dir}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in contents:
        image = cv2.imread(str(c), cv2.IMREAD_COLOR)
        if image is None:
            print(f"skipping unreadable {c}", file=sys.stderr)
            continue
        s = min(1.0, args.max_side / max(image.shape[:2]))
        image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        row = [image]
        for style, path in models.items():
            with Stylizer.create_from_options(StylizerOptions(model_path=path,
                                                              threads=args.threads)) as st:
                result = st(image)
            target = out / f"{c.stem}_{style}.jpg"
            cv2.imwrite(str(target), result)
            print(target)
            row.append(result)
        rows.append(np.concatenate([cv2.resize(r, (256 * r.shape[1] // r.shape[0], 256))
                                    for r in row], axis=1))
    if not rows:
        print(f"none of the images in {content_dir} could be read", file=sys.stderr)
        return 2
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    cv2.imwrite(str(out / "grid.jpg"), grid)
    print(out / "grid.jpg", "columns: content,", ", ".join(models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
