"""TFLite backend (``.tflite``): LiteRT, or ``tflite_runtime`` where that is what a
device has; ``tf.lite`` only when asked for by name (the runtime never pulls in
TensorFlow on its own).

Which interpreter package ran the model is never hidden: it is in
``model.runtime``, and choosing anything but LiteRT logs a warning.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..contract import METADATA_KEY, ModelInfo, TensorSpec
from ..errors import BackendUnavailableError, InferenceError, InputShapeError, ModelFormatError
from ..tflite_metadata import read_metadata
from .base import BackendOptions

log = logging.getLogger(__name__)

# Preference order: LiteRT is current; tflite_runtime is what older devices
# (e.g. Jetson with Python <= 3.11, numpy < 2) have; tf.lite needs all of TensorFlow,
# so it is never chosen automatically (_AUTO), only by tflite_runtime="tensorflow".
_INTERPRETERS = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "ai_edge_litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite_runtime"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
_AUTO = ("ai_edge_litert", "tflite_runtime")


def _import_interpreter(runtime: str | None):
    """(Interpreter class, "package version") for the requested or best available runtime."""
    names = [runtime] if runtime else list(_AUTO)
    errors = []
    for name in names:
        if name not in _INTERPRETERS:
            raise BackendUnavailableError(
                f"unknown TFLite runtime {name!r}; choose one of {sorted(_INTERPRETERS)}")
        module_name, package = _INTERPRETERS[name]
        try:
            module = importlib.import_module(module_name)
            version = getattr(importlib.import_module(package), "__version__", "?")
        except Exception as exc:  # ImportError, or tflite_runtime's numpy-2 ABI failure
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not hasattr(module, "Interpreter"):  # TensorFlow >= 2.20 moved it to LiteRT
            errors.append(f"{name}: {module_name} has no Interpreter in {package} {version} "
                          "(newer TensorFlow leaves it to LiteRT: use ai_edge_litert)")
            continue
        if name != "ai_edge_litert" and runtime is None:
            log.warning("LiteRT (ai-edge-litert) is not installed; using %s %s", package, version)
        return module.Interpreter, f"{package} {version}"
    raise BackendUnavailableError(
        "no TFLite interpreter could be imported (pip install 'edge-sdk[tflite]'; "
        "tflite_runtime='tensorflow' uses a TensorFlow that still ships tf.lite.Interpreter, "
        "2.20 or older): "
        + "; ".join(errors))


def _spec(detail: dict) -> TensorSpec:
    # shape_signature keeps -1 for dynamic dims where shape shows the current size
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = (scale, zero_point) if scale else None
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, quant)


class TFLiteBackend:
    """Runs a ``.tflite`` model in a TFLite interpreter."""

    name: ClassVar[str] = "tflite"

    def __init__(self, interpreter, inputs, outputs, info, runtime) -> None:
        self._interp = interpreter
        self.inputs = inputs
        self.outputs = outputs
        self.info = info
        self.runtime = runtime
        self._in_idx = [d["index"] for d in interpreter.get_input_details()]
        self._out_idx = [d["index"] for d in interpreter.get_output_details()]
        self._shapes = [tuple(d["shape"]) for d in interpreter.get_input_details()]

    @classmethod
    def load(cls, path: Path, options: BackendOptions) -> "TFLiteBackend":
        data = path.read_bytes()
        meta = read_metadata(data, source=str(path)).get(METADATA_KEY)
        info = ModelInfo.from_json(meta, source=str(path)) if meta else None
        interpreter_cls, runtime = _import_interpreter(options.runtime)
        try:
            interp = interpreter_cls(model_content=data, num_threads=options.threads)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{path}: {runtime} cannot load this model: {exc}") from None
        inputs = tuple(_spec(d) for d in interp.get_input_details())
        outputs = tuple(_spec(d) for d in interp.get_output_details())
        return cls(interp, inputs, outputs, info, runtime)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        resized = False
        for i, (idx, x) in enumerate(zip(self._in_idx, inputs)):
            if x.shape != self._shapes[i]:
                # the shapes are recorded only once the tensors fit them: after a failure
                # the next call resizes and allocates again instead of invoking an unready
                # model
                if not resized:
                    self._shapes = [None] * len(self._shapes)
                try:
                    interp.resize_tensor_input(idx, x.shape, strict=True)
                except (ValueError, RuntimeError) as exc:
                    raise InputShapeError(f"input {self.inputs[i].name!r}: the model cannot "
                                          f"take shape {x.shape}: {exc}") from None
                resized = True
        if resized:
            try:
                interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise InputShapeError(f"the model cannot run on inputs of shapes "
                                      f"{[x.shape for x in inputs]}: {exc}") from None
            self._shapes = [x.shape for x in inputs]
        try:
            for idx, x in zip(self._in_idx, inputs):
                interp.set_tensor(idx, x)
            interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(f"{self.runtime} failed to run the model: {exc}") from None
        # copy: get_tensor returns a view into the interpreter's arena
        return [np.array(interp.get_tensor(idx)) for idx in self._out_idx]

    def close(self) -> None:
        self._interp = None
