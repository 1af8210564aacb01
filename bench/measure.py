"""Measuring one model file: load, first inference, steady-state latency, memory.

Timing is wall-clock ``time.perf_counter`` around ``Model.run`` (batch 1, the
way a device runs), after warm-up runs that are not counted.  Peak memory is
the process's resident-set high-water mark: Linux's ``VmHWM`` is reset
(``/proc/self/clear_refs`` = 5) before the model is loaded and read after its
last run, so it covers the runtime's native allocations, which ``tracemalloc``
cannot see.  Where that reset is impossible the figure is reported as absent,
never estimated.  GPU memory of TensorRT engines is not in that figure: on a
discrete GPU it is device memory, and on a Jetson, where the GPU shares the RAM, the
driver's allocations are not mapped into the process's pages either (not measured
here; read them with ``tegrastats`` on the device).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import sdk
from sdk.contract import Preprocessing, TensorSpec
from sdk.errors import SdkError
from sdk.model import quantize_input

MODEL_SUFFIXES = (".tflite", ".onnx", ".engine", ".trt", ".plan")


# --- statistics ------------------------------------------------------------------


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """median, p90, p99, mean, min, max (ms) and n of a list of timings."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarise")
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


# --- memory ------------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter for this process; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak resident memory above the level at entry (MiB), or ``None`` if unmeasurable."""

    def __enter__(self) -> "PeakRss":
        self.ok = reset_peak_rss()
        self.start_kb = _status_kb("VmRSS")
        self.delta_mb: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kb("VmHWM")
        if self.ok and peak is not None and self.start_kb is not None:
            self.delta_mb = max(0, peak - self.start_kb) / 1024.0


# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMeta:
    """What the benchmark needs to know about a model: kind, precision, pre-processing.

    Taken from the SDK contract where the file has one; from the peer table
    (``bench.peers``) for third-party files; otherwise ``kind="unknown"``.
    """

    kind: str
    precision: str
    preprocessing: Preprocessing | None
    source: str  # "contract", "peer table", "file name"


def _is_image(spec: TensorSpec, layout: str) -> bool:
    if len(spec.shape) != 4:
        return False
    channels = spec.shape[3] if layout == "NHWC" else spec.shape[1]
    return channels in (1, 3)


def concrete_shape(spec: TensorSpec, layout: str, frame: tuple[int, int]) -> tuple[int, ...]:
    """Fill dynamic dims: batch 1, image height/width from ``frame``; others are an error."""
    shape = list(spec.shape)
    spatial = (1, 2) if layout == "NHWC" else (2, 3)
    for i, d in enumerate(shape):
        if d is not None:
            continue
        if i == 0:
            shape[i] = 1
        elif len(shape) == 4 and i in spatial:
            shape[i] = frame[spatial.index(i)]
        else:
            raise SdkError(f"input {spec.describe()}: dynamic axis {i} has no size to benchmark")
    return tuple(int(d) for d in shape)


def image_size(specs: Sequence[TensorSpec], meta: ModelMeta,
               frame: tuple[int, int]) -> list[int] | None:
    """[H, W] of the first image input as benchmarked (dynamic sizes from ``frame``), or
    ``None`` for a model without one; reported so that rows run at different sizes
    are seen to differ."""
    layout = (meta.preprocessing or Preprocessing()).layout
    for spec in specs:
        if _is_image(spec, layout):
            shape = concrete_shape(spec, layout, frame)
            return list(shape[1:3] if layout == "NHWC" else shape[2:4])
    return None


def preprocess(image_bgr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Contract pre-processing of a BGR uint8 image already at the model's size:
    ``(pixels - mean) / std`` with pixels in ``pre.pixel_range``, channels in
    ``pre.channel_order``, layout ``pre.layout``; returns a batch of 1."""
    return pre.apply(np.asarray(image_bgr)[None])


def make_inputs(specs: Sequence[TensorSpec], meta: ModelMeta, photo: np.ndarray | None,
                frame: tuple[int, int], seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """One array per model input.

    Image inputs come from ``photo`` (BGR uint8, resized to the input's size)
    pre-processed as the model expects; without a photo or known
    pre-processing they are seeded uniform noise over 0..255.  Other inputs
    (e.g. a style bottleneck vector) are seeded standard-normal.  Every array is
    in its input's own dtype, quantised with the input's scale / zero-point where
    it has them, so that ``Model.run`` converts nothing inside the timings.
    Returns the arrays and, per input, how it was made (recorded in the report).
    """
    import cv2

    rng = np.random.default_rng(seed)
    pre = meta.preprocessing or Preprocessing()
    arrays, how = [], []
    for spec in specs:
        shape = concrete_shape(spec, pre.layout, frame)
        if _is_image(spec, pre.layout):
            h, w = (shape[1], shape[2]) if pre.layout == "NHWC" else (shape[2], shape[3])
            if photo is not None and meta.preprocessing is not None:
                img = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
                x = preprocess(img, pre)
                made = "photo"
            else:
                x = rng.uniform(0, 255, size=shape).astype(np.float32)
                made = "noise 0..255"
        else:
            x = rng.standard_normal(shape).astype(np.float32)
            made = "normal noise"
        if spec.dtype in ("uint8", "int8"):
            if spec.quantization:
                # done here, once, as Model.run would do it on every call: a float input
                # to a quantised tensor would time this conversion along with the model
                x = quantize_input(spec, x)
            else:
                info = np.iinfo(spec.dtype)
                x = np.clip(np.round(x), info.min, info.max).astype(spec.dtype)
        else:
            x = x.astype(spec.dtype)
        arrays.append(x.reshape(shape))
        how.append(made)
    return arrays, how


# --- one model ------------------------------------------------------------------------


@dataclass
class Case:
    """One measurement to make: a model file with a backend and a thread count."""

    path: Path
    role: str                     # "released", "given" or "peer"
    threads: int | None
    meta: ModelMeta | None = None
    photo: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def measure(case: Case, *, runs: int, warmup: int, frame: tuple[int, int],
            meta_of: Callable[[Path, object], ModelMeta]) -> dict:
    """Load ``case.path``, time the first inference, then ``warmup`` + ``runs`` inferences.

    Returns a result dict (see ``bench.report`` for the schema).  Errors
    loading or running the model propagate as ``SdkError`` for the caller to
    record as skipped.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    path = case.path
    with PeakRss() as mem:
        t0 = time.perf_counter()
        model = sdk.load_model(path, threads=case.threads)
        load_ms = _ms(t0)
        try:
            meta = meta_of(path, model)
            inputs, made = make_inputs(model.inputs, meta, case.photo, frame)
            size = image_size(model.inputs, meta, frame)
            t0 = time.perf_counter()
            outputs = model.run(inputs)
            first_ms = _ms(t0)
            if not all(np.all(np.isfinite(np.asarray(o, dtype=np.float64))) for o in outputs):
                raise SdkError(f"{path}: non-finite outputs on the benchmark input")
            for _ in range(warmup):
                model.run(inputs)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model.run(inputs)
                times.append(_ms(t0))
            backend, runtime = model.backend, model.runtime
        finally:
            model.close()
    lat = summarize(times)
    return {
        "name": path.stem, "path": str(path), "role": case.role, "kind": meta.kind,
        "backend": backend, "runtime": runtime, "precision": meta.precision,
        "precision_source": meta.source,
        "threads": case.threads, "file_mb": path.stat().st_size / 1e6,
        "input_shapes": [list(x.shape) for x in inputs], "input_made_from": made,
        "image_size": size,
        "load_ms": load_ms, "first_ms": first_ms, "latency_ms": lat,
        "throughput_per_s": 1000.0 / lat["mean"],
        "peak_rss_delta_mb": mem.delta_mb,
        **case.extra,
    }


def finite_positive(value) -> bool:
    """True for a real number > 0 (used by the report's sanity check)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
