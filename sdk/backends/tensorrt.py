"""TensorRT backend (``.engine`` / ``.trt`` / ``.plan``) for Jetson and other NVIDIA GPUs.

Written against the TensorRT 10 Python API (named I/O tensors,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and pycuda
(pinned host buffers, device buffers, one stream).  Nothing CUDA happens at
import: the CUDA context is the device's primary context, retained in
:meth:`TensorRTBackend.load` and released in :meth:`close`.

Engine files carry the SDK contract in a header (``sdk.contract.pack_engine``)
that also records the GPU and TensorRT version they were built with, so an
engine from another device is refused with :class:`EngineMismatchError`
before TensorRT tries to deserialise it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..contract import ModelInfo, TensorSpec, unpack_engine
from ..errors import (BackendUnavailableError, ClosedError, EngineMismatchError,
                      InferenceError, InputShapeError, ModelFormatError)
from .base import BackendOptions


def _import_runtime():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed: engines run on a Jetson/NVIDIA GPU with the tensorrt "
            "Python package (JetPack ships it); on this machine use the .onnx or .tflite "
            "model instead") from exc
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailableError(
            "pycuda is not installed: pip install 'edge-sdk[jetson]' on the device") from exc
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise BackendUnavailableError("TensorRT is installed but no CUDA GPU is visible")
    except cuda.Error as exc:
        raise BackendUnavailableError(f"CUDA is not usable here: {exc}") from exc
    return trt, cuda


def gpu_identity(cuda, device: int) -> dict[str, str]:
    """What an engine is tied to: GPU name and compute capability."""
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}"}


def check_engine_target(info: ModelInfo, trt_version: str, gpu: dict[str, str],
                        source: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU.

    TensorRT only guarantees an engine on the exact TensorRT version and the
    same compute capability it was built with.
    """
    built = info.extra.get("tensorrt", {})
    problems = []
    if built.get("version") and built["version"] != trt_version:
        problems.append(f"TensorRT {built['version']} (this device has {trt_version})")
    if built.get("compute_capability") and built["compute_capability"] != gpu["compute_capability"]:
        problems.append(f"GPU {built.get('gpu', '?')} sm_{built['compute_capability']} "
                        f"(this device has {gpu['gpu']} sm_{gpu['compute_capability']})")
    if problems:
        raise EngineMismatchError(
            f"{source} was built for " + " and ".join(problems)
            + ". Engines are not portable: rebuild it on this device with "
            "`python -m export jetson --onnx <model.onnx> --precision "
            f"{info.precision}` (or `make export-jetson`).")


class _Binding:
    """A pinned host buffer and a device buffer for one I/O tensor."""

    def __init__(self, cuda, spec: TensorSpec, shape: tuple[int, ...]) -> None:
        self.shape = shape
        n = int(np.prod(shape))
        self.host = cuda.pagelocked_empty(n, np.dtype(spec.dtype))
        self.device = cuda.mem_alloc(max(self.host.nbytes, 1))

    def free(self) -> None:
        self.device.free()
        self.host = None


class TensorRTBackend:
    """Runs a serialized TensorRT engine with explicit host/device buffers."""

    name: ClassVar[str] = "tensorrt"

    def __init__(self, trt, cuda, ctx, engine, context, inputs, outputs, info, runtime) -> None:
        self._trt, self._cuda, self._ctx = trt, cuda, ctx
        self._engine, self._context = engine, context
        self.inputs, self.outputs, self.info, self.runtime = inputs, outputs, info, runtime
        self._stream = None
        self._bindings: dict[str, _Binding] = {}

    @classmethod
    def load(cls, path: Path, options: BackendOptions) -> "TensorRTBackend":
        data = path.read_bytes()
        info, body = unpack_engine(data, source=str(path))  # format errors before any CUDA work
        trt, cuda = _import_runtime()
        if options.device >= cuda.Device.count():
            raise BackendUnavailableError(f"GPU {options.device} requested, "
                                          f"{cuda.Device.count()} present")
        check_engine_target(info, trt.__version__, gpu_identity(cuda, options.device), str(path))
        ctx = cuda.Device(options.device).retain_primary_context()
        ctx.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(bytes(body))
            if engine is None:
                raise EngineMismatchError(
                    f"{path}: TensorRT {trt.__version__} could not deserialise the engine "
                    "(built with another TensorRT version or for another GPU?); rebuild it on "
                    "this device with `python -m export jetson`")
            context = engine.create_execution_context()
            inputs, outputs = [], []
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                spec = TensorSpec(name, tuple(engine.get_tensor_shape(name)),
                                  np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (inputs if is_input else outputs).append(spec)
            backend = cls(trt, cuda, ctx, engine, context, tuple(inputs), tuple(outputs),
                          info, f"tensorrt {trt.__version__}")
            backend._stream = cuda.Stream()
        except Exception:
            ctx.pop()
            ctx.detach()
            raise
        # the context is pushed again around each run; nothing stays current between calls
        ctx.pop()
        return backend

    def _binding(self, spec: TensorSpec, shape: tuple[int, ...]) -> _Binding:
        b = self._bindings.get(spec.name)
        if b is None or b.shape != shape:
            if b is not None:
                b.free()
            b = _Binding(self._cuda, spec, shape)
            self._bindings[spec.name] = b
            self._context.set_tensor_address(spec.name, int(b.device))
        return b

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._context is None:
            raise ClosedError("the engine is closed")
        cuda, ctx = self._cuda, self._context
        self._ctx.push()
        try:
            for spec, x in zip(self.inputs, inputs):
                if not ctx.set_input_shape(spec.name, x.shape):
                    raise InputShapeError(f"input {spec.name!r}: shape {x.shape} is outside the "
                                          "engine's optimisation profile")
                b = self._binding(spec, tuple(x.shape))
                np.copyto(b.host.reshape(x.shape), x)
                cuda.memcpy_htod_async(b.device, b.host, self._stream)
            results = []
            for spec in self.outputs:
                shape = tuple(ctx.get_tensor_shape(spec.name))
                results.append((self._binding(spec, shape), shape))
            if not ctx.execute_async_v3(self._stream.handle):
                raise InferenceError("TensorRT execute_async_v3 failed (check the engine and "
                                     "the input shapes)")
            for b, _ in results:
                cuda.memcpy_dtoh_async(b.host, b.device, self._stream)
            self._stream.synchronize()
            return [np.array(b.host.reshape(shape)) for b, shape in results]
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if self._context is None:
            return
        self._ctx.push()
        try:
            for b in self._bindings.values():
                b.free()
            self._bindings.clear()
            self._stream = None
            self._context = None
            self._engine = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
