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

import platform
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


def gpu_identity(cuda, device: int) -> dict:
    """What an engine is tied to: GPU name, compute capability, number of streaming
    multiprocessors, the board (Jetsons) and the platform.

    TensorRT tunes an engine's kernels for the device model it was built on; several
    devices share a name and a compute capability (every Orin module reports "Orin" and
    sm_8.7, but an AGX Orin has 16 SMs and an Orin Nano 8), so the SM count and, on a
    Jetson, the board's device-tree model tell them apart.  The platform (OS and CPU
    architecture) is part of it because TensorRT's support matrix says "Serialized
    engines are not portable across platforms" (an x86 H100 and an aarch64 GH200 share
    sm_9.0).
    """
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}",
            "sm_count": int(dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)),
            "board": board_model(), "platform": host_platform()}


def board_model() -> str | None:
    """The device-tree model of an embedded board (``NVIDIA Jetson AGX Orin Developer
    Kit``), or None on a PC or server."""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(p).read_text(errors="replace").strip("\x00\n ") or None
        except OSError:
            continue
    return None


def host_platform() -> str:
    """``Linux-aarch64`` style: the OS and CPU architecture an engine runs on."""
    return f"{platform.system()}-{platform.machine()}"


#: TensorRT data types numpy has no dtype for (trt.nptype raises TypeError for them;
#: its source says "fp8 and bfloat16 have no equivalent numpy type").
_NO_NUMPY_DTYPE = ("BF16", "FP8", "INT4", "FP4", "E8M0")


def numpy_dtype(trt, dtype, tensor: str) -> str:
    """numpy dtype name of a TensorRT I/O ``DataType``, or a typed error.

    ``trt.nptype`` (tensorrt/__init__.py) maps float32/float16/int8/int32/bool/uint8
    (and int64 in recent 10.x) and raises a bare ``TypeError`` for anything else,
    e.g. a BF16 or FP8 network input; INT64 I/O exists since TensorRT 10.0 but older
    10.x ``nptype`` tables lack it, hence the fallback by name.
    """
    name = getattr(dtype, "name", str(dtype))
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:
        if name == "INT64":
            return "int64"
        why = ("numpy has no such dtype" if name in _NO_NUMPY_DTYPE
               else "not a type this runner knows")
        raise ModelFormatError(
            f"tensor {tensor!r} is TensorRT {name} ({why}); the SDK feeds and reads engine "
            "I/O as numpy arrays, so export the ONNX graph with float32/float16 inputs and "
            "outputs (cast inside the graph) and rebuild") from None


def check_engine_target(info: ModelInfo, trt_version: str, gpu: dict[str, str],
                        source: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU.

    TensorRT only guarantees an engine on the exact TensorRT version, the same
    device model and the same platform it was built with (support matrix,
    "Engine Portability"; this builder sets neither VERSION_COMPATIBLE nor a
    hardware-compatibility level): the compute capability, the GPU's name, its
    SM count and the board must all match.  Headers from older builds lack some
    of these: those checks are then skipped.
    """
    built = info.extra.get("tensorrt", {})
    problems = []
    if built.get("version") and built["version"] != trt_version:
        problems.append(f"TensorRT {built['version']} (this device has {trt_version})")
    if built.get("compute_capability") and built["compute_capability"] != gpu["compute_capability"]:
        problems.append(f"GPU {built.get('gpu', '?')} sm_{built['compute_capability']} "
                        f"(this device has {gpu['gpu']} sm_{gpu['compute_capability']})")
    elif built.get("gpu") and gpu.get("gpu") and built["gpu"] != gpu["gpu"]:
        # same architecture, another device model: its kernels were tuned for another GPU
        problems.append(f"GPU {built['gpu']} (this device has {gpu['gpu']})")
    if built.get("sm_count") and gpu.get("sm_count") and built["sm_count"] != gpu["sm_count"]:
        problems.append(f"a GPU with {built['sm_count']} streaming multiprocessors (this "
                        f"device has {gpu['sm_count']})")
    if built.get("board") and gpu.get("board") and built["board"] != gpu["board"]:
        problems.append(f"board {built['board']!r} (this device is {gpu['board']!r})")
    if built.get("platform") and gpu.get("platform") and built["platform"] != gpu["platform"]:
        problems.append(f"platform {built['platform']} (this device is {gpu['platform']})")
    if problems:
        raise EngineMismatchError(
            f"{source} was built for " + " and ".join(problems)
            + f". Engines are not portable: {_rebuild(info)} (or `make export-jetson`).")


def _rebuild(info: ModelInfo) -> str:
    """The remedy for an engine this device cannot run."""
    return ("rebuild it on this device with `python -m export jetson --onnx <model.onnx> "
            f"--precision {info.precision}`")


def _deserialise_error(info: ModelInfo, trt_version: str, gpu: dict[str, str],
                       path: Path) -> Exception:
    """Why ``deserialize_cuda_engine`` returned None, as a typed error.

    The header was checked before: when it names this TensorRT, GPU architecture
    and platform, the plan itself is at fault (damaged, or needs a plugin), not
    the target, so saying "another TensorRT or GPU" would mislead.
    """
    rebuild = _rebuild(info)
    built = info.extra.get("tensorrt", {})
    if built.get("version") and built.get("compute_capability"):
        return ModelFormatError(
            f"{path}: TensorRT {trt_version} could not deserialise the engine although its "
            f"header says it was built for this TensorRT and sm_{gpu['compute_capability']} "
            f"(the plan is damaged or needs a plugin; see the TensorRT log above); {rebuild}")
    return EngineMismatchError(
        f"{path}: TensorRT {trt_version} could not deserialise the engine and its header "
        "does not say what it was built for (another TensorRT version or GPU?); " + rebuild)


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
        gpu = gpu_identity(cuda, options.device)
        check_engine_target(info, trt.__version__, gpu, str(path))
        ctx = cuda.Device(options.device).retain_primary_context()
        ctx.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)  # the engine keeps it alive (keep_alive in pyCore.cpp)
            engine = runtime.deserialize_cuda_engine(bytes(body))
            if engine is None:
                raise _deserialise_error(info, trt.__version__, gpu, path)
            # returns None on failure (e.g. no device memory for its activations)
            context = engine.create_execution_context()
            if context is None:
                raise InferenceError(f"{path}: TensorRT could not create an execution context "
                                     "(out of GPU memory? see the TensorRT log above)")
            inputs, outputs = [], []
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                # shape-tensor I/O lives in host memory (ICudaEngine.get_tensor_location);
                # run() binds device buffers only, which TensorRT would misread
                if engine.get_tensor_location(name) == trt.TensorLocation.HOST:
                    raise ModelFormatError(f"{path}: I/O tensor {name!r} is a host-side shape "
                                           "tensor, which this runner does not support")
                spec = TensorSpec(name, tuple(engine.get_tensor_shape(name)),
                                  numpy_dtype(trt, engine.get_tensor_dtype(name), name))
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
                # valid only now that every input shape is set; a -1 left in an output
                # means a data-dependent shape (NvInferRuntime.h, getTensorShape), which
                # needs an IOutputAllocator this runner does not implement
                shape = tuple(ctx.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise InferenceError(f"output {spec.name!r} has a data-dependent shape "
                                         f"{list(shape)}; this runner needs output shapes "
                                         "that follow from the input shapes")
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
