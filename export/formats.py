"""Convert Keras models to TFLite (fp32, fp16, full int8) and ONNX (fp32, int8 QDQ),
embed the SDK contract in each file, and check each file against its source.

Every writer returns the path it wrote; every artifact is verified by running it
through the same ``sdk.load_model`` the device uses.
"""

from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

import sdk
from sdk.contract import (METADATA_KEY, ModelInfo, TensorSpec, check_seal, hash_arrays, seal,
                          unpack_engine)
from sdk.paths import write_atomic


class ConversionError(RuntimeError):
    """A converted model is unusable: float ops left in a full-int8 model, or
    outputs that drift from the source beyond the allowed tolerance."""


def versions() -> dict[str, str]:
    """Versions of the tools that made an artifact (recorded in its contract)."""
    out = {"edge_sdk": sdk.__version__}
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return out


def source_hash(model) -> str:
    """SHA-256 of a Keras model's weights: identifies the trained model in every export."""
    return hash_arrays([np.asarray(w) for w in model.get_weights()])


# --- metadata ---------------------------------------------------------------


def embed_tflite_metadata(tflite_bytes: bytes, info: ModelInfo) -> bytes:
    """Return the flatbuffer with the contract added as ``Model.metadata[METADATA_KEY]``
    (replacing an earlier one, whose buffer is emptied), sealed (``sdk.contract.seal``)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite_bytes, 0))
    kept = []
    for m in model.metadata or []:
        if (m.name.decode() if isinstance(m.name, bytes) else m.name) == METADATA_KEY:
            # emptied, not removed: other entries refer to buffers by index
            model.buffers[m.buffer].data = None
        else:
            kept.append(m)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(info.to_json(sealed=True).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(tflite_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return seal(bytes(builder.Output()))


def set_onnx_metadata(path: Path, info: ModelInfo | None) -> None:
    """Write the contract into the ONNX file's ``metadata_props`` and seal the file
    (``sdk.contract.seal``); ``None`` removes the contract instead (a tool's copy of
    another file's, whose seal no longer matches).  The file is replaced atomically."""
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props if p.key != METADATA_KEY}
    if info is not None:
        props[METADATA_KEY] = info.to_json(sealed=True)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    write_atomic(path, data if info is None else seal(data))


def _onnx_contract(data: bytes, source: str) -> str | bytes | None:
    import onnx

    proto = onnx.load_model_from_string(data)
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


def _tflite_contract(data: bytes, source: str) -> str | bytes | None:
    from sdk.tflite_metadata import read_metadata

    return read_metadata(data, source=source).get(METADATA_KEY)


def _engine_contract(data: bytes, source: str) -> str:
    return unpack_engine(data, source=source)[0].to_json()


#: file suffix -> how the contract's JSON is read from the file's bytes (no runtime)
CONTRACT_READERS = {".tflite": _tflite_contract, ".onnx": _onnx_contract,
                    ".engine": _engine_contract, ".trt": _engine_contract,
                    ".plan": _engine_contract}


def read_contract(path: str | Path) -> ModelInfo | None:
    """The SDK contract of a model file, read without any runtime (a file a runtime here
    cannot run is still described); ``None`` for a file without one.

    Raises:
        ModelFormatError: a sealed file that has changed since export, or a type of file
            no reader knows.
        MetadataError: a malformed contract.
    """
    path = Path(path)
    reader = CONTRACT_READERS.get(path.suffix.lower())
    if reader is None:
        raise sdk.errors.ModelFormatError(f"{path}: unknown model file type {path.suffix!r}")
    data = path.read_bytes()
    check_seal(data, source=str(path))
    text = reader(data, str(path))
    return None if text is None else ModelInfo.from_json(text, source=str(path))


def drop_onnx_contract(path: Path) -> None:
    """Remove the contract from an ONNX file (a tool's copy of its source's, whose seal
    no longer matches)."""
    set_onnx_metadata(path, None)


def _specs_of(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    with sdk.load_model(path) as m:
        return m.inputs, m.outputs


def _finish(path: Path, info: ModelInfo, precision: str, quantization: dict | None = None) -> ModelInfo:
    inputs, outputs = _specs_of(path)
    return info.replace(precision=precision, inputs=inputs, outputs=outputs,
                        quantization=quantization or {}, versions=versions())


# --- TFLite -------------------------------------------------------------------

#: ops that legitimately take/give float at the edges of a full-int8 model
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


def float_ops(tflite_bytes: bytes) -> list[str]:
    """Ops of a TFLite model that compute in float (boundary (de)quantise ops excluded)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite_bytes)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():  # only API that lists ops with their tensors
        if op["op_name"] in _BOUNDARY_OPS:
            continue
        idx = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(dtypes.get(i) in (np.dtype(np.float32), np.dtype(np.float16)) for i in idx):
            found.append(op["op_name"])
    return found


def to_tflite(model, path: str | Path, info: ModelInfo, *, precision: str = "fp32",
              calibration: Iterable[np.ndarray] | None = None, int8_io: bool = False) -> Path:
    """Convert a Keras model to ``.tflite`` with the contract embedded.

    Args:
        precision: ``fp32``; ``fp16`` (float16 weights); ``int8`` (full integer:
            weights and activations, calibrated on ``calibration``).
        calibration: for int8, real inputs (each one batch of 1, float32, as the
            model takes them), at least 16.
        int8_io: for int8, make the input/output tensors int8 too (microcontrollers);
            otherwise they stay float32 with quantise/dequantise at the edges.

    Raises:
        ConversionError: an int8 model would keep float ops.
    """
    import tensorflow as tf

    path = Path(path)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        # any iterable of inputs, an array of them included (whose truth value is undefined)
        samples = [np.asarray(x, dtype=np.float32)
                   for x in (calibration if calibration is not None else [])]
        if len(samples) < 16:
            raise ValueError(f"int8 needs at least 16 real calibration inputs, got {len(samples)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    data = converter.convert()
    if precision == "int8":
        left = float_ops(data)
        if left:
            raise ConversionError(f"full-int8 conversion left float ops: {sorted(set(left))}; "
                                  "rewrite those layers (see docs/EXPORT.md)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    quant = {"scheme": "full_int8", "calibration_samples": len(samples)} if precision == "int8" else {}
    final = _finish(path, info, precision, quant)
    path.write_bytes(embed_tflite_metadata(data, final))
    return path


# --- ONNX ---------------------------------------------------------------------


def to_onnx(model, path: str | Path, info: ModelInfo, *, opset: int = 15,
            input_name: str = "input") -> Path:
    """Convert a Keras model to ONNX (tf2onnx) with the contract in ``metadata_props``.

    Dynamic batch; other dimensions as the Keras input declares them.
    """
    import tensorflow as tf
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype, name=input_name)
    fn = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset,
                                  output_path=str(path))
    set_onnx_metadata(path, _finish(path, info, "fp32"))
    return path


class _Reader:
    """onnxruntime CalibrationDataReader over a list of arrays."""

    def __init__(self, name: str, samples: Sequence[np.ndarray]) -> None:
        self._it = iter([{name: np.asarray(s, dtype=np.float32)} for s in samples])

    def get_next(self):
        return next(self._it, None)


def _stem_convs(model) -> list[str]:
    """Names of the Conv nodes that read the graph input, directly or through layout and
    elementwise pre-processing ops (the normalisation inside the model, a transpose)."""
    feeds = {model.graph.input[0].name}
    names = []
    for node in model.graph.node:  # topological order
        if not feeds.intersection(node.input):
            continue
        if node.op_type == "Conv":
            names.append(node.name)
        elif node.op_type in ("Transpose", "Reshape", "Identity", "Cast",
                              "Mul", "Add", "Sub", "Div"):
            feeds.update(node.output)
    return names


#: ``quantize_onnx_int8`` weight encodings.  "uint8" and "int8-7bit" exist because x86
#: CPUs without VNNI (AVX2, AVX-512 before VNNI) multiply uint8 activations by int8
#: weights with VPMADDUBSW, whose int16 pair sums saturate: measured on this AVX2 CPU,
#: full int8 weights cost the face encoder a fifth of its true accepts at FAR 1e-4 and
#: the stylizers 8-13 dB of PSNR (scripts/onnx_int8_probe.py, scripts/style_int8_probe.py);
#: uint8 weights (U8U8) and 7-bit int8 weights cannot overflow it, and both agree with
#: the float model; U8U8 runs a slower kernel there (a quarter slower for the face
#: encoder), so 7-bit is the default.  ARM and VNNI CPUs never saturate: "int8" is exact
#: there.
ONNX_WEIGHTS = {"uint8": ("QUInt8", False), "int8-7bit": ("QInt8", True), "int8": ("QInt8", False)}


def quantize_onnx_int8(src: str | Path, dst: str | Path,
                       calibration: Sequence[np.ndarray], *, weights: str = "int8-7bit",
                       float_stem: bool = False) -> Path:
    """Static int8 QDQ quantisation of an ONNX model (per-channel weights, uint8
    activations, min/max calibrated on ``calibration``).

    ``weights``: "int8-7bit" (default: int8 with the top bit unused, as fast as "int8"
    and as accurate as the float model on every CPU), "uint8" (as accurate, slower on
    x86) or "int8" (full range; saturates on x86 CPUs without VNNI, see
    ``ONNX_WEIGHTS``).  ``float_stem`` keeps the convolution(s) reading the model input
    in float and lists them in the contract (session 7's workaround for that saturation).

    Raises:
        ValueError: an unknown ``weights`` or fewer than 16 calibration inputs.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if weights not in ONNX_WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {list(ONNX_WEIGHTS)}")
    weight_type, reduce_range = ONNX_WEIGHTS[weights]
    src, dst = Path(src), Path(dst)
    with sdk.load_model(src) as m:
        info, name = m.info, m.inputs[0].name
    if len(calibration) < 16:
        raise ValueError(f"int8 needs at least 16 real calibration inputs, got {len(calibration)}")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        float_nodes = _stem_convs(onnx.load(str(pre))) if float_stem else []
        quantize_static(str(pre), str(dst), _Reader(name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8,
                        weight_type=getattr(QuantType, weight_type), reduce_range=reduce_range,
                        nodes_to_exclude=float_nodes)
    drop_onnx_contract(dst)  # the quantiser copies the float file's contract and seal
    quant = {"scheme": "qdq", "weights": f"{weights} per-channel", "activations": "uint8",
             "calibration_samples": len(calibration)}
    if float_nodes:
        quant["float_nodes"] = float_nodes
    set_onnx_metadata(dst, _finish(dst, info, "int8", quant))
    return dst


# --- checking converted models against their source ---------------------------


@dataclass(frozen=True)
class Agreement:
    """How closely a converted model reproduces its source on the same inputs."""

    max_abs: float
    mean_abs: float
    psnr_db: float
    min_cosine: float

    def __str__(self) -> str:
        return (f"max|Δ|={self.max_abs:.3g} mean|Δ|={self.mean_abs:.3g} "
                f"PSNR={self.psnr_db:.1f} dB min cos={self.min_cosine:.5f}")


def agreement(reference: np.ndarray, got: np.ndarray, peak: float | None = None) -> Agreement:
    """Compare two output batches (first axis = batch)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(got, dtype=np.float64)
    if ref.shape != out.shape:
        raise ConversionError(f"output shape {out.shape} differs from the source's {ref.shape}")
    diff = np.abs(ref - out)
    mse = float(np.mean(diff ** 2))
    peak = float(peak if peak is not None else max(np.ptp(ref), 1e-12))
    psnr = float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
    r, o = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    cos = np.sum(r * o, 1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1),
                                        1e-12)
    return Agreement(float(diff.max()), float(diff.mean()), psnr, float(cos.min()))


def check_against(reference: Callable[[np.ndarray], np.ndarray], path: str | Path,
                  inputs: np.ndarray, *, check: Callable[[Agreement], bool],
                  requirement: str, peak: float | None = None) -> Agreement:
    """Run ``path`` through ``sdk.load_model`` on ``inputs`` (one at a time, as a
    device would) and compare with ``reference(inputs)``.

    Raises:
        ConversionError: when ``check`` fails; the message states ``requirement``.
    """
    ref = np.asarray(reference(inputs))
    with sdk.load_model(path) as m:
        got = np.concatenate([m(x[None]) for x in inputs])
    result = agreement(ref, got, peak)
    if not check(result):
        raise ConversionError(f"{path}: drifts from its source ({result}); "
                              f"required: {requirement}")
    return result
