"""``sdk.Encoder``: embeddings of raw arrays — 1D signals ``(n, channels)``, 3D volumes or
clips ``(d, h, w, channels)`` — with any model of kind ``encoder``.

The face pipeline (``sdk.FaceVerifier``) adds detection and alignment on top of
the same idea; this class is for inputs that need none. Distances and
thresholds are the product's one definition (``sdk.distance.squared_l2``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .contract import ModelInfo
from .distance import VerifyResult, l2_normalize, squared_l2
from .errors import (ClosedError, InputDtypeError, InputError, InputShapeError, MetadataError,
                     ModelFormatError)
from .model import Model, load_model

# Only raw-array encoders: a face encoder takes BGR uint8 faces through its contract's
# colour order and pixel range, which sdk.FaceVerifier applies; fed here as raw arrays its
# embeddings would silently differ from the verifier's for the same face.
_KINDS = ("encoder",)
_FACE_HINT = ("a face encoder goes through sdk.FaceVerifier; its embed_aligned() takes "
              "faces already aligned to the 112x112 template")


@dataclass(frozen=True)
class EncoderOptions:
    """Options of :class:`Encoder`.

    Attributes:
        model_path: an ``.onnx``, ``.tflite`` or TensorRT file of kind
            ``encoder`` (face encoders: :class:`sdk.FaceVerifier`).
        threads: CPU threads for the runtime.
        threshold: override of the model's calibrated τ (squared L2, in (0, 4): 4 would
            accept everyone).
    """

    model_path: str | os.PathLike
    threads: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < float(self.threshold) < 4.0:
            raise ValueError(f"threshold is a squared L2 distance between unit vectors and "
                             f"must be in (0, 4) (4 would accept everyone), got {self.threshold}")


class Encoder:
    """Embeds arrays shaped like the model's input (one sample or a batch).

    >>> # made by ``make example-1d`` (docs/ND.md)
    >>> with Encoder.create("runs/nd/speech/speech_int8.tflite") as enc:
    ...     r = enc.verify(features_a, features_b)
    """

    def __init__(self, model: Model, options: EncoderOptions) -> None:
        self._model = model
        self.options = options

    @classmethod
    def create_from_options(cls, options: EncoderOptions) -> "Encoder":
        """Load ``options.model_path`` as an encoder.

        Raises:
            ModelNotFoundError, ModelFormatError: no such file, or not a model file.
            ModelKindError: a model of another kind (a stylizer; a face encoder, which
                :class:`sdk.FaceVerifier` runs with its detector and alignment).
            MetadataError: no calibrated threshold in the file and none in ``options``.
        """
        model = load_model(options.model_path, threads=options.threads)
        try:
            info = model.require_kind(*_KINDS, user="Encoder", hint=_FACE_HINT)
            if options.threshold is None and info.threshold is None:
                raise MetadataError(f"{model.path} carries no calibrated threshold; pass "
                                    "EncoderOptions(threshold=...)")
        except Exception:
            model.close()
            raise
        return cls(model, options)

    @classmethod
    def create(cls, model_path: str | os.PathLike, **kwargs) -> "Encoder":
        """``create_from_options(EncoderOptions(model_path, **kwargs))``."""
        return cls.create_from_options(EncoderOptions(model_path=model_path, **kwargs))

    # --- description -----------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """The model's contract (kind, input, metric, threshold, source hash, ...)."""
        return self._live().info

    @property
    def model(self) -> Model:
        """The loaded model (owned by the encoder)."""
        return self._live()

    @property
    def model_id(self) -> str:
        """Identity of the trained weights (galleries are tied to it)."""
        return self.info.model_id

    @property
    def threshold(self) -> float:
        """τ: ``options.threshold`` if given, else the one calibrated into the file."""
        if self.options.threshold is not None:
            return float(self.options.threshold)
        return float(self.info.threshold)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of one sample (without the batch axis)."""
        return self._live().inputs[0].shape[1:]

    @property
    def embedding_size(self) -> int:
        """Length D of one embedding."""
        return int(self.info.output.get("embedding_size") or self._live().outputs[0].shape[-1])

    def _live(self) -> Model:
        if self._model is None:
            raise ClosedError("the encoder is closed; create a new one")
        return self._model

    # --- embedding --------------------------------------------------------------

    def embed(self, x: np.ndarray) -> np.ndarray:
        """``(D,)`` for one sample shaped like :attr:`input_shape`, ``(B, D)`` for a batch.

        Raises:
            InputDtypeError, InputShapeError: ``x`` is not numeric or not shaped like a
                sample or a batch of them.
            InputError: ``x`` holds NaN or infinite values.
            ModelFormatError: the model gave non-finite embeddings.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise InputDtypeError(f"expected a numeric array, got {x.dtype}")
        sample = self.input_shape
        single = x.ndim == len(sample)
        batch = x[None] if single else x
        if batch.ndim != len(sample) + 1 or any(
                d is not None and d != g for d, g in zip(sample, batch.shape[1:])):
            dims = ",".join("?" if d is None else str(d) for d in sample)
            raise InputShapeError(f"expected one sample of shape ({dims}) or a batch of them, "
                                  f"got {x.shape}")
        batch = batch.astype(np.float32)
        if not np.all(np.isfinite(batch)):
            # an int8 model quantises NaN and inf to some finite value: garbage input would
            # come out as an ordinary embedding that can match and be enrolled
            raise InputError("the input contains NaN or infinite values")
        model = self._live()
        emb = np.asarray(model(batch), dtype=np.float32)
        if not np.all(np.isfinite(emb)):
            raise ModelFormatError(f"{model.path}: the encoder produced non-finite embeddings")
        # re-normalise: an int8 model's dequantised output is only close to unit length, and
        # τ was calibrated on unit vectors (the same rule as FaceVerifier)
        out = l2_normalize(emb)
        return out[0] if single else out

    def distance(self, e1: np.ndarray, e2: np.ndarray) -> float | np.ndarray:
        """d = ||e1 - e2||^2 (broadcasts: one against many gives many)."""
        d = squared_l2(e1, e2)
        return float(d) if np.ndim(d) == 0 else d

    def verify(self, a: np.ndarray, b: np.ndarray) -> VerifyResult:
        """1:1 verification of two samples: match when d <= τ."""
        d = float(self.distance(self.embed(a), self.embed(b)))
        return VerifyResult(is_match=d <= self.threshold, distance=d, threshold=self.threshold)

    def close(self) -> None:
        """Release the model; safe to call twice.  Later use raises ``ClosedError``."""
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> "Encoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
