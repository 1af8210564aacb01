"""A gallery of enrolled people for 1:K identification (``sdk.Gallery``).

Each person keeps every embedding enrolled for them, and a probe's distance
to a person is its distance to that person's *nearest* embedding.  Why the
nearest and not the mean: τ is calibrated on distances between two single
photos, and the nearest-embedding distance is exactly such a distance, so τ
keeps its meaning however many photos a person has; the mean of unit vectors
is shorter than one (its distances need another τ) and blurs people whose
photos differ a lot (glasses on and off, lighting), where the nearest photo
is the one that should decide.  The cost, K people x n photos dot products of
128 floats, is negligible next to one model run.

The file on disk (``.npz``, read with ``allow_pickle=False``) holds only
embeddings, their person labels, the names and a JSON header recording the
format version and the encoder that produced them — never face images.
Saving writes a temporary file in the same folder, fsyncs it and renames it
over the target, so a crash leaves either the old gallery or the new one.

A gallery's embeddings all come from one export of the encoder (its precision
and runtime, recorded in the header): a gallery of another export may be read
for identification (``accept_other_export``), but enrolment into it is refused,
so the header never names an export that did not produce its embeddings.
"""

from __future__ import annotations

import io
import json
import os
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..distance import check_unit_embedding, check_unit_rows, squared_l2, unit_rows
from ..errors import (GalleryError, GalleryModelMismatchError, InputDtypeError,
                      InputShapeError, MultipleFacesError, NoFaceError, OtherExportError,
                      PoorFaceQualityError, UnknownPersonError)
from ..distance import VerifyResult
from ..encoder import Encoder
from ..paths import write_atomic
from .detector import check_image
from .quality import QualityOptions, assess_face
from .verifier import FaceVerifier

#: Marker and version of the gallery file format this SDK writes and reads.
GALLERY_FORMAT = "edge-sdk-gallery"
GALLERY_VERSION = 1
_MAX_NAME = 200


@dataclass(frozen=True)
class Candidate:
    """One enrolled person and the probe's distance to their nearest embedding."""

    name: str
    distance: float


@dataclass(frozen=True)
class IdentifyResult:
    """Outcome of a 1:K search.

    ``name`` is the nearest person when their distance is at most
    ``threshold``, else ``None`` (unknown); ``candidates`` are the nearest
    people, best first, whatever their distance.
    """

    name: str | None
    distance: float
    threshold: float
    candidates: tuple[Candidate, ...]

    @property
    def is_known(self) -> bool:
        """True when the probe matched an enrolled person."""
        return self.name is not None

    @property
    def label(self) -> str:
        """The name, or ``"unknown"``."""
        return self.name if self.name is not None else "unknown"


#: Characters a name may not hold besides control characters: the bidirectional overrides
#: and isolates, which make a name print as another in logs and lists ("Trojan Source").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _key(name: str) -> str:
    """A name as the gallery stores it: NFC-normalised (a keyboard may type "ë" as one
    code point or as "e" + a combining mark; both are one person) and stripped."""
    return unicodedata.normalize("NFC", name).strip()


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise GalleryError(f"a person's name must be a str, got {type(name).__name__}")
    clean = _key(name)
    if not clean or len(clean) > _MAX_NAME or any(
            unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in clean):
        raise GalleryError(f"invalid name {name!r}: use 1-{_MAX_NAME} printable characters")
    return clean


class Gallery:
    """Enrolled people (names + embeddings) of one face encoder.

    ``Gallery(verifier)`` is empty; :meth:`load` reads a saved one.  The
    gallery uses but does not own the verifier (closing it is the caller's
    job).  Its embeddings all come from one export of the encoder
    (:attr:`export`); see :meth:`load` for a gallery of another export.

    >>> with FaceVerifier.create() as fv:
    ...     g = Gallery(fv)
    ...     g.enroll("ada", [cv2.imread("ada1.jpg"), cv2.imread("ada2.jpg")])
    ...     g.save("gallery.npz")
    ...     print(g.identify(cv2.imread("door.jpg")).label)
    """

    def __init__(self, verifier: FaceVerifier | Encoder) -> None:
        # Faces come with detection and alignment (FaceVerifier); 1D signals and 3D clips are
        # embedded as they are (sdk.Encoder). Everything after the embedding is shared.
        _check_verifier(verifier)
        self._verifier = verifier
        self._people: dict[str, np.ndarray] = {}  # name -> (n, D) float32, enrollment order
        # the export (precision, backend) the embeddings come from: the verifier's, unless
        # load() accepted a file of another export
        self._export: tuple[str | None, str | None] = _export_of(verifier)

    # --- description -----------------------------------------------------------

    @property
    def verifier(self) -> FaceVerifier | Encoder:
        """The verifier (or encoder) that embeds enrolment and probe images."""
        return self._verifier

    @property
    def threshold(self) -> float:
        """τ of the verifier: a probe farther than this from everyone is unknown."""
        return self._verifier.threshold

    @property
    def export(self) -> tuple[str | None, str | None]:
        """``(precision, backend)`` of the encoder export the embeddings come from: the
        verifier's, or for a gallery loaded with ``accept_other_export``, the file's."""
        return self._export

    @property
    def names(self) -> list[str]:
        """Enrolled names, in enrollment order."""
        return list(self._people)

    def counts(self) -> dict[str, int]:
        """Number of enrolled embeddings of each person, in enrollment order."""
        return {name: len(e) for name, e in self._people.items()}

    def count(self, name: str) -> int:
        """Number of embeddings enrolled for ``name``."""
        return len(self._embeddings_of(name))

    def __len__(self) -> int:
        return len(self._people)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip() in self._people

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._people))

    def __repr__(self) -> str:
        n = sum(len(e) for e in self._people.values())
        return f"Gallery({len(self)} people, {n} embeddings, model={self._verifier.model_id!r})"

    def _embeddings_of(self, name: str) -> np.ndarray:
        key = _key(name) if isinstance(name, str) else name
        if not isinstance(key, str) or key not in self._people:
            raise UnknownPersonError(f"{name!r} is not enrolled (enrolled: "
                                     f"{', '.join(self._people) or 'nobody'})")
        return self._people[key]

    # --- enrollment ---------------------------------------------------------------

    def _one_face(self, image: np.ndarray, index: int, count: int, name: str,
                  quality: QualityOptions | None) -> np.ndarray:
        """The aligned face of photo ``index`` (0-based) of the ``count`` of ``name``'s
        enrollment, which must show exactly one face that meets ``quality`` (``None``: any
        face)."""
        # 1-based for people, the 0-based index for code: "photo 0" read as a typo
        what = f"{name!r} photo #{index + 1} of {count} (index {index})"
        image = check_image(image, what)
        faces = self._verifier.detect(image)
        if not faces:
            reason = ("no face found; enroll a photo with one clearly visible, roughly "
                      "frontal face")
            raise NoFaceError(f"{what}: {reason}", index=index, reason=reason)
        if len(faces) > 1:
            boxes = ", ".join(f"({b[0]:.0f},{b[1]:.0f} {b[2]:.0f}x{b[3]:.0f})"
                              for b in (f.box for f in faces))
            reason = (f"{len(faces)} faces found at {boxes}; enrollment needs exactly one, "
                      "so it cannot tell whose face to use")
            raise MultipleFacesError(f"{what}: {reason}", index=index, reason=reason)
        aligned = self._verifier.align(image, faces[0])
        if quality is not None:
            # one poor photo is the reference for every later attempt: refuse it here,
            # where the user can still take another, not at the door
            problems = assess_face(image, faces[0], aligned).problems(quality)
            if problems:
                reason = "; ".join(problems)
                raise PoorFaceQualityError(f"{what}: {reason}; use another photo (quality=None "
                                           "enrols it anyway)", problems, index, reason=reason)
        return aligned

    def enroll(self, name: str, images: np.ndarray | Sequence[np.ndarray], *,
               quality: QualityOptions | None = QualityOptions()) -> int:
        """Enroll one photo or several photos of ``name`` (added to earlier ones).

        Each photo's face must meet ``quality`` (:class:`sdk.QualityOptions`; the
        default limits refuse faces that are small, turned, blurred or badly
        exposed, docs/FACES.md "Face quality"); ``quality=None`` takes any face.
        With an :class:`sdk.Encoder` instead of a face verifier, ``images`` are
        samples shaped like its input (one, or a batch), embedded as they are and
        ``quality`` does not apply.

        All photos are checked before any is added: if one fails, the gallery
        is unchanged.

        Returns:
            The number of embeddings now enrolled for ``name``.

        Raises:
            NoFaceError, MultipleFacesError: a photo shows no face or several.
            PoorFaceQualityError: a photo's face misses a ``quality`` limit (the
                message says what to change; ``.problems`` lists it).
                These three name the photo as "photo #k of n (index i)"; ``.index``
                is its 0-based position in ``images`` and ``.reason`` the message
                without those words.
            GalleryModelMismatchError: the gallery holds embeddings of another
                export of the encoder (see :meth:`check_can_enroll`).
            GalleryError: invalid name or no photos.
            InputDtypeError, InputShapeError: not BGR uint8 images.
        """
        name = _check_name(name)
        self.check_can_enroll()
        if isinstance(self._verifier, Encoder):
            try:
                samples = np.asarray(images)
            except ValueError as exc:  # samples of different shapes
                raise InputShapeError(f"enroll {name!r}: the samples differ in shape "
                                      f"({exc})") from None
            return self.enroll_embeddings(name, self._verifier.embed(samples))
        if images is None:  # what cv2.imread gives for a missing or unreadable file
            check_image(images, "photo")
        if isinstance(images, np.ndarray):
            batch = [images] if images.ndim in (2, 3) else list(images)
        else:
            try:
                batch = list(images)
            except TypeError:
                raise InputDtypeError(f"enroll {name!r}: expected a BGR uint8 image or a "
                                      f"list of them, got {type(images).__name__}") from None
        if not batch:
            raise GalleryError(f"enroll {name!r}: no photos given")
        if quality is not None and not isinstance(quality, QualityOptions):
            raise TypeError(f"quality must be sdk.QualityOptions or None, "
                            f"got {type(quality).__name__}")
        aligned = [self._one_face(img, i, len(batch), name, quality)
                   for i, img in enumerate(batch)]
        return self.enroll_embeddings(name, self._verifier.embed_aligned(np.stack(aligned)))

    def enroll_embeddings(self, name: str, embeddings: np.ndarray) -> int:
        """Enroll embeddings computed with this gallery's verifier (``(D,)`` or ``(n, D)``).

        They must be unit vectors, as the verifier gives them: τ and every distance
        (d in [0, 4]) are defined on unit vectors.

        Returns:
            The number of embeddings now enrolled for ``name``.

        Raises:
            InputDtypeError, InputShapeError: not float ``(D,)`` / ``(n, D)``.
            InputError: not of unit length (normalise with :func:`sdk.l2_normalize`).
            GalleryModelMismatchError: the gallery holds embeddings of another
                export of the encoder (see :meth:`check_can_enroll`).
            GalleryError: invalid name, or NaN/infinity in the embeddings.
        """
        name = _check_name(name)
        self.check_can_enroll()
        e = np.asarray(embeddings)
        if e.dtype.kind != "f":
            raise InputDtypeError(f"embeddings: expected float, got {e.dtype}")
        e = e.astype(np.float32).reshape(1, -1) if e.ndim == 1 else e.astype(np.float32)
        size = self._verifier.embedding_size
        if e.ndim != 2 or e.shape[1] != size or len(e) == 0:
            raise InputShapeError(f"embeddings: expected ({size},) or (n, {size}), "
                                  f"got {np.shape(embeddings)}")
        if not np.all(np.isfinite(e)):
            raise GalleryError("embeddings: contain NaN or infinity")
        check_unit_rows(e)
        if not self._people:  # nothing of another export is left to mix with
            self._export = _export_of(self._verifier)
        old = self._people.get(name)
        self._people[name] = e.copy() if old is None else np.concatenate([old, e])
        return len(self._people[name])

    def check_can_enroll(self) -> None:
        """Raise unless this gallery's verifier may add embeddings to it.

        A gallery loaded with ``accept_other_export=True`` holds embeddings of
        another export of the encoder than the verifier's.  Identifying with it
        is allowed (small distance changes near τ), adding to it is not: the
        gallery would mix embeddings of two exports under a header that can
        name only one.  An empty gallery takes the verifier's export.

        Raises:
            GalleryModelMismatchError: the gallery holds embeddings of another export.
        """
        ours = _export_of(self._verifier)
        if self._people and self._export != ours:
            raise GalleryModelMismatchError(
                f"cannot enroll into this gallery: its embeddings come from the "
                f"{_describe(self._export)} export of {self._verifier.model_id!r} and the "
                f"loaded model is its {_describe(ours)} export; one gallery never mixes "
                f"exports, so enroll with the {_describe(self._export)} export, or enroll "
                "everyone again with this one into a new gallery")

    def remove(self, name: str) -> None:
        """Forget ``name`` and all their embeddings.

        Raises:
            UnknownPersonError: ``name`` is not enrolled.
        """
        self._embeddings_of(name)
        del self._people[_key(name)]
        if not self._people:  # nothing of another export is left: save() names the verifier's
            self._export = _export_of(self._verifier)

    # --- search ---------------------------------------------------------------------

    def distances(self, embedding: np.ndarray) -> dict[str, float]:
        """Distance of ``embedding`` to each person's nearest enrolled embedding."""
        e = check_unit_embedding(embedding, self._verifier.embedding_size)
        return {name: float(np.min(squared_l2(e, emb))) for name, emb in self._people.items()}

    def identify_embedding(self, embedding: np.ndarray, top_k: int = 3) -> IdentifyResult:
        """1:K search of one embedding; see :meth:`identify`."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if not self._people:
            raise GalleryError("the gallery is empty: enroll someone first")
        ranked = sorted(self.distances(embedding).items(), key=lambda kv: kv[1])
        best_name, best = ranked[0]
        t = self.threshold
        return IdentifyResult(name=best_name if best <= t else None, distance=best, threshold=t,
                              candidates=tuple(Candidate(n, d) for n, d in ranked[:top_k]))

    def identify(self, image: np.ndarray, top_k: int = 3) -> IdentifyResult:
        """Who is the largest face in ``image``?  The nearest person if within τ, else unknown.

        Raises:
            NoFaceError: no face in the image.
            GalleryError: the gallery is empty.
        """
        if not self._people:
            raise GalleryError("the gallery is empty: enroll someone first")
        return self.identify_embedding(self._verifier.embed(image), top_k)

    def verify(self, name: str, image: np.ndarray) -> VerifyResult:
        """Is the largest face in ``image`` the enrolled ``name`` (1:1)?

        Raises:
            UnknownPersonError: ``name`` is not enrolled.
            NoFaceError: no face in the image.
        """
        enrolled = self._embeddings_of(name)
        d = float(np.min(squared_l2(self._verifier.embed(image), enrolled)))
        t = self.threshold
        return VerifyResult(is_match=d <= t, distance=d, threshold=t)

    # --- persistence -------------------------------------------------------------------

    def _header(self) -> dict:
        # the export the embeddings come from, not the verifier's (see check_can_enroll)
        precision, backend = self._export
        return {"format": GALLERY_FORMAT, "version": GALLERY_VERSION,
                "model_id": self._verifier.info.model_id, "precision": precision,
                "backend": backend,
                "embedding_size": self._verifier.embedding_size,
                "metric": "squared_l2", "names": self.names,
                "saved_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery to ``path`` (``.npz``) atomically; returns the path.

        The file holds embeddings, names and the encoder's identity, no images.  A file
        already there keeps its permissions; a symlink keeps pointing at the file written.

        Raises:
            GalleryError: ``path`` is a folder.
        """
        given = Path(path)
        # through a symlink, replace its target (os.replace would swap the link for a file)
        path = given.resolve()
        if path.is_dir():
            raise GalleryError(f"{given} is a folder; save the gallery to a file in it, "
                               f"e.g. {given / 'gallery.npz'}")
        names = self.names
        size = self._verifier.embedding_size
        emb = np.concatenate([self._people[n] for n in names]) if names \
            else np.zeros((0, size), np.float32)
        labels = np.concatenate([np.full(len(self._people[n]), i, np.int32)
                                 for i, n in enumerate(names)]) if names \
            else np.zeros(0, np.int32)
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(self._header())), embeddings=emb,
                 labels=labels)
        # a new gallery is private (0600): embeddings are biometric data
        write_atomic(path, buffer.getvalue(), new_mode=0o600)
        return given

    @classmethod
    def load(cls, path: str | os.PathLike, verifier: FaceVerifier, *,
             accept_other_export: bool = False) -> "Gallery":
        """Read a gallery saved by :meth:`save`, for use with ``verifier``.

        Args:
            accept_other_export: accept a gallery enrolled with another export
                of the same trained weights (same ``model_id``, other precision
                or runtime, e.g. the TFLite int8 file instead of the ONNX one),
                for identification and removal only: the gallery keeps its
                export (:attr:`export`, written back by :meth:`save`) and
                refuses enrolment (:meth:`check_can_enroll`).  Off by default:
                their embeddings differ slightly, so distances near τ may change.

        Raises:
            TypeError: ``verifier`` is neither a FaceVerifier nor an Encoder.
            GalleryError: the file is absent, corrupt, or of an unknown version.
            GalleryModelMismatchError: it was enrolled with another model.
            OtherExportError: (a GalleryModelMismatchError) it was enrolled with
                another export of this model and ``accept_other_export`` is off.
        """
        _check_verifier(verifier)
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"gallery {path} not found; enroll people first "
                               "(Gallery.enroll + save, or `apps/door_lock.py enroll`)")
        header, emb, labels = _read(path)
        info = verifier.info
        if header["model_id"] != info.model_id:
            raise GalleryModelMismatchError(
                f"gallery {path} was enrolled with model {header['model_id']!r}, but the loaded "
                f"model is {info.model_id!r} ({verifier.model.path}); embeddings of different "
                "models are not comparable: enroll the people again with this model")
        ours = _export_of(verifier)
        theirs = (header.get("precision"), header.get("backend"))
        if ours != theirs and not accept_other_export:
            raise OtherExportError(
                f"gallery {path} was enrolled with the {_describe(theirs)} export of "
                f"{info.model_id!r}, the loaded model is its {_describe(ours)} export; "
                "re-enroll, or pass accept_other_export=True to identify with it despite small "
                "distance changes (enrolling into it stays refused)",
                path=str(path), model_id=info.model_id, enrolled=theirs, loaded=ours)
        if emb.shape[1] != verifier.embedding_size:
            raise GalleryModelMismatchError(
                f"gallery {path} holds {emb.shape[1]}-d embeddings, the model gives "
                f"{verifier.embedding_size}-d")
        gallery = cls(verifier)
        gallery._export = theirs
        for i, name in enumerate(header["names"]):
            gallery._people[name] = np.ascontiguousarray(emb[labels == i])
        return gallery


def _read(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Header, embeddings and labels of a gallery file, all checked."""
    def bad(why: str) -> GalleryError:
        return GalleryError(f"gallery {path} is unreadable: {why}; restore a backup or "
                            "enroll the people again")

    # numpy's own messages are not repeated: for data it cannot parse they advise loading
    # the file "unsafely" with allow_pickle, which a biometric file must never be
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError as exc:
        if exc.errno is not None:  # the file system's error (permissions, I/O), not numpy's
            raise GalleryError(f"gallery {path} cannot be read: {exc.strerror}") from None
        raise bad("it is not a gallery file, or a corrupt one (not a NumPy .npz "
                  "archive)") from None
    except (ValueError, EOFError, zipfile.BadZipFile):
        # junk, an empty or truncated file, or a pickle: numpy cannot tell them apart
        raise bad("it is not a gallery file, or a corrupt one (not a NumPy .npz "
                  "archive)") from None
    try:
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise bad(f"it holds a single {type(loaded).__name__}, not a gallery archive")
        with loaded as z:
            missing = {"header", "embeddings", "labels"} - set(z.files)
            if missing:
                raise bad(f"missing {sorted(missing)}")
            header_text = str(z["header"][()])
            emb, labels = z["embeddings"], z["labels"]
    except GalleryError:
        raise
    except ValueError:  # a damaged array, or an object array that allow_pickle=False refuses
        raise bad("an array in it is corrupt or holds Python objects, which a gallery "
                  "file never does") from None
    except Exception as exc:  # noqa: BLE001 - zlib.error, an encrypted or unknown-method
        # member (RuntimeError, NotImplementedError), OSError, EOFError, BadZipFile, ...
        raise bad(f"its archive is corrupt ({type(exc).__name__})") from None
    try:
        header = json.loads(header_text)
    except json.JSONDecodeError as exc:
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != GALLERY_FORMAT:
        raise bad("it is not an edge-sdk gallery")
    if header.get("version") != GALLERY_VERSION:
        raise GalleryError(f"gallery {path} has format version {header.get('version')!r}; "
                           f"this SDK reads version {GALLERY_VERSION}: upgrade the SDK or "
                           "enroll the people again")
    names = header.get("names")
    if not isinstance(header.get("model_id"), str) or not isinstance(names, list) \
            or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise bad("header fields model_id/names are invalid")
    # names as enrol() makes them: otherwise a person could be neither found nor removed
    # (a file written before names were NFC-normalised is normalised here)
    for n in names:
        try:
            valid = _check_name(n) == unicodedata.normalize("NFC", n)
        except GalleryError:
            valid = False
        if not valid:
            raise bad(f"name {n!r} is not one enrol() makes")
    names = [_key(n) for n in names]
    if len(set(names)) != len(names):
        raise bad("two names are the same person's once Unicode-normalised")
    header["names"] = names
    if emb.dtype != np.float32 or emb.ndim != 2 or labels.ndim != 1 \
            or labels.dtype.kind not in "iu" or len(labels) != len(emb):
        raise bad(f"embeddings {emb.dtype}{emb.shape} / labels {labels.dtype}{labels.shape} "
                  "do not fit together")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise bad("labels point outside the name list")
    if set(np.unique(labels).tolist()) != set(range(len(names))):
        raise bad("a name has no embeddings")
    if not np.all(np.isfinite(emb)):
        raise bad("embeddings contain NaN or infinity")
    # τ is a distance between unit vectors; zero or scaled rows could match any probe
    if not unit_rows(emb):
        norms = np.linalg.norm(emb, axis=1)
        raise bad(f"embeddings are not unit vectors (norms {norms.min():.4g}.."
                  f"{norms.max():.4g})")
    return header, emb, labels


def _check_verifier(verifier: object) -> None:
    if not isinstance(verifier, (FaceVerifier, Encoder)):
        raise TypeError(f"verifier must be a FaceVerifier or an Encoder, "
                        f"got {type(verifier).__name__}")


def _export_of(verifier: FaceVerifier | Encoder) -> tuple[str | None, str | None]:
    """``(precision, backend)`` of the encoder export ``verifier`` runs."""
    return verifier.info.precision, verifier.model.backend


def _describe(export: tuple[str | None, str | None]) -> str:
    """``("int8", "tflite")`` -> ``"int8 tflite"``, for messages."""
    return " ".join(str(x) for x in export)


