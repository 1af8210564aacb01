"""The model contract: metadata every exported artifact carries inside itself.

``export/`` writes one JSON document into each model file it produces:

* ONNX: ``metadata_props`` under the key :data:`METADATA_KEY`;
* TFLite: a flatbuffer ``Metadata`` entry named :data:`METADATA_KEY`;
* TensorRT: a header before the serialized engine (:func:`pack_engine`).

The runtime reads it back (``model.info``) and takes pre- and post-processing
from it (input size, channel order, pixel range, normalisation, metric,
threshold), so those constants live in one place: the model file.

The contract also seals the file: its ``file_sha256`` is the SHA-256 of the
whole file with those 64 hex digits written as zeros (:func:`seal`).
``load_model`` checks it before any runtime parses the file (:func:`check_seal`),
so a file damaged in copying or on flash is refused with a
:class:`~sdk.errors.ModelFormatError` instead of running with other weights or
crashing the interpreter.  It detects damage, not tampering: anyone who can
write the file can write a matching digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MetadataError, ModelFormatError

#: Key of the contract in ONNX ``metadata_props`` and the TFLite metadata list.
METADATA_KEY = "edge_sdk.contract"
#: Contract schema this SDK writes and reads.
SCHEMA_VERSION = 1
#: Contract key of the file's own SHA-256 (see :func:`seal`); SDKs before it ignore it.
DIGEST_KEY = "file_sha256"
_DIGEST_FIELD = f'"{DIGEST_KEY}":"'.encode()
_PLACEHOLDER = b"0" * 64
# The value is matched loosely so that a damaged digest is reported, not taken as no seal;
# "inputs" always follows it in the sorted contract, which keeps a third-party file's own
# "file_sha256" field (other JSON) from being taken for the SDK's seal.
_DIGEST_RE = re.compile(re.escape(_DIGEST_FIELD) + rb'([^"]{0,80})","inputs":\[')
#: a file holds one live contract and perhaps a few left by earlier export steps
_MAX_SEALS = 8
_HEX64 = re.compile(rb"[0-9a-f]{64}")

#: Model kinds the SDK knows; anything else is still loadable as ``generic``.
KINDS = ("face_encoder", "stylizer", "encoder", "generic")
#: The one distance used from training to runtime (see ``sdk.distance``).
METRICS = ("squared_l2",)
PRECISIONS = ("fp32", "fp16", "int8")
#: luma weights of a BGR pixel (ITU-R BT.601, as ``cv2.COLOR_BGR2GRAY``)
LUMA_BGR = np.array([0.114, 0.587, 0.299], np.float32)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and (for quantised tensors) scale/zero-point of a tensor.

    ``None`` in ``shape`` marks a dynamic dimension.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quantization: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(None if d is None or d < 0 else int(d)
                                                for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        if self.quantization is not None:
            scale, zero_point = self.quantization
            object.__setattr__(self, "quantization", (float(scale), int(zero_point)))

    def describe(self) -> str:
        """``float32[1,112,112,3]`` style text for messages."""
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": [d for d in self.shape],
                             "dtype": self.dtype}
        if self.quantization is not None:
            d["quantization"] = list(self.quantization)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        q = d.get("quantization")
        return cls(name=str(d["name"]), shape=tuple(d["shape"]), dtype=str(d["dtype"]),
                   quantization=tuple(q) if q else None)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model input.

    ``model_input = (pixels - mean) / std`` where ``pixels`` are in
    ``pixel_range`` and in ``channel_order``; ``layout`` is the input layout.
    """

    channel_order: str = "RGB"
    pixel_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NHWC"

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR", "GRAY", "NONE"):
            raise ValueError(f"channel_order must be RGB, BGR, GRAY or NONE, got {self.channel_order!r}")
        for name in ("pixel_range", "mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")

    def apply(self, images_bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 images ``(N, H, W, 3)`` (as OpenCV gives them, already at the model's
        size) -> float32 model inputs: channels reordered (GRAY: ITU-R 601 luma, as
        ``cv2.COLOR_BGR2GRAY``), pixels mapped from 0..255 to ``pixel_range``, then
        ``(x - mean) / std``, then ``layout``.  The one implementation of the contract's
        pre-processing: the SDK's task classes, calibration and benchmarks all call it.
        """
        x = np.asarray(images_bgr).astype(np.float32)
        if self.channel_order == "RGB":
            x = x[..., ::-1]
        elif self.channel_order == "GRAY":
            x = (x @ LUMA_BGR)[..., None]
        lo, hi = self.pixel_range
        x = x * np.float32((hi - lo) / 255.0) + np.float32(lo)
        c = x.shape[-1]
        x = (x - np.asarray(self.mean, np.float32)[:c]) / np.asarray(self.std, np.float32)[:c]
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class ModelInfo:
    """The contract carried inside a model file (``model.info``).

    ``output`` holds the kind-specific meaning of the output: for a face
    encoder ``embedding_size``, ``metric`` (always ``squared_l2``),
    ``threshold`` (the calibrated τ, best accuracy) and optionally
    ``operating_points`` (named τ values, e.g. ``far_1e-4``: the largest τ
    whose false-accept rate on the calibration pairs stayed at or under 1e-4);
    for a stylizer ``style`` and ``output_range``.
    """

    kind: str
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    output: Mapping[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    quantization: Mapping[str, Any] = field(default_factory=dict)
    source_hash: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("output", "quantization", "versions", "extra"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a mapping, got "
                                f"{type(getattr(self, name)).__name__}")
        for name in ("name", "source_hash"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.extra.get("tensorrt", {}), Mapping):
            raise TypeError(f"extra.tensorrt must be a mapping, got "
                            f"{type(self.extra['tensorrt']).__name__}")
        metric = self.output.get("metric")
        if metric is not None and metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if not all(isinstance(t, TensorSpec) for t in self.inputs + self.outputs):
            raise TypeError("inputs and outputs must be TensorSpecs")
        self._check_thresholds(metric)

    def _check_thresholds(self, metric: str | None) -> None:
        """τ and the operating points must be numbers, and squared L2 distances between
        unit vectors lie in [0, 4]: a τ of 4 or more would accept everyone."""
        points = self.output.get("operating_points") or {}
        if not isinstance(points, Mapping):
            raise TypeError(f"operating_points must be a mapping, got {type(points).__name__}")
        taus = dict(points)
        if self.output.get("threshold") is not None:
            taus["threshold"] = self.output["threshold"]
        for name, tau in taus.items():
            if isinstance(tau, bool) or not isinstance(tau, (int, float)):
                raise TypeError(f"{name} must be a number, got {tau!r}")
            if metric == "squared_l2" and not 0.0 < float(tau) < 4.0:
                raise ValueError(f"{name} {tau!r} is not a squared L2 distance between unit "
                                 "vectors that can refuse anyone (0 < τ < 4)")

    # convenience accessors used by the task classes
    @property
    def threshold(self) -> float | None:
        """The calibrated verification threshold τ, if the model has one."""
        t = self.output.get("threshold")
        return None if t is None else float(t)

    @property
    def operating_points(self) -> dict[str, float]:
        """Named thresholds calibrated for this file (``{}`` when it has none)."""
        points = self.output.get("operating_points") or {}
        return {str(k): float(v) for k, v in points.items()}

    @property
    def model_id(self) -> str:
        """Identity of the trained weights: name + source hash (precision-independent,
        so a gallery enrolled with the fp32 model works with its int8 export only
        if you say so explicitly; see ``Gallery``)."""
        return f"{self.name}@{self.source_hash[:16]}"

    def replace(self, **changes: Any) -> "ModelInfo":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # --- serialisation ---------------------------------------------------

    def to_json(self, *, sealed: bool = False) -> str:
        """The contract as compact JSON with sorted keys.  ``sealed`` adds the
        ``file_sha256`` placeholder that :func:`seal` fills once the file is complete."""
        d = {
            "schema": self.schema,
            "kind": self.kind,
            "name": self.name,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "output": dict(self.output),
            "precision": self.precision,
            "quantization": dict(self.quantization),
            "source_hash": self.source_hash,
            "versions": dict(self.versions),
            "extra": dict(self.extra),
        }
        if sealed:
            d[DIGEST_KEY] = _PLACEHOLDER.decode()
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "model") -> "ModelInfo":
        try:
            d = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetadataError(f"{source}: the SDK contract is not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise MetadataError(f"{source}: the SDK contract is not a JSON object")
        schema = d.get("schema")
        if schema != SCHEMA_VERSION:
            raise MetadataError(
                f"{source}: contract schema {schema!r} is not supported by this SDK "
                f"(reads schema {SCHEMA_VERSION}); upgrade the SDK or re-export the model")
        try:
            pre = d.get("preprocessing", {})
            if not isinstance(pre, dict) or not all(
                    isinstance(t, dict) for t in list(d["inputs"]) + list(d["outputs"])):
                raise TypeError("preprocessing, inputs and outputs must hold JSON objects")
            return cls(
                kind=d["kind"], name=d["name"],
                inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                preprocessing=Preprocessing(**pre),
                output=d.get("output", {}), precision=d.get("precision", "fp32"),
                quantization=d.get("quantization", {}), source_hash=d.get("source_hash", ""),
                versions=d.get("versions", {}), extra=d.get("extra", {}), schema=schema,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MetadataError(f"{source}: the SDK contract is malformed ({exc!r})") from None


def hash_arrays(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over a sequence of arrays (shape, dtype and bytes): the source-model hash."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# --- the file's own digest ----------------------------------------------------


def _digest_without(data: bytes | memoryview, start: int) -> str:
    """SHA-256 of ``data`` with the 64 bytes at ``start`` read as ASCII zeros."""
    view = memoryview(data)
    h = hashlib.sha256(view[:start])
    h.update(_PLACEHOLDER)
    h.update(view[start + 64:])
    return h.hexdigest()


def seal(data: bytes) -> bytes:
    """Fill the ``file_sha256`` placeholder of a complete model file (one written with a
    contract from ``to_json(sealed=True)``) with the SHA-256 of the file as it is, the
    placeholder's zeros included.

    Raises:
        ValueError: the file holds no placeholder, or more than one.
    """
    needle = _DIGEST_FIELD + _PLACEHOLDER + b'"'
    at = data.find(needle)
    if at < 0 or data.find(needle, at + 1) >= 0:
        raise ValueError("a model file to seal must hold exactly one file_sha256 placeholder "
                         f"(found {data.count(needle)}): write its contract with "
                         "to_json(sealed=True)")
    start = at + len(_DIGEST_FIELD)
    return bytes(data[:start]) + hashlib.sha256(data).hexdigest().encode() + \
        bytes(data[start + 64:])


def check_seal(data: bytes | memoryview, *, source: str = "model") -> str | None:
    """The digest of a sealed file, checked; ``None`` for a file without a seal
    (third-party models, exports from before seals).

    A file may hold older contracts (a TFLite buffer left behind by an earlier export
    step): it is intact when one of its digests matches.

    Raises:
        ModelFormatError: the file was sealed and has changed since.
    """
    found = list(_DIGEST_RE.finditer(data))
    if not found:
        return None
    for m in found[:_MAX_SEALS]:
        digest = m.group(1)
        if _HEX64.fullmatch(digest) and _digest_without(data, m.start(1)) == digest.decode():
            return digest.decode()
    raise ModelFormatError(
        f"{source}: the file is damaged or was changed after export: its SHA-256 is not "
        "the one sealed into it (a partial copy, a flipped bit in storage, or a tool such as "
        "a quantiser or graph optimiser that kept the exported file's contract, which no "
        "longer describes it); copy it again from its source, or make such files with "
        "`python -m export`")


# --- TensorRT: header before the serialized engine --------------------------

ENGINE_MAGIC = b"EDGESDK1"
_HEADER = struct.Struct("<8sI")


def pack_engine(info: ModelInfo, engine_bytes: bytes) -> bytes:
    """Prefix a serialized TensorRT engine with the contract header.

    Layout: 8-byte magic, little-endian uint32 JSON length, JSON, engine bytes; sealed
    (:func:`seal`) like every exported file.
    """
    payload = info.to_json(sealed=True).encode("utf-8")
    return seal(_HEADER.pack(ENGINE_MAGIC, len(payload)) + payload + bytes(engine_bytes))


def unpack_engine(data: bytes, *, source: str = "engine") -> tuple[ModelInfo, memoryview]:
    """Split an engine file into its contract and the serialized engine."""
    if len(data) < _HEADER.size or data[:8] != ENGINE_MAGIC:
        raise MetadataError(
            f"{source}: no SDK header; this is not an engine written by `python -m export jetson` "
            "(a bare TensorRT plan carries no contract; rebuild it with the export tool)")
    _, n = _HEADER.unpack_from(data, 0)
    end = _HEADER.size + n
    if end > len(data):
        raise ModelFormatError(f"{source}: truncated header ({n} bytes announced, "
                               f"{len(data) - _HEADER.size} present)")
    info = ModelInfo.from_json(bytes(data[_HEADER.size:end]), source=source)
    body = memoryview(data)[end:]
    if len(body) == 0:
        raise ModelFormatError(f"{source}: header present but the engine body is empty")
    return info, body
