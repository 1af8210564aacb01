"""Average the weights of face-encoder training legs that share one start ("model soup").

Every float variable of each run's ``model.keras`` (BatchNorm moving statistics included,
not re-estimated), and the run's learnt ``classifier.npy`` (CosFace centres) and
``projection.npy`` (distillation map), are averaged with equal weights. The result is a run
folder that ``export faces release --model OUT/model.keras`` and ``train --init OUT`` take
like any other.

Only legs trained from the same weights make sense here: averaging unrelated networks gives
noise. The script checks that the architectures match exactly, not that the legs share a
start; ``state.json`` of the output records which runs were mixed.

    python scripts/weight_soup.py runs/faces/run19 runs/faces/run20 --out runs/faces/soup1920
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class SoupError(ValueError):
    """The runs cannot be averaged (missing files, different architectures)."""


def average_arrays(arrays: list[np.ndarray], what: str) -> np.ndarray:
    """The mean of equally shaped arrays, in their dtype; non-float arrays (seed states,
    counters) must be equal and are taken as they are."""
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SoupError(f"{what}: shapes differ across runs: {sorted(shapes)}")
    if not np.issubdtype(arrays[0].dtype, np.floating):
        if any(not np.array_equal(arrays[0], a) for a in arrays[1:]):
            raise SoupError(f"{what}: non-float values differ across runs")
        return arrays[0]
    return np.mean(np.stack(arrays).astype(np.float64), axis=0).astype(arrays[0].dtype)


def soup(runs: list[Path], out: Path) -> dict:
    """Write the averaged run folder ``out``; returns what was averaged."""
    import keras   # TensorFlow only when the work starts

    import export.encoders  # noqa: F401  registers the encoder's own layers (L2Normalize)

    if len(runs) < 2:
        raise SoupError("give two or more run folders")
    for r in runs:
        if not (r / "model.keras").is_file():
            raise SoupError(f"{r}: no model.keras (a run folder of `export faces train`)")
    models = [keras.models.load_model(r / "model.keras", compile=False) for r in runs]
    paths = [[v.path for v in m.weights] for m in models]
    if any(p != paths[0] for p in paths[1:]):
        raise SoupError("the runs' networks differ (variable names or order): not one architecture")
    target = models[0]
    for i, var in enumerate(target.weights):
        var.assign(average_arrays([np.asarray(m.weights[i]) for m in models], var.path))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.tmp.keras"
    target.save(tmp)
    os.replace(tmp, out / "model.keras")

    heads = {}
    for name in ("classifier", "projection"):
        files = [r / f"{name}.npy" for r in runs]
        present = [f.is_file() for f in files]
        if not any(present):
            continue
        if not all(present):
            raise SoupError(f"{name}.npy is in some runs and not in others")
        mean = average_arrays([np.load(f) for f in files], f"{name}.npy")
        np.save(out / f"{name}.npy", mean)
        heads[name] = list(mean.shape)
    state = {"soup_of": [str(r) for r in runs], "weights": "uniform", "heads": heads,
             "batchnorm": "moving statistics averaged, not re-estimated", "history": []}
    (out / "state.json").write_text(json.dumps(state, indent=1))
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of `export faces train`")
    ap.add_argument("--out", type=Path, required=True, help="output run folder")
    args = ap.parse_args(argv)
    try:
        state = soup(args.runs, args.out)
    except SoupError as e:
        ap.exit(2, f"weight_soup: {e}\n")
    print(f"averaged {len(args.runs)} runs into {args.out}/model.keras; heads {state['heads']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
