"""Latency and style strength at one frame size, side by side in one run: our
released student (TFLite fp32/fp16/int8, ONNX fp32) against Magenta's
arbitrary-style TFLite pair and the Johnson fast-style network (udnie), at one
thread and at all threads.

Latency is the median wall time of ``model.run`` on a preprocessed frame
(pre/post-processing excluded, the same for every model).  Style strength is
J_style and J_content (SqueezeNet, the training costs) of each method's output
for the same content image, with the same style image.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .peers import JOHNSON_UDNIE, MAGENTA


def _median_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _johnson_tflite(path: Path) -> Path:
    """Convert the Johnson network (Keras rebuild of the TF.js weights) to TFLite fp32,
    with a fixed 384x384 input like Magenta's, for a like-for-like interpreter run."""
    import tensorflow as tf

    from .peers import johnson_from_tfjs

    model = johnson_from_tfjs(input_shape=(384, 384, 3))
    model(np.zeros((1, 384, 384, 3), np.float32))
    # the Keras route (SavedModel export) freezes the instance-norm weights correctly;
    # from_concrete_functions on this model gave a weightless, NaN-producing file
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def recorded_costs(paths):
    """``CostWeights`` with the loss network, layers and λ the stylizer files at ``paths``
    record (the defaults where they record none, which stdout says) and the default α,
    β, γ. Files that record different ones are a ValueError: one frame's outputs are
    compared on one scale."""
    from ..formats import read_contract
    from .optimize import CostWeights, layers_record, trained_layers

    found = {}
    for path in paths:
        info = read_contract(path)  # no runtime: the models are timed afterwards
        extra = info.extra if info is not None else {}
        network = extra.get("loss_network", CostWeights.network)
        layers = trained_layers(extra)
        if layers is None:
            print(f"{Path(path).name} records no loss-network layers: scored with the "
                  f"default {network} layers", flush=True)
        found[str(path)] = CostWeights(network=network, layers=layers)
    kinds = {(w.network, w.layer_choice) for w in found.values()}
    if len(kinds) > 1:
        raise ValueError("the stylizer files record different loss networks or layers: "
                         + "; ".join(f"{p}: {w.network} {layers_record(w.layer_choice)}"
                                     for p, w in found.items()))
    return next(iter(found.values()), CostWeights())


def bench(models: dict[str, Path], content: np.ndarray, style: np.ndarray, *, size: int = 384,
          threads: tuple[int, ...] = (1, os.cpu_count() or 1), runs: int = 10, warmup: int = 3,
          johnson: bool = True, extractor=None, optimizer_iterations: int = 0,
          costs=None) -> dict:
    """Measure; ``models`` maps a label to one of our stylizer files, ``content``
    and ``style`` are RGB uint8 (the content is resized to ``size`` x ``size``).

    Every output is scored with ``costs``; by default with the loss network, layers and
    λ our files record (:func:`recorded_costs`) and the optimiser's own α, β, γ.

    With ``optimizer_iterations`` > 0 the Gatys optimiser also stylises the frame
    (Adam from the content image, with those costs: α, β, γ default to the optimiser's
    own, β = 3e4, which at 384 px weighs the terms as β = 5e3 did on the
    students' 160-px crops, since J_content grows with the pixel count and J_style
    does not) and every output's costs get their ratio to the optimiser's: the
    student-vs-teacher gap measured next to the peers' on the same frame."""
    import cv2

    import sdk

    from .losses import grain
    from .lossnet import feature_extractor
    from .optimize import (CostModel, OptimizeOptions, check_side, layers_record, optimize,
                           style_image_for)

    # before any model runs: the costs of every output are measured at this size
    check_side(size, size, f"the frame (size={size}) and the style image")
    c = cv2.resize(content, (size, size), interpolation=cv2.INTER_AREA)
    x255 = c.astype(np.float32)[None]
    latency: list[dict] = []
    outputs: dict[str, np.ndarray] = {}

    def measure(label: str, path: Path, feeds, to_rgb255):
        for t in threads:
            with sdk.load_model(path, threads=t) as m:
                ms = _median_ms(lambda: m.run(feeds), runs, warmup)
                latency.append({"model": label, "threads": t, "ms": round(ms, 1),
                                "runtime": m.runtime, "bytes": Path(path).stat().st_size})
                if label not in outputs:
                    outputs[label] = to_rgb255(m.run(feeds)[0][0])

    for label, path in models.items():
        measure(label, path, [x255], lambda y: y)

    if (MAGENTA / "style_predict_quantized_256.tflite").is_file():
        s256 = cv2.resize(style, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)[None]
        with sdk.load_model(MAGENTA / "style_predict_quantized_256.tflite", threads=1) as pred:
            predict_ms = _median_ms(lambda: pred.run([s256 / 255.0]), runs, warmup)
            bottleneck = pred.run([s256 / 255.0])[0]
        latency.append({"model": "magenta predict (once per style, 256)", "threads": 1,
                        "ms": round(predict_ms, 1), "runtime": "", "bytes":
                        (MAGENTA / "style_predict_quantized_256.tflite").stat().st_size})
        for name in ("style_transfer_f16_384.tflite", "style_transfer_quantized_384.tflite"):
            if size != 384:
                break  # the transfer networks have a fixed 384x384 input
            measure(f"magenta {name.split('_')[2]}", MAGENTA / name, [x255 / 255.0, bottleneck],
                    lambda y: y * 255.0)

    if johnson and (JOHNSON_UDNIE / "manifest.json").is_file() and size == 384:
        with tempfile.TemporaryDirectory() as tmp:
            path = _johnson_tflite(Path(tmp) / "johnson_udnie_fp32.tflite")
            measure("johnson udnie fp32 (TF.js weights)", path, [x255], lambda y: y)

    weights = costs or recorded_costs(models.values())
    extractor = extractor or feature_extractor(weights.network, weights.layer_choice.names)
    optimizer_seconds = None
    if optimizer_iterations > 0:
        result = optimize(c, style, OptimizeOptions(iterations=optimizer_iterations,
                                                    max_side=size, costs=weights),
                          extractor=extractor, progress=False)
        outputs[f"optimizer ({optimizer_iterations} it.)"] = result.image.astype(np.float32)
        optimizer_seconds = round(result.seconds, 1)
    cost = CostModel(extractor, weights)
    cost.set_targets(x255, style_image_for(style, size, size).astype(np.float32)[None])
    strength = {}
    for label, y in outputs.items():
        y = np.clip(y, 0, 255).astype(np.float32)[None]
        parts = cost.costs(y)
        strength[label] = {"J_style": float(np.asarray(parts["J_style"])[0]),
                           "J_content": float(np.asarray(parts["J_content"])[0]),
                           # the fixed 2-px pattern (losses.grain); the photo's own is
                           # content_grain below
                           "grain": float(np.asarray(grain(y))[0])}
    reference = next((v for k, v in strength.items() if k.startswith("optimizer")), None)
    if reference is not None:
        for v in strength.values():
            v["J_style_vs_optimizer"] = v["J_style"] / reference["J_style"]
            v["J_content_vs_optimizer"] = v["J_content"] / reference["J_content"]
    images = {k: np.clip(np.rint(v), 0, 255).astype(np.uint8) for k, v in outputs.items()}
    return {"size": size, "threads": list(threads), "runs": runs, "latency": latency,
            "strength": strength, "content_grain": float(np.asarray(grain(x255))[0]),
            "optimizer_seconds": optimizer_seconds,
            "optimizer_costs": ({"alpha": weights.alpha, "beta": weights.beta,
                                 "gamma": weights.gamma} if optimizer_iterations > 0 else None),
            "loss_network": weights.network, "layers": layers_record(weights.layer_choice),
            "images": images}
