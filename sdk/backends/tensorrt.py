"""TensorRT backend (``.engine`` / ``.trt`` / ``.plan``) for Jetson and other NVIDIA GPUs.

Written against the TensorRT 10 Python API (named I/O tensors,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and pycuda
(pinned host buffers, device buffers, one stream).  Nothing CUDA happens at
import: the CUDA context is the device's primary context, retained once for the
process (:func:`primary_context`) and pushed around each call, so nothing stays
current between calls.

Engine files carry the SDK contract in a header (``sdk.contract.pack_engine``)
that also records the GPU and TensorRT version they were built with, so an
engine from another device is refused with :class:`EngineMismatchError`
before TensorRT tries to deserialise it.
"""

from __future__ import annotations

import platform
import threading
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..contract import ModelInfo, TensorSpec, unpack_engine
from ..errors import (BackendUnavailableError, ClosedError, EngineMismatchError,
                      InferenceError, InputShapeError, ModelFormatError)
from .base import BackendOptions

_SHARED_LOCK = threading.Lock()
#: id(tensorrt module) -> (the module, its one Logger): see trt_logger
_LOGGERS: dict[int, tuple[object, object]] = {}
#: (id(pycuda.driver), device ordinal) -> (the module, the retained primary context)
_PRIMARY: dict[tuple[int, int], tuple[object, object]] = {}


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


def trt_logger(trt):
    """The process's one ``trt.Logger`` (WARNING), shared by every runtime and builder.

    TensorRT's ``ILogger`` docs: "the logger is internally considered a singleton, and
    thus multiple instances of IRuntime and/or IBuilder must all use the same logger"
    (7.x, 8.0), and it "should be valid until all objects created are released" (8.2
    on).  One logger kept for the life of the process meets both; one per object does
    not.
    """
    with _SHARED_LOCK:
        entry = _LOGGERS.get(id(trt))
        if entry is None:
            # the module is kept in the entry, so its id is never reused for another
            entry = _LOGGERS[id(trt)] = (trt, trt.Logger(trt.Logger.WARNING))
        return entry[1]


def primary_context(cuda, device: int):
    """The primary CUDA context of GPU ``device``, retained once for the process.

    Callers push it around their CUDA work and pop it afterwards; it is never
    detached.  pycuda's ``Context.detach`` on a retained primary context that is not
    current pushes it (``cuCtxPushCurrent``) and calls ``cuDevicePrimaryCtxRelease``,
    which, unlike the ``cuCtxDetach`` of an ordinary context, does not pop it (pycuda
    src/cpp/cuda.hpp: ``context::detach``, ``primary_context::detach_internal``), so a
    pop-then-detach per model left the context current on the driver's stack behind
    pycuda's back.  Retaining once and never releasing is what ``pycuda.autoprimaryctx``
    does too; the driver releases it when the process exits.  pycuda's context stack is
    per thread and ``push`` checks no thread, so any thread may push it.
    """
    key = (id(cuda), device)
    with _SHARED_LOCK:
        entry = _PRIMARY.get(key)
        if entry is None:
            entry = _PRIMARY[key] = (cuda, cuda.Device(device).retain_primary_context())
        return entry[1]


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
    if (built.get("compute_capability")
            and built["compute_capability"] != gpu["compute_capability"]):
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


#: (min, opt, max) shapes of one input in the engine's optimisation profile
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def batch_chunks(n: int, lo: int, hi: int) -> list[int] | None:
    """Batch sizes within ``lo..hi`` that add up to ``n``, or None when there are none.

    Full ``hi`` chunks, then the rest; a rest below ``lo`` is evened out with the
    last full chunk (``hi + rest - lo`` and ``lo``).  None for ``n < lo`` and for the
    few sizes no split fits (5 in batches of 3..4).
    """
    if n < lo:
        return None
    if n <= hi:
        return [n]
    full, rest = divmod(n, hi)
    sizes = [hi] * full
    if rest >= lo:
        sizes.append(rest)
    elif rest:
        if hi + rest - lo < lo:
            return None
        sizes[-1] = hi + rest - lo
        sizes.append(lo)
    return sizes


def _batch_range(io: Sequence[tuple[str, tuple[int, ...], bool]],
                 profiles: dict[str, Profile]) -> tuple[int, int] | None:
    """(min, max) batch the engine's profile allows when a call may be split into
    batches: axis 0 is dynamic in every input and every output (so outputs concatenate
    along it); None otherwise."""
    if not any(is_input for _, _, is_input in io):
        return None
    if not all(shape and shape[0] < 0 for _, shape, _ in io):
        return None
    lo = max(profiles[name][0][0] for name, _, is_input in io if is_input)
    hi = min(profiles[name][2][0] for name, _, is_input in io if is_input)
    return (lo, hi) if lo <= hi else None


def _reported_shape(shape: tuple[int, ...], profile: Profile | None,
                    chunked: bool) -> tuple[int | None, ...]:
    """The shape an input is reported with: the engine's dims (-1 where dynamic, whatever
    the profile allows: ICudaEngine.get_tensor_shape), with an axis the profile fixes
    (min == max) reported as that size, except a batch axis that run() splits."""
    out: list[int | None] = []
    for axis, d in enumerate(shape):
        if d >= 0:
            out.append(d)
        elif (axis == 0 and chunked) or profile is None or profile[0][axis] != profile[2][axis]:
            out.append(None)
        else:
            out.append(profile[0][axis])
    return tuple(out)


def _range_error(name: str, axis: int, got: int, lo: int, hi: int) -> InputShapeError:
    remedy = ("run batches in that range or rebuild the engine with a wider --batch"
              if axis == 0 else "resize the input into that range or rebuild the engine "
              "with a wider --frame-sizes / --shape")
    return InputShapeError(f"input {name!r}: axis {axis} is {got}, outside the engine's "
                           f"optimisation profile ({lo}..{hi}, what it was built for); "
                           + remedy)


class _Binding:
    """A pinned host buffer and a device buffer of ``capacity`` elements for one I/O
    tensor.  A smaller shape uses their first elements, so batches and chunks of varying
    size neither re-allocate nor re-bind; a larger one gets a new binding."""

    def __init__(self, cuda, dtype: np.dtype, capacity: int) -> None:
        self.capacity = capacity
        self.host = cuda.pagelocked_empty(capacity, dtype)
        self.device = cuda.mem_alloc(max(self.host.nbytes, 1))

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The host buffer's first elements shaped ``shape`` (contiguous, still pinned)."""
        return self.host[:int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        self.device.free()
        self.host = None


class TensorRTBackend:
    """Runs a serialized TensorRT engine with explicit host/device buffers.

    Shapes: an input axis the engine leaves dynamic is reported as fixed when the
    engine's optimisation profile fixes it (min == max), except the batch axis (axis 0
    dynamic in every input and output): a batch above the profile's max is run in
    chunks and the outputs concatenated, so the SDK's batched calls work on an engine
    built for batch 1.  Any other size outside the profile is an
    :class:`InputShapeError` naming the range.

    One call runs at a time: the execution context, the stream and the pinned buffers
    are shared by every call, and ``execute_async_v3`` and the stream's synchronisation
    release the GIL.
    """

    name: ClassVar[str] = "tensorrt"

    def __init__(self, trt, cuda, ctx, engine, context, inputs, outputs, info, runtime,
                 profiles: dict[str, Profile] | None = None,
                 batch: tuple[int, int] | None = None) -> None:
        self._trt, self._cuda, self._ctx = trt, cuda, ctx
        self._engine, self._context = engine, context
        self.inputs, self.outputs, self.info, self.runtime = inputs, outputs, info, runtime
        #: input name -> (min, opt, max) of the dynamic inputs (profile 0)
        self.profiles: dict[str, Profile] = dict(profiles or {})
        #: (min, max) batch of one execution when run() may split a call; else None
        self.batch_range = batch
        self._stream = None
        self._bindings: dict[str, _Binding] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, options: BackendOptions) -> "TensorRTBackend":
        """Deserialise the engine at ``path`` (an SDK header, then the plan) on GPU
        ``options.device``.

        Raises:
            ModelFormatError, MetadataError: not an SDK engine file, or a plan or I/O
                this runner cannot use.
            EngineMismatchError: built for another TensorRT, GPU or platform.
            BackendUnavailableError: no TensorRT, pycuda or GPU here.
            InferenceError: TensorRT could not create an execution context.
        """
        data = path.read_bytes()
        info, body = unpack_engine(data, source=str(path))  # format errors before any CUDA work
        trt, cuda = _import_runtime()
        if options.device >= cuda.Device.count():
            raise BackendUnavailableError(f"GPU {options.device} requested, "
                                          f"{cuda.Device.count()} present")
        gpu = gpu_identity(cuda, options.device)
        check_engine_target(info, trt.__version__, gpu, str(path))
        ctx = primary_context(cuda, options.device)
        ctx.push()
        runtime = engine = context = backend = None
        try:
            # the engine keeps the runtime alive (keep_alive in pyCore.cpp)
            runtime = trt.Runtime(trt_logger(trt))
            engine = runtime.deserialize_cuda_engine(bytes(body))
            if engine is None:
                raise _deserialise_error(info, trt.__version__, gpu, path)
            # returns None on failure (e.g. no device memory for its activations)
            context = engine.create_execution_context()
            if context is None:
                raise InferenceError(f"{path}: TensorRT could not create an execution context "
                                     "(out of GPU memory? see the TensorRT log above)")
            io, dtypes = [], {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                # shape-tensor I/O lives in host memory (ICudaEngine.get_tensor_location);
                # run() binds device buffers only, which TensorRT would misread
                if engine.get_tensor_location(name) == trt.TensorLocation.HOST:
                    raise ModelFormatError(f"{path}: I/O tensor {name!r} is a host-side shape "
                                           "tensor, which this runner does not support")
                dtypes[name] = numpy_dtype(trt, engine.get_tensor_dtype(name), name)
                io.append((name, tuple(int(d) for d in engine.get_tensor_shape(name)),
                           engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
            # get_tensor_shape gives -1 for a dynamic axis whatever the build's range;
            # get_tensor_profile_shape(name, 0) gives [min, opt, max] of profile 0, the
            # one a new execution context uses ("used by the ICudaEngine whenever no
            # optimization profile has been selected explicitly": IOptimizationProfile)
            profiles = {name: tuple(tuple(int(d) for d in s)
                                    for s in engine.get_tensor_profile_shape(name, 0))
                        for name, shape, is_input in io if is_input and -1 in shape}
            batch = _batch_range(io, profiles)
            inputs = tuple(TensorSpec(name, _reported_shape(shape, profiles.get(name),
                                                            batch is not None), dtypes[name])
                           for name, shape, is_input in io if is_input)
            outputs = tuple(TensorSpec(name, shape, dtypes[name])
                            for name, shape, is_input in io if not is_input)
            backend = cls(trt, cuda, ctx, engine, context, inputs, outputs, info,
                          f"tensorrt {trt.__version__}", profiles=profiles, batch=batch)
            backend._stream = cuda.Stream()
        except BaseException:
            # destroy what TensorRT made while its CUDA context is current: left to the
            # traceback, the execution context and engine (device memory of this
            # context) would be destroyed whenever the exception is dropped, under
            # whatever context is current then; context before engine before runtime
            backend = context = engine = runtime = None
            ctx.pop()
            raise
        # the context is pushed again around each run; nothing stays current between calls
        ctx.pop()
        return backend

    def _bind(self, spec: TensorSpec, shape: tuple[int, ...]) -> tuple[np.ndarray, object]:
        """(pinned host array of ``shape``, device buffer) for one I/O tensor, growing its
        binding (and giving TensorRT the new address) when ``shape`` does not fit."""
        n = int(np.prod(shape))
        b = self._bindings.get(spec.name)
        if b is None or b.capacity < n:
            if b is not None:
                del self._bindings[spec.name]
                b.free()
            b = _Binding(self._cuda, np.dtype(spec.dtype), n)
            # False when TensorRT refuses the address (IExecutionContext.setTensorAddress
            # returns whether it was set); the context would keep the address freed above
            # and execute on it.  Not kept: the next call allocates and binds again.
            if not self._context.set_tensor_address(spec.name, int(b.device)):
                b.free()
                raise InferenceError(f"TensorRT refused the device buffer of {spec.name!r} "
                                     "(set_tensor_address returned False; see the TensorRT "
                                     "log above)")
            self._bindings[spec.name] = b
        return b.view(shape), b.device

    def _plan(self, inputs: Sequence[np.ndarray]) -> list[int] | None:
        """Check the inputs against the engine's profile; the batch sizes to run them in
        when the batch is outside the profile's range (None: one execution)."""
        split = None
        if self.batch_range is not None and all(x.ndim for x in inputs):
            sizes = {x.shape[0] for x in inputs}
            lo, hi = self.batch_range
            if len(sizes) == 1 and not lo <= next(iter(sizes)) <= hi:
                split = next(iter(sizes))
        for spec, x in zip(self.inputs, inputs):
            profile = self.profiles.get(spec.name)
            if profile is None:
                continue
            lo_shape, _, hi_shape = profile
            if x.ndim != len(lo_shape):
                raise InputShapeError(f"input {spec.name!r}: expected {len(lo_shape)} "
                                      f"dimensions ({spec.describe()}), got {list(x.shape)}")
            for axis, (d, lo, hi) in enumerate(zip(x.shape, lo_shape, hi_shape)):
                if not (axis == 0 and split is not None) and not lo <= d <= hi:
                    raise _range_error(spec.name, axis, d, lo, hi)
        if split is None:
            return None
        chunks = batch_chunks(split, *self.batch_range)
        if chunks is None:
            lo, hi = self.batch_range
            raise InputShapeError(f"a batch of {split}: the engine runs batches of {lo}..{hi} "
                                  "(its optimisation profile) and this one cannot be split "
                                  "into such batches; rebuild it with a wider --batch")
        return chunks

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the engine on ``inputs`` (in ``self.inputs`` order); one array per output.

        Raises:
            ClosedError: after :meth:`close`.
            InputShapeError: a size outside the engine's optimisation profile.
            InferenceError: TensorRT or CUDA failed.
        """
        with self._lock:
            if self._context is None:
                raise ClosedError("the engine is closed")
            inputs = [np.asarray(x) for x in inputs]
            chunks = self._plan(inputs)
            if chunks is None:
                return self._execute(inputs)
            parts, start = [], 0
            for n in chunks:
                parts.append(self._execute([x[start:start + n] for x in inputs]))
                start += n
            return [np.concatenate(p, axis=0) for p in zip(*parts)]

    def _execute(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One execution (the caller holds the lock)."""
        cuda, ctx, stream = self._cuda, self._context, self._stream
        self._ctx.push()
        try:
            try:
                for spec, x in zip(self.inputs, inputs):
                    if not ctx.set_input_shape(spec.name, x.shape):
                        raise InputShapeError(f"input {spec.name!r}: shape {x.shape} is outside "
                                              "the engine's optimisation profile")
                    host, device = self._bind(spec, tuple(x.shape))
                    np.copyto(host, x)
                    cuda.memcpy_htod_async(device, host, stream)
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
                    results.append(self._bind(spec, shape))
                if not ctx.execute_async_v3(stream.handle):
                    raise InferenceError("TensorRT execute_async_v3 failed (check the engine and "
                                         "the input shapes)")
                for host, device in results:
                    cuda.memcpy_dtoh_async(host, device, stream)
                stream.synchronize()
            except BaseException:
                self._drain()
                raise
            return [np.array(host) for host, _ in results]
        except cuda.Error as exc:
            # pycuda raises its own errors (a failed launch or copy surfaces at
            # synchronize); the SDK's callers catch SdkError types
            raise InferenceError(f"CUDA failed while running the engine: "
                                 f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._ctx.pop()

    def _drain(self) -> None:
        """Wait for what is already queued on the stream: its copies read and write the
        pinned host buffers, which the next call reuses and close() frees."""
        try:
            self._stream.synchronize()
        except self._cuda.Error:
            pass  # the error being raised already says what went wrong

    def close(self) -> None:
        """Free the buffers and drop the engine; safe to call twice.  Waits for a run in
        progress.  The primary context stays retained (see :func:`primary_context`)."""
        with self._lock:
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
