"""``load_model``: open a model file in the runtime that fits its type.

Backends are chosen from a table (file suffix -> backend name -> module),
imported only when a model of that kind is opened.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .backends.base import Backend, BackendOptions
from .contract import ModelInfo, TensorSpec, check_seal
from .errors import (ClosedError, InputDtypeError, InputError, InputShapeError, MetadataError,
                     ModelFormatError, ModelKindError, ModelNotFoundError, UnknownBackendError)

#: backend name -> "module:Class"; the module is imported on first use only.
BACKENDS: dict[str, str] = {
    "onnxruntime": "sdk.backends.ort:OnnxRuntimeBackend",
    "tflite": "sdk.backends.tflite:TFLiteBackend",
    "tensorrt": "sdk.backends.tensorrt:TensorRTBackend",
}

#: file suffix -> backend name
SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".tflite": "tflite",
    ".engine": "tensorrt",
    ".trt": "tensorrt",
    ".plan": "tensorrt",
}


def _backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


class Model:
    """A loaded model: its contract (``info``), I/O specs, and ``run``.

    Use as a context manager, or call :meth:`close` (safe to call twice).
    Inputs are checked against the model's specs before they reach the
    runtime; a float32 array given for a quantised int8/uint8 input is
    quantised with the tensor's own scale/zero-point, and quantised outputs
    are returned dequantised to float32 (``dequantize=False`` keeps them raw).
    """

    def __init__(self, backend: Backend, path: Path, file_sha256: str | None = None) -> None:
        self._backend = backend
        self.path = path
        #: the file's seal, checked at load: the SHA-256 of the file with these 64 hex
        #: digits read as zeros (``sdk.contract.seal``; not what ``sha256sum`` prints);
        #: ``None`` for files without a seal (third-party models, exports from before seals)
        self.file_sha256 = file_sha256

    # --- description -------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """The SDK contract read from the file.

        Raises :class:`sdk.errors.MetadataError` for a model that has none
        (e.g. a third-party file opened with ``load_model``).
        """
        info = self._live().info
        if info is None:
            raise MetadataError(f"{self.path} carries no SDK contract; export it with "
                                "`python -m export` (third-party models run, but have no info)")
        return info

    def require_kind(self, *kinds: str, user: str, hint: str = "") -> ModelInfo:
        """The contract, checked to be of one of ``kinds``; ``user`` names the class that
        needs it (for the message).

        Raises:
            MetadataError: the file has no contract.
            ModelKindError: it is a model of another kind.
        """
        info = self.info
        if info.kind not in kinds:
            wanted = " or ".join(repr(k) for k in kinds)
            raise ModelKindError(f"{self.path} is a {info.kind!r} model; {user} needs a "
                                 f"{wanted}{f' ({hint})' if hint else ''}")
        return info

    @property
    def has_info(self) -> bool:
        """Whether the file carries the SDK's contract (files from ``export`` always do)."""
        return self._live().info is not None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Name, shape (``None`` for a dynamic dimension) and dtype of each input."""
        return self._live().inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Name, shape (``None`` for a dynamic dimension) and dtype of each output."""
        return self._live().outputs

    @property
    def backend(self) -> str:
        """Backend name: ``onnxruntime``, ``tflite`` or ``tensorrt``."""
        return self._live().name

    @property
    def runtime(self) -> str:
        """The runtime package and version that actually runs the model."""
        return self._live().runtime

    def _live(self) -> Backend:
        if self._backend is None:
            raise ClosedError(f"{self.path}: the model is closed; load it again")
        return self._backend

    def __repr__(self) -> str:
        if self._backend is None:
            return f"Model({str(self.path)!r}, closed)"
        kind = self._backend.info.kind if self._backend.info else "no contract"
        return f"Model({str(self.path)!r}, backend={self.backend!r}, {kind})"

    # --- running -----------------------------------------------------------

    def _prepare(self, spec: TensorSpec, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != len(spec.shape) or any(
                d is not None and d != g for d, g in zip(spec.shape, x.shape)):
            raise InputShapeError(f"input {spec.name!r}: expected shape {spec.describe()}, "
                                  f"got {x.dtype.name}{list(x.shape)}")
        if x.size == 0:  # runtimes fail on it each in their own way (XNNPack: a RuntimeError)
            raise InputShapeError(f"input {spec.name!r}: got an empty array "
                                  f"{x.dtype.name}{list(x.shape)}; nothing to run")
        if x.dtype == spec.dtype:
            return np.ascontiguousarray(x)
        if spec.quantization and spec.dtype in ("int8", "uint8") and x.dtype == np.float32:
            return quantize_input(spec, x)
        raise InputDtypeError(f"input {spec.name!r}: expected dtype {spec.dtype} "
                              f"({spec.describe()}), got {x.dtype.name}")

    def run(self, inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray], *,
            dequantize: bool = True) -> list[np.ndarray]:
        """Run the model; returns one array per output, in ``outputs`` order.

        ``inputs`` is one array (single-input models), a sequence in
        ``inputs`` order, or a mapping by input name.
        """
        specs = self._live().inputs
        if isinstance(inputs, Mapping):
            missing = [s.name for s in specs if s.name not in inputs]
            extra = sorted(set(inputs) - {s.name for s in specs})
            if missing or extra:
                raise InputError(f"inputs by name: missing {missing}, unexpected {extra}; "
                                 f"the model takes {[s.name for s in specs]}")
            arrays = [inputs[s.name] for s in specs]
        elif isinstance(inputs, np.ndarray):
            arrays = [inputs]
        else:
            arrays = list(inputs)
        if len(arrays) != len(specs):
            raise InputError(f"the model takes {len(specs)} input(s) "
                             f"{[s.describe() for s in specs]}, got {len(arrays)}")
        outputs = self._backend.run([self._prepare(s, x) for s, x in zip(specs, arrays)])
        if dequantize:
            outputs = [_dequantize(spec, y) for spec, y in zip(self._backend.outputs, outputs)]
        return outputs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Single-input, single-output shortcut: ``model(x) -> y``."""
        outputs = self.run(x)
        if len(outputs) != 1:
            raise InputError(f"model has {len(outputs)} outputs; use run()")
        return outputs[0]

    def close(self) -> None:
        """Release the runtime's resources; safe to call more than once."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quantize_input(spec: TensorSpec, x: np.ndarray) -> np.ndarray:
    """A float array quantised for an int8/uint8 tensor with the tensor's own scale and
    zero point (what :meth:`Model.run` does with a float input to a quantised tensor)."""
    scale, zero_point = spec.quantization
    info = np.iinfo(spec.dtype)
    q = np.round(np.asarray(x, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def _dequantize(spec: TensorSpec, y: np.ndarray) -> np.ndarray:
    if spec.quantization and y.dtype in (np.int8, np.uint8, np.int16):
        scale, zero_point = spec.quantization
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y


def load_model(path: str | Path, *, backend: str | None = None, threads: int | None = None,
               device: int = 0, tflite_runtime: str | None = None) -> Model:
    """Open a model file.

    Args:
        path: ``.onnx`` (ONNX Runtime), ``.tflite`` (LiteRT interpreter, or
            ``tflite_runtime`` where that is what is installed),
            ``.engine``/``.trt``/``.plan`` (TensorRT).
        backend: force a backend by name instead of by suffix.
        threads: CPU threads for the runtime (``None``: its default).
        device: GPU ordinal (TensorRT).
        tflite_runtime: force one TFLite interpreter package
            (``"ai_edge_litert"``, ``"tflite_runtime"``, or ``"tensorflow"``: ``tf.lite``,
            never chosen unless named).

    A file sealed at export (every file ``python -m export`` writes) is checked against
    its own SHA-256 before the runtime parses it (``Model.file_sha256``).

    Raises:
        ModelNotFoundError, ModelFormatError (also: a sealed file that has changed since
        export), MetadataError, BackendUnavailableError, UnknownBackendError,
        EngineMismatchError.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"model file not found: {p}")
    name = backend
    if name is None:
        name = SUFFIXES.get(p.suffix.lower())
        if name is None:
            raise ModelFormatError(f"{p}: unknown model file type {p.suffix!r}; expected one of "
                                   f"{sorted(SUFFIXES)} (or pass backend=)")
    cls = _backend_class(name)
    options = BackendOptions(threads=threads, device=device, runtime=tflite_runtime)
    # before the runtime parses it: a damaged flatbuffer can crash an interpreter natively,
    # and damaged weights run without a word
    digest = check_seal(p.read_bytes(), source=str(p))
    return Model(cls.load(p, options), p, digest)
