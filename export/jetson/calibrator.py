"""INT8 calibration for TensorRT: real images -> model inputs -> an entropy calibrator.

Two halves, so the host without TensorRT can do the first:

* :func:`calibration_images` turns real photos into images at the model's
  input size exactly as the device sees them (faces detected and aligned with
  the same YuNet + 5-point alignment as the runtime; scenes centre-cropped and
  resized).  They are saved as one uint8 ``.npy`` in the device bundle, so the
  Jetson needs no photo folder, no detector and no OpenCV to calibrate;
  :func:`calibration_inputs` applies the contract's pre-processing there
  (channel order, pixel range, mean/std, layout).
* :func:`make_entropy_calibrator` wraps that array in TensorRT's
  ``IInt8EntropyCalibrator2``: pinned host staging, one device buffer
  (pycuda), and a calibration cache file that is written after the first
  calibration and read back on the next build (no recalibration).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from export import images as image_io
from sdk.contract import Preprocessing
from sdk.errors import EngineBuildError

#: Fewer real samples than this give unstable activation ranges.
MIN_SAMPLES = 16


def list_images(folder: str | Path, count: int) -> list[Path]:
    """``count`` image paths spread evenly over the sorted files under ``folder``."""
    try:
        return image_io.list_images(folder, count)
    except (FileNotFoundError, ValueError) as exc:
        raise EngineBuildError(f"calibration images: {exc}") from None


def preprocess_batch(images_bgr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """BGR uint8 images ``(N, H, W, 3)`` -> float32 model inputs ``(N, ...)`` per the
    contract: ``(pixels - mean) / std`` with pixels in ``pre.pixel_range``, channels in
    ``pre.channel_order``, ``pre.layout``.  numpy only, so the device needs no OpenCV."""
    x = np.asarray(images_bgr)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise EngineBuildError(f"calibration images must be uint8 (N, H, W, 3) BGR, got "
                               f"{x.dtype}{list(x.shape)}")
    return pre.apply(x)


def preprocess(image_bgr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """One BGR uint8 image -> one model input with a batch axis (see preprocess_batch)."""
    return preprocess_batch(np.asarray(image_bgr)[None], pre)


def spatial_size(shape: Sequence[int], layout: str) -> tuple[int, int]:
    """(height, width) of a 4-D image input shape in ``layout``."""
    if len(shape) != 4:
        raise EngineBuildError(f"calibration from images needs a 4-D image input, got shape "
                               f"{list(shape)}")
    return (int(shape[1]), int(shape[2])) if layout == "NHWC" else (int(shape[2]), int(shape[3]))


def calibration_images(images: Sequence[Path], size: tuple[int, int], *, kind: str,
                       yunet: str | Path | None = None) -> np.ndarray:
    """Real photos at the model's input size, as the device would see them.

    Face encoders get the largest face detected and aligned exactly as on the
    device (photos without a face are skipped); other image models get the
    photo centre-cropped to the aspect ratio and resized.  Returns BGR uint8
    ``(N, H, W, 3)``: 4x smaller than float inputs, and the device applies the
    contract's pre-processing itself (:func:`preprocess_batch`).

    Raises:
        EngineBuildError: fewer than :data:`MIN_SAMPLES` usable images.
    """
    height, width = size
    if kind == "face_encoder" and height != width:
        raise EngineBuildError(f"a face encoder input must be square, got {height}x{width}")
    samples = image_io.load_images(images, height, width, align_faces=kind == "face_encoder",
                                     yunet=yunet)
    if len(samples) < MIN_SAMPLES:
        raise EngineBuildError(f"only {len(samples)} of {len(images)} calibration images were "
                               f"usable (need at least {MIN_SAMPLES}); give more images "
                               "with --calib-images")
    return np.stack(samples).astype(np.uint8)


def calibration_inputs(images: np.ndarray, shape: Sequence[int], pre: Preprocessing) -> np.ndarray:
    """Calibration images -> float32 model inputs ``(N, *shape[1:])``, checked against
    the engine's calibration shape."""
    out = preprocess_batch(images, pre)
    expected = tuple(int(d) for d in shape[1:])
    if out.shape[1:] != expected:
        raise EngineBuildError(f"calibration samples have shape {out.shape[1:]}, the input "
                               f"needs {expected} (layout {pre.layout})")
    return out


def array_sha256(a: np.ndarray) -> str:
    h = hashlib.sha256(str((a.shape, a.dtype.str)).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class CalibrationData:
    """Calibration samples, given one batch of 1 at a time in the engine's calibration
    shape, and the cache file TensorRT's calibrator reads and writes.

    ``transform`` turns one stored sample into one model input (e.g. the
    contract's pre-processing of a uint8 image); it runs per batch, so a few
    hundred large frames never sit in memory as float32 at once (a Jetson
    shares its RAM with the GPU).  The cache is keyed by the caller (its file
    name carries the ONNX and data hashes), so a cache from other data or
    another graph is never reused.
    """

    def __init__(self, samples: np.ndarray, cache_path: str | Path,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        samples = np.asarray(samples)
        if samples.ndim < 2 or len(samples) == 0:
            raise EngineBuildError(f"calibration samples must be (N, ...) with N > 0, "
                                   f"got {samples.shape}")
        self.samples = samples
        self.cache_path = Path(cache_path)
        self._transform = transform or (lambda x: x)
        self._shape = self._one(0).shape
        self._next = 0

    def _one(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self._transform(self.samples[i]), dtype=np.float32)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one batch as the engine sees it: ``(1, *sample)``."""
        return (1, *self._shape)

    def __len__(self) -> int:
        return len(self.samples)

    def next_batch(self) -> np.ndarray | None:
        """The next ``(1, ...)`` float32 batch, or ``None`` when all were given."""
        if self._next >= len(self.samples):
            return None
        x = self._one(self._next)
        if x.shape != self._shape:
            raise EngineBuildError(f"calibration sample {self._next} has shape {x.shape}, "
                                   f"the others {self._shape}")
        self._next += 1
        return x[None]

    def batches(self) -> Iterator[np.ndarray]:
        while (b := self.next_batch()) is not None:
            yield b

    def read_cache(self) -> bytes | None:
        """The cache written by an earlier calibration, or ``None``."""
        if self.cache_path.is_file() and self.cache_path.stat().st_size > 0:
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, data: bytes) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(self.cache_path.suffix + ".tmp")
        tmp.write_bytes(bytes(data))
        tmp.replace(self.cache_path)  # atomic: a crash never leaves half a cache to reuse


def make_entropy_calibrator(trt, cuda, data: CalibrationData):
    """An ``IInt8EntropyCalibrator2`` over ``data`` (TensorRT 10 Python API, pycuda buffers).

    Batch size 1 with the calibration profile's shape equal to
    ``data.sample_shape``: explicit-batch networks take the batch from the
    profile, so one sample per call keeps the calibrator and profile consistent.
    Call ``free()`` (inside the CUDA context) when the build is done.

    The calibrator classes are "Deprecated in TensorRT 10.1. Superseded by explicit
    quantization" (Python API, Int8/EntropyCalibrator2) and removed in TensorRT 11;
    they still work on 10.x. TensorRT calls these methods on the thread that runs
    ``build_serialized_network``, where the builder has pushed the CUDA context the
    buffers below belong to.
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            # pybind11 trampoline: the base __init__ must be called explicitly
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = data
            self._host = cuda.pagelocked_empty(data.sample_shape, np.float32)
            self._device = cuda.mem_alloc(self._host.nbytes)
            self.batches_given = 0
            #: what went wrong inside get_batch (re-raised by the builder after the build)
            self.error: Exception | None = None

        def get_batch_size(self) -> int:
            # getBatchSize is deprecated since 10.0 (no implicit batch) but still abstract in
            # the binding; 1 matches the (1, ...) batches and the calibration profile
            return 1

        def get_batch(self, names):
            # get_batch(names: List[str]) -> List[int]: one device pointer (int) per name, in
            # the order of ``names``; [] or None ends calibration (IInt8Calibrator docs). The
            # trampoline (python/src/infer/pyInt8.cpp) memcpys len(names) pointers from the
            # list, and an exception raised here is only printed and read as "no more data",
            # so calibration would silently finish on the batches seen so far: keep the error
            # and end calibration; _build_serialized raises it after the build.
            try:
                if len(names) != 1:
                    raise EngineBuildError(f"the calibrator feeds one input, TensorRT asks for "
                                           f"{list(names)}")
                batch = self.data.next_batch()
                if batch is None:
                    return None  # no more data: TensorRT finishes calibration
                np.copyto(self._host, batch)
                cuda.memcpy_htod(self._device, self._host)
                self.batches_given += 1
                return [int(self._device)]
            except Exception as exc:  # noqa: BLE001 - handed back to the builder, see above
                self.error = exc
                return None

        def read_calibration_cache(self):
            # bytes, or None when there is no cache: TensorRT then calls get_batch
            return self.data.read_cache()

        def write_calibration_cache(self, cache) -> None:
            # ``cache`` is a buffer owned by TensorRT: copy it before the call returns
            self.data.write_cache(bytes(cache))

        def free(self) -> None:
            if self._device is not None:
                self._device.free()
                self._device = None
                self._host = None

    return EntropyCalibrator()
