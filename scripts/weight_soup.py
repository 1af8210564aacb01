"""Average the weights of face-encoder training legs that share one start ("model soup").

Every float variable of each run's ``model.keras`` (BatchNorm moving statistics included,
not re-estimated), and the run's learnt ``classifier.npy`` (CosFace centres) and
``projection.npy`` (distillation map), are averaged with equal weights. The result is a run
folder that ``export faces release --model OUT/model.keras`` and ``train --init OUT`` take
like any other.

Only legs trained from the same weights make sense here: averaging unrelated networks gives
noise. The script checks that the networks are one architecture (variables and layer
settings), not that the legs share a start; ``state.json`` of the output records every
parent's state.

    python scripts/weight_soup.py runs/faces/run19 runs/faces/run20 --out runs/faces/soup1920
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class SoupError(ValueError):
    """The runs cannot be averaged (missing files, different architectures)."""


def average_arrays(arrays: list[np.ndarray], what: str) -> np.ndarray:
    """The mean of equally shaped float arrays, computed in float64, returned in the first
    array's dtype."""
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise SoupError(f"{what}: shapes differ across runs: {sorted(shapes)}")
    if not all(np.issubdtype(a.dtype, np.floating) for a in arrays):
        raise SoupError(f"{what}: not floating point, cannot be averaged")
    return np.mean(np.stack(arrays).astype(np.float64), axis=0).astype(arrays[0].dtype)


def _layer_configs(model) -> list[tuple[str, dict]]:
    """Each layer's class and configuration without its name: what must match for two
    networks to be one architecture (a Dropout rate, a BatchNorm epsilon, ...)."""
    found = []
    for layer in model.layers:
        config = dict(layer.get_config())
        config.pop("name", None)
        found.append((type(layer).__name__, config))
    return found


def _state_of(run: Path) -> dict | None:
    path = run / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def soup(runs: list[Path], out: Path) -> dict:
    """Write the averaged run folder ``out`` (replacing one there, whole); returns its
    ``state.json`` content.

    The new ``state.json`` records every parent's state under ``parents``; its ``init``
    is the last run's (``export faces report`` follows ``init`` for the training record,
    so give the run that continues the others last)."""
    if len(runs) < 2:
        raise SoupError("give two or more run folders")
    resolved = [r.resolve() for r in runs]
    if len(set(resolved)) != len(resolved):
        raise SoupError("a run is given twice")
    if out.resolve() in resolved:
        raise SoupError(f"--out {out} is one of the runs: it would be overwritten")
    for r in runs:
        if not (r / "model.keras").is_file():
            raise SoupError(f"{r}: no model.keras (a run folder of `export faces train`)")

    import keras   # TensorFlow only when the work starts

    import export.encoders  # noqa: F401  registers the encoder's own layers (L2Normalize)
    from export.faces.model import count_macs

    # everything is loaded and checked before anything is written
    models = [keras.models.load_model(r / "model.keras", compile=False) for r in runs]
    paths = [[v.path for v in m.weights] for m in models]
    if any(p != paths[0] for p in paths[1:]):
        raise SoupError("the runs' networks differ (variable names or order): not one architecture")
    configs = [_layer_configs(m) for m in models]
    if any(c != configs[0] for c in configs[1:]):
        raise SoupError("the runs' networks differ (layer settings): not one architecture")
    target = models[0]
    means = [average_arrays([np.asarray(m.weights[i]) for m in models], var.path)
             for i, var in enumerate(target.weights)]
    heads = {}
    for name in ("classifier", "projection"):
        files = [r / f"{name}.npy" for r in runs]
        present = [f.is_file() for f in files]
        if not any(present):
            continue
        if not all(present):
            raise SoupError(f"{name}.npy is in some runs and not in others")
        heads[name] = average_arrays([np.load(f) for f in files], f"{name}.npy")

    for var, mean in zip(target.weights, means):
        var.assign(mean)
    parents = [{"from": str(r), "state": _state_of(r)} for r in runs]
    last_config = (parents[-1]["state"] or {}).get("config") or {}
    state = {"epoch": 0, "step": 0, "elapsed": 0.0, "history": [],
             "params": int(target.count_params()), "macs": int(count_macs(target)),
             "config": {"out": str(out), "width": last_config.get("width"),
                        "distill_mode": last_config.get("distill_mode")},
             "soup_of": [str(r) for r in runs], "weights": "uniform",
             "batchnorm": "moving statistics averaged, not re-estimated",
             "heads": {k: list(v.shape) for k, v in heads.items()},
             "init": parents[-1], "parents": parents}

    # written whole into a sibling folder, then swapped in: no mix of old and new files
    tmp = out.with_name(out.name + ".tmp")
    old = out.with_name(out.name + ".old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    target.save(tmp / "model.keras")
    for name, mean in heads.items():
        np.save(tmp / f"{name}.npy", mean)
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)
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
    print(f"averaged {len(args.runs)} runs into {args.out}/model.keras "
          f"({state['params']} parameters); heads {state['heads']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
