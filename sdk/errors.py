"""Typed errors raised by the SDK.

Every error the SDK raises for a user mistake or an unusable file derives from
:class:`SdkError`, so an application can catch one type.  The more specific
classes also derive from the matching built-in (``ValueError``,
``FileNotFoundError``, ``RuntimeError``) so generic handlers keep working.
"""

from __future__ import annotations


class SdkError(Exception):
    """Base class of every error raised by the SDK."""


# --- model files -----------------------------------------------------------


class ModelError(SdkError):
    """A model file cannot be used."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist."""


class ModelFormatError(ModelError, ValueError):
    """The file is corrupt, truncated, or not a model of a supported format."""


class MetadataError(ModelFormatError):
    """The model carries no SDK contract, or a contract this SDK cannot read."""


class ThresholdUnavailableError(MetadataError):
    """The model carries no threshold of the kind asked for: no operating point named
    ``operating_point`` (``available`` lists the ones it has) or, when none was named
    (``operating_point`` is ``None``), no calibrated τ at all.  An explicit threshold
    avoids both.  ``source`` is the model file.  The message gives the Python remedy;
    the fields let an application word its own (a command-line flag)."""

    def __init__(self, message: str, *, source: str, operating_point: str | None,
                 available: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.source = source
        self.operating_point = operating_point
        self.available = tuple(available)


class ModelKindError(ModelError, ValueError):
    """The model is valid but of another kind than the caller needs
    (e.g. a stylizer passed to ``FaceVerifier``)."""


class EngineMismatchError(ModelError):
    """A TensorRT engine was built for another GPU or TensorRT version.

    Engines are not portable: rebuild it on this device (the message says how).
    """


# --- runtimes --------------------------------------------------------------


class BackendUnavailableError(SdkError, RuntimeError):
    """The requested inference runtime (or the hardware it needs) is absent."""


class UnknownBackendError(SdkError, ValueError):
    """No backend of that name, or none for that file type."""


class PrecisionUnavailableError(BackendUnavailableError):
    """The requested precision has no fast path on this hardware (e.g. INT8 on a GPU
    without int8 support); it is refused rather than quietly built in another precision."""


class EngineBuildError(SdkError, RuntimeError):
    """A TensorRT engine could not be built: the ONNX graph failed the pre-build check,
    TensorRT's parser or builder rejected it, or the build settings (optimisation
    profiles, calibration data) do not fit the graph."""


class InferenceError(SdkError, RuntimeError):
    """The runtime accepted the model and the inputs but failed to run it."""


class ClosedError(SdkError, RuntimeError):
    """The model, verifier, detector, encoder or stylizer was closed; create a new one."""


# --- inputs ----------------------------------------------------------------


class InputError(SdkError, ValueError):
    """An input array or image does not match what the model expects."""


class InputShapeError(InputError):
    """An input has the wrong shape (the message gives expected vs. got)."""


class InputDtypeError(InputError):
    """An input has the wrong dtype (the message gives expected vs. got)."""


# --- faces -----------------------------------------------------------------


class FaceError(SdkError, ValueError):
    """Base class of face-pipeline errors about the image content.

    Raised about one photo of a ``Gallery.enroll`` call, it says which: ``index`` is
    that photo's 0-based position in the call (``None`` otherwise) and ``reason`` the
    message without the words naming the photo, so an application can name it its own
    way (a file path); elsewhere ``reason`` is the whole message.
    """

    def __init__(self, message: str, *, index: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.reason = message if reason is None else reason


class NoFaceError(FaceError):
    """No face was found in an image where one was required."""


class MultipleFacesError(FaceError):
    """Several faces were found where exactly one was required (enrollment)."""


class PoorFaceQualityError(FaceError):
    """A face is too small, turned, blurred or badly exposed to enrol
    (``sdk.QualityOptions``).  ``problems`` lists what is wrong, in words a
    user can act on."""

    def __init__(self, message: str, problems: list[str] | None = None,
                 index: int | None = None, *, reason: str | None = None) -> None:
        super().__init__(message, index=index, reason=reason)
        self.problems = list(problems or [])


class CalibrationError(SdkError, ValueError):
    """A site's photos cannot support the requested threshold fit (too few people or
    different-person pairs for the target false-accept rate)."""


class GalleryError(SdkError):
    """A gallery file is corrupt, of an unknown version, or the operation is invalid."""


class GalleryModelMismatchError(GalleryError, ValueError):
    """The gallery was enrolled with another face model than the one loaded."""


class OtherExportError(GalleryModelMismatchError):
    """The gallery was enrolled with another export (precision or runtime) of the same
    trained weights than the one loaded; ``Gallery.load(..., accept_other_export=True)``
    reads it for identification.  ``path`` is the gallery file, ``model_id`` the
    weights', ``enrolled`` and ``loaded`` the ``(precision, backend)`` of the gallery's
    export and of the loaded one.  The message gives the Python remedy; the fields let
    an application word its own (a command-line flag)."""

    def __init__(self, message: str, *, path: str, model_id: str,
                 enrolled: tuple[str | None, str | None],
                 loaded: tuple[str | None, str | None]) -> None:
        super().__init__(message)
        self.path = path
        self.model_id = model_id
        self.enrolled = enrolled
        self.loaded = loaded


class UnknownPersonError(GalleryError, KeyError):
    """The named person is not enrolled in the gallery."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else ""
