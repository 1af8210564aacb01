"""ONNX Runtime backend (``.onnx``), CPU execution provider by default."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..contract import METADATA_KEY, ModelInfo, TensorSpec
from ..errors import BackendUnavailableError, InferenceError, ModelFormatError
from .base import BackendOptions

# ONNX Runtime reports element types as strings like "tensor(float)".
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def _spec(arg, contract: dict[str, TensorSpec]) -> TensorSpec:
    if arg.type not in _ORT_TYPES:
        raise ModelFormatError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    dtype = _ORT_TYPES[arg.type]
    # an ONNX graph input/output carries no scale: an integer tensor's comes from the
    # contract (as TFLite files carry theirs), so Model quantises/dequantises it
    known = contract.get(arg.name)
    quant = known.quantization if known is not None and known.dtype == dtype \
        and dtype in ("int8", "uint8", "int16") else None
    return TensorSpec(arg.name, shape, dtype, quant)


class OnnxRuntimeBackend:
    """Runs an ONNX model in an ``onnxruntime.InferenceSession``."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self, session, inputs, outputs, info, runtime) -> None:
        self._session = session
        self.inputs = inputs
        self.outputs = outputs
        self.info = info
        self.runtime = runtime
        self._output_names = [o.name for o in outputs]

    @classmethod
    def load(cls, path: Path, options: BackendOptions) -> "OnnxRuntimeBackend":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "ONNX Runtime is not installed: pip install onnxruntime") from exc
        so = ort.SessionOptions()
        if options.threads is not None:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        # ONNX Runtime's worker threads otherwise spin after each run, waiting for the
        # next: in a pipeline they take a core from the detector (YuNet's detect time
        # nearly doubled at 2 threads) and keep it busy while the app waits for a frame
        # (1.1 CPU-seconds per second here), heat and battery a device cannot spare.  The
        # model alone waits longer for its threads: the face encoder at 2 threads 0.71 ->
        # 1.02 ms (scripts/ort_spin_probe.py); one thread has no workers to spin.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            # the float nodes of a QDQ file (quantize_onnx_int8(float_stem=True)) run in
            # float, as its contract says: ONNX Runtime's WeightBiasQuantization pass
            # (1.32 here) would quantise their weights itself, per tensor over the full int8
            # range, which saturates x86 CPUs without VNNI (export.formats.ONNX_WEIGHTS).
            # It changes nothing in fully quantised or float files; older versions
            # without the pass ignore the name.
            session = ort.InferenceSession(str(path), sess_options=so,
                                           providers=["CPUExecutionProvider"],
                                           disabled_optimizers=["WeightBiasQuantization"])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelFormatError(f"{path}: ONNX Runtime cannot load this file: "
                                   f"{str(exc).splitlines()[0][:300]}") from None
        meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        info = ModelInfo.from_json(meta, source=str(path)) if meta else None
        contract = {t.name: t for t in (info.inputs + info.outputs)} if info else {}
        inputs = tuple(_spec(a, contract) for a in session.get_inputs())
        outputs = tuple(_spec(a, contract) for a in session.get_outputs())
        return cls(session, inputs, outputs, info, f"onnxruntime {ort.__version__}")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        feed = {spec.name: x for spec, x in zip(self.inputs, inputs)}
        try:
            return list(self._session.run(self._output_names, feed))
        except Exception as exc:  # ORT's own InvalidArgument/RuntimeException/... types
            raise InferenceError(f"ONNX Runtime failed to run the model: "
                                 f"{str(exc).splitlines()[0][:300]}") from None

    def close(self) -> None:
        self._session = None
