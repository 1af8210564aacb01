"""Style transfer on the device: ``Stylizer`` runs a fast style network (any
``.tflite``, ``.onnx`` or TensorRT ``.engine``/``.trt`` file exported by
``python -m export style export``) on BGR uint8 frames.

    >>> from sdk import Stylizer, StylizerOptions
    >>> with Stylizer.create_from_options(StylizerOptions(model_path="models/style/udnie_int8.tflite",
    ...                                                  running_mode="video")) as stylizer:
    ...     for frame in frames:
    ...         out = stylizer(frame)          # same size as frame, BGR uint8

Pre- and post-processing come from the model's contract (``model.info``):
channel order, pixel range, mean/std and layout of the input; ``output_range``
of the output; ``size_multiple`` (the network's total stride).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .errors import ClosedError, InputError, ModelKindError
from .image import check_bgr
from .model import Model, load_model

RUNNING_MODES = ("image", "video")
#: Smallest frame side accepted: below this a style network has nothing to work with.
MIN_SIDE = 8


@dataclass(frozen=True)
class StylizerOptions:
    """Options of :class:`Stylizer` (keyword-only, validated when created).

    Attributes:
        model_path: the stylizer model file (``.tflite``, ``.onnx``, ``.engine``/``.trt``).
        backend: force a backend by name (default: by file suffix).
        threads: CPU threads of the runtime (``None``: its default).
        max_side: frames whose longest side exceeds this are shrunk to it before the
            network and the result is enlarged back (speed on large frames;
            ``None``: run at the frame's own size).
        running_mode: ``"image"`` (each call independent) or ``"video"`` (calls are
            consecutive frames: outputs are smoothed over time, see :class:`Stylizer`).
        smoothing: video mode: weight of the previous output in the temporal
            exponential moving average, in [0, 1) (0 = no smoothing).
        scene_cut: video mode: mean absolute difference (grey levels, on a 32x32
            thumbnail) between consecutive input frames above which the average
            restarts, so a cut or a fast pan does not leave ghosts.
        border: pixels of reflection added on every side before the network and
            cropped after (fully convolutional models only): the network's zero
            padding darkens a few pixels at the image edge, which then fall outside
            the returned frame.  0 disables it.
    """

    model_path: str | os.PathLike
    backend: str | None = None
    threads: int | None = None
    max_side: int | None = None
    running_mode: str = "image"
    smoothing: float = 0.6
    scene_cut: float = 25.0
    border: int = 8

    def __post_init__(self) -> None:
        for name in ("border", "max_side"):
            value = getattr(self, name)
            # pixel counts: a float or a string would fail later, inside OpenCV
            if value is not None and (not isinstance(value, (int, np.integer))
                                      or isinstance(value, bool)):
                raise ValueError(f"{name} must be an int, got {value!r}")
        for name in ("smoothing", "scene_cut"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                # NaN would pass every comparison below and switch the check off silently
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if self.running_mode not in RUNNING_MODES:
            raise ValueError(f"running_mode must be one of {RUNNING_MODES}, "
                             f"got {self.running_mode!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.scene_cut <= 0:
            raise ValueError(f"scene_cut must be > 0, got {self.scene_cut}")
        if self.max_side is not None and self.max_side < MIN_SIDE:
            raise ValueError(f"max_side must be >= {MIN_SIDE} or None, got {self.max_side}")


def _check_frame(frame, what: str = "frame") -> np.ndarray:
    """A BGR uint8 (H, W, 3) frame; grey (H, W) and BGRA frames are converted."""
    return check_bgr(frame, what, min_side=MIN_SIDE)


class Stylizer:
    """Applies the one style of a stylizer model to BGR uint8 frames.

    Resize policy (every call returns an image of exactly the input frame's size):

    1. if ``options.max_side`` is set and the frame is larger, it is shrunk
       (area interpolation) so its longest side is ``max_side``;
    2. a model with a fixed input size (e.g. a static TensorRT engine) gets the
       frame resized to that size; a fully convolutional model runs at the frame's
       size, padded by reflection (``options.border`` pixels on every side, then
       up to a multiple of the model's ``size_multiple``, its total stride) and
       cropped back afterwards, so edges are not darkened and no aspect ratio is
       changed;
    3. the result is resized (bilinear) back to the frame's size when step 1 or 2
       changed it.

    Video mode (``running_mode="video"``) treats consecutive calls as frames of
    one stream and returns an exponential moving average of the stylised frames
    in output space, ``y_t = s * y_{t-1} + (1 - s) * f(x_t)`` with
    ``s = options.smoothing``: a feed-forward style network redraws its texture
    from scratch on every frame, and small input changes (sensor noise,
    compression) make that texture shimmer; averaging over ~1/(1-s) frames
    suppresses the shimmer at the cost of some trailing on fast motion.  The
    average restarts on a scene cut (``options.scene_cut``), on a change of frame
    size, and on :meth:`reset`.

    ``Stylizer(path)`` only records its options; the model is opened on first
    use or by :meth:`open`.  :meth:`create_from_options` opens it at once, so a
    bad file fails there.  Use it as a context manager or call :meth:`close`
    (safe twice).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *,
                 options: StylizerOptions | None = None) -> None:
        if options is None:
            if model_path is None:
                raise ValueError("give model_path or options")
            options = StylizerOptions(model_path=model_path)
        elif model_path is not None:
            raise ValueError("give model_path or options, not both")
        self.options = options
        self._model: Model | None = None
        self._closed = False
        self._state: np.ndarray | None = None
        self._last_thumb: np.ndarray | None = None

    @classmethod
    def create_from_options(cls, options: StylizerOptions) -> "Stylizer":
        """Open the model now (raises ModelNotFoundError, ModelFormatError,
        MetadataError, ModelKindError, BackendUnavailableError)."""
        stylizer = cls(options=options)
        stylizer.open()
        return stylizer

    @classmethod
    def create_from_model_path(cls, path: str | os.PathLike) -> "Stylizer":
        """``create_from_options(StylizerOptions(model_path=path))``."""
        return cls.create_from_options(StylizerOptions(model_path=path))

    # --- lifetime ------------------------------------------------------------

    def open(self) -> "Stylizer":
        """Load the model and check that it is a stylizer (idempotent)."""
        if self._closed:
            raise ClosedError("this Stylizer is closed; create a new one")
        if self._model is not None:
            return self
        o = self.options
        model = load_model(o.model_path, backend=o.backend, threads=o.threads)
        try:
            model.require_kind("stylizer", user="Stylizer",
                               hint="export one with `python -m export style export`")
            if len(model.inputs) != 1 or len(model.outputs) != 1:
                raise ModelKindError(f"{o.model_path}: a stylizer has one input and one output, "
                                     f"this model has {len(model.inputs)} and {len(model.outputs)}")
            if len(model.inputs[0].shape) != 4:
                raise ModelKindError(f"{o.model_path}: expected a 4-D image input, got "
                                     f"{model.inputs[0].describe()}")
        except Exception:
            model.close()
            raise
        self._model = model
        return self

    def close(self) -> None:
        """Release the model; safe to call more than once."""
        if self._model is not None:
            self._model.close()
            self._model = None
        self._closed = True
        self._state = None

    def __enter__(self) -> "Stylizer":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- description -----------------------------------------------------------

    @property
    def model(self) -> Model:
        """The loaded :class:`sdk.Model` (opens it if needed)."""
        self.open()
        return self._model  # type: ignore[return-value]  # open() set it or raised

    @property
    def style(self) -> str:
        """The style's name (the style image's file stem) from the contract."""
        return str(self.model.info.output.get("style", ""))

    # --- running ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget the video state (start of a new stream)."""
        self._state = None
        self._last_thumb = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Same as :meth:`stylize`."""
        return self.stylize(frame)

    def stylize(self, frame: np.ndarray) -> np.ndarray:
        """Stylise one BGR uint8 frame; returns a BGR uint8 frame of the same size.

        Raises:
            InputError / InputDtypeError / InputShapeError: not a BGR uint8 image.
        """
        frame = _check_frame(frame)
        out = self._run_same_size([frame])[0]
        if self.options.running_mode == "video":
            out = self._smooth(frame, out)
        return out

    def stylize_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stylise independent images (never smoothed, whatever the running mode).

        Frames of equal size go through the network as one batch when the model
        takes a dynamic batch; otherwise one at a time.
        """
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            frames = list(frames)
        if not isinstance(frames, (list, tuple)):
            raise InputError(f"frames: expected a list of BGR uint8 images or an (N, H, W, 3) "
                             f"array, got {type(frames).__name__}")
        checked = [_check_frame(f, f"frames[{i}]") for i, f in enumerate(frames)]
        if not checked:
            return []
        batchable = self.model.inputs[0].shape[0] is None
        if batchable and len({f.shape for f in checked}) == 1:
            return self._run_same_size(checked)
        return [self._run_same_size([f])[0] for f in checked]

    # --- internals -------------------------------------------------------------

    def _run_same_size(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Run equal-size frames as one batch, with the resize policy of the class docstring."""
        model = self.model
        info = model.info
        h, w = frames[0].shape[:2]
        images = frames
        ms = self.options.max_side
        if ms is not None and max(h, w) > ms:
            s = ms / max(h, w)
            size = (max(MIN_SIDE, round(w * s)), max(MIN_SIDE, round(h * s)))
            images = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in images]
        spec = model.inputs[0]
        nchw = info.preprocessing.layout == "NCHW"
        fixed = spec.shape[2:4] if nchw else spec.shape[1:3]
        pad = (0, 0, 0, 0)  # top, bottom, left, right
        if all(d is not None for d in fixed):
            fh, fw = fixed
            if images[0].shape[:2] != (fh, fw):
                images = [cv2.resize(f, (fw, fh), interpolation=cv2.INTER_AREA) for f in images]
        else:
            m = int(info.output.get("size_multiple", 1))
            ih, iw = images[0].shape[:2]
            b = min(self.options.border, ih - 1, iw - 1)  # reflection needs b < side
            pad = (b, b + (-(ih + 2 * b)) % m, b, b + (-(iw + 2 * b)) % m)
            if any(pad):
                # reflection rather than zeros: a zero border would be stylised as a dark edge
                images = [cv2.copyMakeBorder(f, *pad, cv2.BORDER_REFLECT_101) for f in images]
        x = info.preprocessing.apply(np.stack(images))
        y = model(x.astype(spec.dtype) if spec.quantization is None else x)
        outs = self._postprocess(y, info)
        if any(pad):
            top, bottom, left, right = pad
            outs = outs[:, top:outs.shape[1] - bottom, left:outs.shape[2] - right]
        result = []
        for o in outs:
            if o.shape[:2] != (h, w):
                o = cv2.resize(o, (w, h), interpolation=cv2.INTER_LINEAR)
            result.append(np.ascontiguousarray(o))
        return result

    @staticmethod
    def _postprocess(y: np.ndarray, info) -> np.ndarray:
        """Model output -> BGR uint8 (N,H,W,3) using ``output_range`` and the channel order."""
        y = np.asarray(y, dtype=np.float32)
        if info.preprocessing.layout == "NCHW":
            y = y.transpose(0, 2, 3, 1)
        lo, hi = info.output.get("output_range", (0.0, 255.0))
        if (lo, hi) != (0.0, 255.0):
            y = (y - lo) * (255.0 / (hi - lo))
        if info.preprocessing.channel_order == "RGB":
            y = y[..., ::-1]
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)

    def _smooth(self, frame: np.ndarray, out: np.ndarray) -> np.ndarray:
        thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (32, 32),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = (self._state is None or self._state.shape != out.shape or self._last_thumb is None
               or float(np.mean(np.abs(thumb - self._last_thumb))) > self.options.scene_cut)
        self._last_thumb = thumb
        s = self.options.smoothing
        if cut or s == 0.0:
            self._state = out.astype(np.float32)
        else:
            self._state = s * self._state + (1.0 - s) * out.astype(np.float32)
        return np.clip(np.rint(self._state), 0, 255).astype(np.uint8)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._model else "not opened")
        return f"Stylizer({str(self.options.model_path)!r}, {self.options.running_mode}, {state})"


def stylizer_paths(folder: str | os.PathLike, precision: str = "int8",
                   suffix: str = ".tflite") -> dict[str, Path]:
    """``{style: path}`` of the released stylizers in ``folder`` named
    ``<style>_<precision><suffix>`` (as ``python -m export style export`` writes them)."""
    found = {}
    for p in sorted(Path(folder).glob(f"*_{precision}{suffix}")):
        found[p.name[:-len(f"_{precision}{suffix}")]] = p
    return found
