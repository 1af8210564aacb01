"""Face verification on device: detect, align, embed, compare.

:class:`FaceVerifier` ties the YuNet detector (``sdk.faces.detector``) to a
face-encoder model opened with :func:`sdk.load_model`.  Everything the
encoder needs to see its input as it was trained (input size, channel order,
pixel range, mean/std, layout) and the calibrated threshold τ are read from
the model's own contract (``model.info``), never from constants here.

Embeddings are unit vectors (re-normalised after the model, as in threshold
calibration) and distances are :func:`sdk.distance.squared_l2` between them,
the same d() used in training and calibration; two faces match when
``d <= τ``.

>>> with FaceVerifier.create() as fv:                      # released model
...     result = fv.verify(cv2.imread("a.jpg"), cv2.imread("b.jpg"))
...     print(result.is_match, result.distance, result.threshold)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..contract import ModelInfo, TensorSpec
from ..distance import VerifyResult, check_unit_embedding, l2_normalize, squared_l2
from ..errors import (ClosedError, InputDtypeError, InputShapeError, MetadataError,
                      ModelFormatError, ModelNotFoundError, NoFaceError,
                      ThresholdUnavailableError)
from ..model import Model, load_model
from ..paths import MODELS_DIR
from .detector import ALIGNED_SIZE, Face, FaceDetector, FaceDetectorOptions, align_face, check_image
from .quality import FaceQuality, assess_face

#: Folder of the released face encoders (``python -m export faces release`` writes them).
FACE_MODELS_DIR = MODELS_DIR / "faces"
#: The default released model.  ONNX int8 (QDQ) because on the x86 CPU we
#: measured ONNX Runtime was the fastest runtime and its uint8 activations
#: were as accurate as int8 (../shared/notes/toolchain.md; phones and Jetsons
#: differ: measure there).  Devices that only have LiteRT pass
#: ``face_encoder_int8.tflite`` explicitly (no silent switch between the two:
#: their embeddings differ slightly, and a gallery records which one made it).
DEFAULT_FACE_MODEL = FACE_MODELS_DIR / "face_encoder_int8.onnx"
#: Environment variable that overrides the default model path.
FACE_MODEL_ENV = "EDGE_SDK_FACE_MODEL"

_LARGEST_SQUARED_L2 = 4.0  # d between unit vectors lies in [0, 4]


def default_model_path(explicit: str | os.PathLike | None = None) -> Path:
    """The face encoder to load: ``explicit``, else ``$EDGE_SDK_FACE_MODEL``, else
    ``models/faces/face_encoder_int8.onnx``.

    Raises:
        ModelNotFoundError: the chosen file does not exist; the message says how to get one.
    """
    for given, origin in ((explicit, "argument"), (os.environ.get(FACE_MODEL_ENV),
                                                    f"${FACE_MODEL_ENV}")):
        if given:
            p = Path(given)
            if not p.is_file():
                raise ModelNotFoundError(f"face model {p} (from {origin}) does not exist")
            return p
    if DEFAULT_FACE_MODEL.is_file():
        return DEFAULT_FACE_MODEL
    others = sorted(p.name for p in FACE_MODELS_DIR.glob("*")) if FACE_MODELS_DIR.is_dir() else []
    hint = f" (that folder holds: {', '.join(others)}; pass one as model=)" if others else ""
    raise ModelNotFoundError(
        f"the released face model {DEFAULT_FACE_MODEL} is absent{hint}. It is built by "
        "`python -m export faces release` and committed to models/faces/ (see docs/FACES.md); "
        "or pass FaceVerifierOptions(model=PATH) (--model in the apps) or set "
        f"${FACE_MODEL_ENV}, e.g. to models/faces/face_encoder_int8.tflite on a device with "
        "only LiteRT")


@dataclass(frozen=True)
class FaceVerifierOptions:
    """Options of :class:`FaceVerifier`.

    Attributes:
        model: face-encoder file (``.onnx``, ``.tflite``, TensorRT engine);
            ``None`` loads the released model (see :func:`default_model_path`).
        backend: force a backend by name (``onnxruntime``, ``tflite``,
            ``tensorrt``); ``None`` chooses by file suffix.
        threads: CPU threads for the runtime; ``None`` lets it decide.
        threshold: override of the model's calibrated τ (a squared L2
            distance, in (0, 4)); ``None`` uses the model's own.
        operating_point: use one of the model's named thresholds instead
            of its default τ, e.g. ``"far_1e-4"`` (at most one false accept in
            ten thousand impostor pairs on the calibration set: what a door
            wants), ``"far_1e-3"`` or ``"far_1e-2"``; the names a model carries are in
            ``model.info.operating_points``.  Exclusive with ``threshold``.
        detector: options of the YuNet detector built alongside.
        batch_size: faces per model call in batch embedding, for models
            whose batch dimension is dynamic.
    """

    model: str | os.PathLike | None = None
    backend: str | None = None
    threads: int | None = None
    threshold: float | None = None
    operating_point: str | None = None
    detector: FaceDetectorOptions = field(default_factory=FaceDetectorOptions)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < float(self.threshold) < _LARGEST_SQUARED_L2:
            raise ValueError(f"threshold is a squared L2 distance between unit embeddings and "
                             f"must be in (0, 4) (4 would accept everyone), got {self.threshold}")
        if self.threshold is not None and self.operating_point is not None:
            raise ValueError("give threshold or operating_point, not both")
        if self.operating_point is not None and not isinstance(self.operating_point, str):
            raise TypeError(f"operating_point must be a name (str), "
                            f"got {type(self.operating_point).__name__}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.detector, FaceDetectorOptions):
            raise TypeError(f"detector must be FaceDetectorOptions, "
                            f"got {type(self.detector).__name__}")


@dataclass(frozen=True)
class _InputPlan:
    """How an aligned face becomes the encoder's input, derived once from the contract."""

    spec: TensorSpec
    height: int
    width: int
    batch: int | None  # fixed batch size of the model, None when dynamic


def _plan_input(info: ModelInfo, spec: TensorSpec, source: str) -> _InputPlan:
    pre = info.preprocessing
    if pre.channel_order == "NONE":
        raise MetadataError(f"{source}: channel_order NONE: the model does not take images")
    channels = 1 if pre.channel_order == "GRAY" else 3
    if len(spec.shape) != 4:
        raise ModelFormatError(f"{source}: a face encoder takes one image batch "
                               f"(rank 4), its input is {spec.describe()}")
    if pre.layout == "NHWC":
        _, h, w, c = spec.shape
    elif pre.layout == "NCHW":
        _, c, h, w = spec.shape
    else:
        raise MetadataError(f"{source}: unsupported layout {pre.layout!r} (NHWC or NCHW)")
    if c is not None and c != channels:
        raise MetadataError(f"{source}: channel_order {pre.channel_order} means {channels} "
                            f"channel(s) but the input is {spec.describe()} ({pre.layout})")
    for name in ("mean", "std"):
        n = len(getattr(pre, name))
        if n not in (1, channels):
            raise MetadataError(f"{source}: preprocessing.{name} has {n} values for "
                                f"{channels} channel(s)")
    # a dynamic spatial size takes the template's own size: no resampling at all
    return _InputPlan(spec=spec, height=h or ALIGNED_SIZE, width=w or ALIGNED_SIZE,
                      batch=spec.shape[0])


def _check_encoder(model: Model, options: FaceVerifierOptions) -> _InputPlan:
    """Check ``model`` is a usable face encoder; derive how faces become its input."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an sdk.Model (see sdk.load_model), "
                        f"got {type(model).__name__}")
    info = model.require_kind("face_encoder", user="FaceVerifier",
                              hint="e.g. models/faces/face_encoder_int8.onnx")
    source = str(model.path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFormatError(f"{source}: a face encoder has one input and one output, this "
                               f"has {len(model.inputs)} and {len(model.outputs)}")
    plan = _plan_input(info, model.inputs[0], source)
    if options.operating_point is not None:
        operating_threshold(info, options.operating_point, source)  # fail at load, not later
    elif options.threshold is None and info.threshold is None:
        raise _no_threshold(info, source)
    return plan


def _no_threshold(info: ModelInfo, source: str) -> ThresholdUnavailableError:
    """The error for a model without a calibrated τ when none is given."""
    return ThresholdUnavailableError(
        f"{source} carries no calibrated threshold (output.threshold); pass "
        "FaceVerifierOptions(threshold=...)", source=source, operating_point=None,
        available=tuple(sorted(info.operating_points)))


def operating_threshold(info: ModelInfo, name: str, source: str) -> float:
    """The τ of operating point ``name`` in ``info`` (ThresholdUnavailableError, a
    MetadataError, naming the ones the file has when it is absent)."""
    points = info.operating_points
    if name not in points:
        have = ", ".join(sorted(points)) or "none"
        raise ThresholdUnavailableError(
            f"{source} has no operating point {name!r} (it has: {have}); pass threshold=... "
            "or re-release the model", source=source, operating_point=name,
            available=tuple(sorted(points)))
    return points[name]


class FaceVerifier:
    """Detect, align and embed faces; compare them with the model's own τ.

    Build it with :meth:`create_from_options` (or :meth:`create`), which loads
    the model and the detector.  The constructor loads nothing: it checks and
    stores parts already built (``sdk.load_model``, ``FaceDetector``) and takes
    ownership of them: :meth:`close` closes both.  Use it as a context manager.

    Images are numpy BGR uint8 ``(H, W, 3)`` as OpenCV gives them (grey
    ``(H, W)`` and BGRA are converted).
    """

    def __init__(self, model: Model, detector: FaceDetector,
                 options: FaceVerifierOptions | None = None) -> None:
        if not isinstance(detector, FaceDetector):
            # else a None detector shows up later as "the verifier is closed"
            raise TypeError(f"detector must be a FaceDetector (FaceDetector.create()), "
                            f"got {type(detector).__name__}")
        self.options = options if options is not None else FaceVerifierOptions()
        # checking the arguments reads only the model's metadata: no loading here
        self._plan = _check_encoder(model, self.options)
        self._model: Model | None = model
        self._detector: FaceDetector | None = detector

    # --- construction ------------------------------------------------------

    @classmethod
    def create_from_options(cls, options: FaceVerifierOptions) -> "FaceVerifier":
        """Load the encoder and the detector that ``options`` name.

        Raises:
            ModelNotFoundError: the model (or YuNet) file is absent.
            ModelKindError: the model is not a ``face_encoder``.
            MetadataError: the model has no contract or an unusable one.
            ThresholdUnavailableError: (a MetadataError) the model has no threshold
                (pass ``threshold=``) or not the named ``operating_point``.
        """
        path = default_model_path(options.model)
        model = load_model(path, backend=options.backend, threads=options.threads)
        detector = None
        try:
            detector = FaceDetector.create_from_options(options.detector)
            return cls(model, detector, options)
        except BaseException:
            model.close()
            if detector is not None:
                detector.close()
            raise

    @classmethod
    def create(cls, model: str | os.PathLike | None = None,
               detector: str | os.PathLike | None = None, **kwargs) -> "FaceVerifier":
        """Shortcut: ``create(model=None, detector=None, threshold=..., ...)``.

        ``model`` is the encoder file (``None``: the released one), ``detector``
        the YuNet file (``None``: found as ``sdk.paths`` says); other keyword
        arguments are :class:`FaceVerifierOptions` fields.
        """
        return cls.create_from_options(FaceVerifierOptions(
            model=model, detector=FaceDetectorOptions(model_path=detector), **kwargs))

    # --- description ---------------------------------------------------------

    def _live_model(self) -> Model:
        if self._model is None:
            raise ClosedError("the FaceVerifier is closed; create a new one")
        return self._model

    def _live_detector(self) -> FaceDetector:
        if self._detector is None:
            raise ClosedError("the FaceVerifier is closed; create a new one")
        return self._detector

    @property
    def model(self) -> Model:
        """The face-encoder model."""
        return self._live_model()

    @property
    def info(self) -> ModelInfo:
        """The encoder's contract."""
        return self._live_model().info

    @property
    def model_id(self) -> str:
        """Identity of the encoder's weights (``name@hash``): galleries record it."""
        return self.info.model_id

    @property
    def threshold(self) -> float:
        """τ: faces match when their distance is at most this.

        The options' override when given, else the named operating point's,
        else the model's calibrated (best-accuracy) value.
        """
        if self.options.threshold is not None:
            return float(self.options.threshold)
        if self.options.operating_point is not None:
            return operating_threshold(self.info, self.options.operating_point,
                                       str(self._live_model().path))
        t = self.info.threshold
        if t is None:
            raise _no_threshold(self.info, str(self._live_model().path))
        return t

    @property
    def embedding_size(self) -> int:
        """Length of one embedding."""
        spec = self._live_model().outputs[0]
        if spec.shape and spec.shape[-1] is not None:
            return int(spec.shape[-1])
        return int(self.info.output["embedding_size"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the encoder takes; aligned 112x112 faces are resized to it."""
        return self._plan.width, self._plan.height

    def __repr__(self) -> str:
        if self._model is None:
            return "FaceVerifier(closed)"
        return (f"FaceVerifier({str(self._model.path)!r}, backend={self._model.backend!r}, "
                f"threshold={self.threshold:.4f})")

    # --- detection -----------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in a BGR uint8 image, largest first."""
        return self._live_detector().detect(image)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 aligned BGR crop of ``face`` (what :meth:`embed_aligned` takes)."""
        return align_face(check_image(image), face.landmarks)

    def quality(self, image: np.ndarray, face: Face | None = None) -> FaceQuality:
        """Quality measurements of the largest face in ``image`` (or of ``face``);
        ``.problems(sdk.QualityOptions())`` says what, if anything, is wrong with it.

        Raises:
            NoFaceError: no face in the image.
        """
        if face is None:
            image, face = self._largest(image, "image")
        else:
            image = check_image(image)
        return assess_face(image, face)

    # --- embedding -------------------------------------------------------------

    def _preprocess(self, faces: np.ndarray) -> np.ndarray:
        """Aligned BGR uint8 faces (N, 112, 112, 3) -> model input, as the contract says."""
        plan = self._plan
        pre = self.info.preprocessing
        if (plan.width, plan.height) != (ALIGNED_SIZE, ALIGNED_SIZE):
            interp = cv2.INTER_AREA if plan.width < ALIGNED_SIZE else cv2.INTER_LINEAR
            faces = np.stack([cv2.resize(f, (plan.width, plan.height), interpolation=interp)
                              for f in faces])
        x = pre.apply(faces)
        if plan.spec.dtype == "float16":
            x = x.astype(np.float16)
        # quantised int8/uint8 inputs are quantised by Model.run with the tensor's own scale
        return np.ascontiguousarray(x)

    def _run_batches(self, x: np.ndarray) -> np.ndarray:
        plan = self._plan
        model = self._live_model()
        step = plan.batch or self.options.batch_size
        out = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if plan.batch is not None and n < plan.batch:  # fixed batch: pad, then drop the pad
                pad = np.zeros((plan.batch - n, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            y = np.asarray(model.run(chunk)[0], dtype=np.float32)
            out.append(y.reshape(len(chunk), -1)[:n])
        emb = np.concatenate(out) if out else np.zeros((0, self.embedding_size), np.float32)
        if not np.all(np.isfinite(emb)):
            raise ModelFormatError(f"{model.path}: the encoder produced non-finite embeddings")
        # The encoders normalise inside, but an int8 output tensor only approximates unit
        # length; τ is calibrated on re-normalised embeddings (export/faces/evaluate.py),
        # so d() here must see them too.  For float models this changes nothing.
        return l2_normalize(emb)

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        """Embeddings of faces already aligned to the 112x112 template.

        Args:
            faces: BGR uint8 ``(112, 112, 3)`` (one face) or ``(N, 112, 112, 3)``.

        Returns:
            ``(D,)`` float32 for one face, ``(N, D)`` for a batch.
        """
        if not isinstance(faces, np.ndarray):
            raise InputDtypeError(f"aligned faces: expected a numpy array, "
                                  f"got {type(faces).__name__}")
        if faces.dtype != np.uint8:
            raise InputDtypeError(f"aligned faces: expected dtype uint8 (BGR), got {faces.dtype}")
        single = faces.ndim == 3
        batch = faces[None] if single else faces
        expected = (ALIGNED_SIZE, ALIGNED_SIZE, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise InputShapeError(f"aligned faces: expected (112, 112, 3) or (N, 112, 112, 3) "
                                  f"BGR uint8 (see align()), got {faces.shape}")
        emb = self._run_batches(self._preprocess(batch))
        return emb[0] if single else emb

    def _largest(self, image: np.ndarray, what: str) -> tuple[np.ndarray, Face]:
        image = check_image(image, what)
        faces = self.detect(image)
        if not faces:
            raise NoFaceError(f"{what}: no face found (detector score threshold "
                              f"{self._live_detector().options.score_threshold}); use a photo "
                              "with a visible, roughly frontal face")
        return image, faces[0]

    def embed(self, image: np.ndarray, face: Face | None = None) -> np.ndarray:
        """Embedding ``(D,)`` of the largest face in ``image`` (or of ``face``, found earlier
        with :meth:`detect` on the same image).

        Raises:
            NoFaceError: no face in the image.
            InputDtypeError, InputShapeError: not a BGR uint8 image.
        """
        if face is None:
            image, face = self._largest(image, "image")
        return self.embed_aligned(self.align(image, face))

    def embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings ``(N, D)`` of the largest face of each image, in one batched model run.

        Raises:
            NoFaceError: an image has no face (the message gives its index).
        """
        aligned = []
        for i, image in enumerate(images):
            image, face = self._largest(image, f"image {i}")
            aligned.append(self.align(image, face))
        if not aligned:
            return np.zeros((0, self.embedding_size), np.float32)
        return self.embed_aligned(np.stack(aligned))

    # --- comparison --------------------------------------------------------------

    def distance(self, e1: np.ndarray, e2: np.ndarray) -> float | np.ndarray:
        """d = squared L2 (``sdk.distance.squared_l2``); a float for two embeddings,
        an array when either is a batch."""
        d = squared_l2(e1, e2)
        return float(d) if np.ndim(d) == 0 else d

    def compare(self, e1: np.ndarray, e2: np.ndarray) -> VerifyResult:
        """:class:`VerifyResult` of two embeddings as :meth:`embed` gives them.

        Raises:
            InputShapeError: an embedding is not one ``(D,)`` vector.
            InputError: an embedding is not finite or not of unit length (τ is a
                distance between unit vectors: a zero or scaled pair would match).
        """
        size = self.embedding_size
        d = float(squared_l2(check_unit_embedding(e1, size, "e1"),
                             check_unit_embedding(e2, size, "e2")))
        t = self.threshold
        return VerifyResult(is_match=d <= t, distance=d, threshold=t)

    def verify(self, image_a: np.ndarray, image_b: np.ndarray) -> VerifyResult:
        """Are the largest faces of the two images the same person?

        Raises:
            NoFaceError: an image has no face (the message says which).
            InputDtypeError, InputShapeError: an image is not a uint8 array shaped
                (H, W, 3) BGR, (H, W) grey or (H, W, 4) BGRA, 16 px or more a side.
        """
        a, fa = self._largest(image_a, "image_a")
        b, fb = self._largest(image_b, "image_b")
        emb = self.embed_aligned(np.stack([self.align(a, fa), self.align(b, fb)]))
        return self.compare(emb[0], emb[1])

    # --- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Release the model and the detector; safe to call more than once."""
        model, detector = self._model, self._detector
        self._model = self._detector = None
        if model is not None:
            model.close()
        if detector is not None:
            detector.close()

    def __enter__(self) -> "FaceVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
