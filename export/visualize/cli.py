"""``python -m export visualize --model M --layer L --images DIR --out GRID.png``

M is ``squeezenet`` or ``vgg19`` (the style loss networks, ImageNet weights from
a local file) or a saved Keras model (``.keras``), e.g. the face encoder.
Images are fed as RGB 0..255, resized to the model's input size (``--size``
for models that take any size); ``--align-faces`` first detects and aligns
each face with the SDK's detector, as the face encoder was trained.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from export import images as image_io

from .core import VisualizeError, crop_patch, grid, top_patches

# modules whose import registers custom Keras layers used by our saved models
_REGISTERING = ("export.encoders", "export.faces.model", "export.style.student")


def load_network(spec: str, weights: str | None):
    """A Keras model from a name (``squeezenet``, ``vgg19``) or a ``.keras`` file."""
    if spec in ("squeezenet", "vgg19"):
        from export.style import lossnet

        builder = getattr(lossnet, spec)
        return builder(weights) if weights else builder()
    path = Path(spec)
    if not path.is_file():
        raise VisualizeError(f"model {spec!r}: not 'squeezenet', 'vgg19' or an existing file")
    for name in _REGISTERING:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import keras

    return keras.saving.load_model(path, compile=False)


def prepare_images(files, size: int, align_faces: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(model inputs as RGB float32, the same images as BGR uint8 for cropping)."""
    shown = image_io.load_images(files, size, size, align_faces=align_faces,
                                 progress=lambda it: tqdm(it, desc="loading images", unit="img",
                                                          leave=False, disable=None))
    if not shown:
        raise VisualizeError("none of the images could be used (unreadable, or no face found)")
    return [cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) for img in shown], shown


def visualize(model, layer: str, files, out: Path, *, size: int | None = None,
              align_faces: bool = False, units=None, tile: int = 64) -> dict:
    """Write the 9x9 grid for ``layer`` and return a summary."""
    fixed = model.inputs[0].shape[1]
    size = int(fixed) if fixed is not None else (size or 224)
    inputs, shown = prepare_images(files, size, align_faces)
    bar = tqdm(total=len(inputs), desc=f"scanning {layer}", unit="img", leave=False, disable=None)

    def progress(done, total):
        bar.update(done - bar.n)

    chosen, hits, field = top_patches(model, layer, inputs, units=units, progress=progress)
    bar.close()
    patches = [[crop_patch(shown[h.image], field, h.y, h.x) for h in hits[u]] for u in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid(patches, tile=tile))
    return {"layer": layer, "units": chosen, "images": len(inputs),
            "receptive_field": None if field.size is None else round(field.size, 1),
            "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export visualize", description=__doc__)
    ap.add_argument("--model", required=True, help="squeezenet | vgg19 | PATH.keras")
    ap.add_argument("--weights", help="weights file for squeezenet/vgg19 (default: ../shared)")
    ap.add_argument("--layer", required=True, help="layer name (a wrong one lists them all)")
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--max-images", type=int, default=400)
    ap.add_argument("--size", type=int, default=224, help="input size for any-size models")
    ap.add_argument("--align-faces", action="store_true")
    ap.add_argument("--units", type=int, nargs="*", help="channels to show (default: the 9 "
                                                          "strongest)")
    args = ap.parse_args(argv)
    try:
        model = load_network(args.model, args.weights)
        files = image_io.list_images(args.images, args.max_images)
        summary = visualize(model, args.layer, files,
                            args.out, size=args.size, align_faces=args.align_faces,
                            units=args.units)
    except (VisualizeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(f"{summary['out']}: layer {summary['layer']}, units {summary['units']}, "
          f"receptive field {summary['receptive_field']} px, {summary['images']} images")
    return 0
