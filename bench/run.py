"""One benchmark run: every model x backend x precision x thread count, the face
pipeline, the peers; results as one dict (schema in ``bench.report``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from sdk.errors import BackendUnavailableError, SdkError
from sdk.paths import MODELS_DIR, SHARED_DIR

from .measure import Case, measure
from .models import discover, meta_of
from .pipeline import face_pipeline
from .report import SCHEMA, _pct, machine_info, peer_ratios

FACE_PHOTOS = SHARED_DIR / "data" / "faces" / "deepface-pairs"
CONTENT_PHOTO = SHARED_DIR / "data" / "style" / "content-samples" / "chicago.jpg"


@dataclass(frozen=True)
class BenchOptions:
    """Options of :func:`run_benchmark`.

    Attributes:
        models_dir: released models (``None``: only ``models``/peers).
        models: extra model files (``--model``).
        peers_dir: third-party peers to measure in the same run (``None``: none).
        runs, warmup: timed and untimed inferences per case.
        threads: CPU thread counts to measure each CPU backend with
            (TensorRT runs once, on the GPU).
        frame: (H, W) for dynamic image inputs (stylizers).
        pipeline_photos: face photos for the detect/align/embed split (0: skip).
        face_photos: folder of face photos; content_photo: an image for other models.
        yunet: YuNet file (``None``: found as the SDK finds it).
        isolate: measure each case in a fresh process (``bench.worker``) so memory
            and runtime state of one case do not leak into the next.
    """

    models_dir: Path | None = MODELS_DIR
    models: tuple[Path, ...] = ()
    peers_dir: Path | None = None
    runs: int = 100
    warmup: int = 10
    threads: tuple[int, ...] = (1,)
    frame: tuple[int, int] = (256, 256)
    pipeline_photos: int = 20
    face_photos: Path = FACE_PHOTOS
    content_photo: Path = CONTENT_PHOTO
    yunet: Path | None = None
    isolate: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"threads must be positive, got {self.threads}")
        if self.pipeline_photos < 0:
            raise ValueError("pipeline_photos must be >= 0")


def _photos(folder: Path, n: int) -> list[Path]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files[:n]


def _first_face(photos: Sequence[Path], yunet: Path | None):
    """An aligned 112x112 face (BGR) from the first photo with one, to feed face encoders."""
    import cv2

    from sdk.faces import FaceDetector, align_face

    with FaceDetector.create(yunet) as det:
        for p in photos:
            img = cv2.imread(str(p))
            if img is None:
                continue
            faces = det.detect(img)
            if faces:
                return align_face(img, faces[0].landmarks)
    return None


def face_input(photos: Sequence[Path], yunet: Path | None):
    """``(face, note)``: :func:`_first_face`, and when there is no face, why not.

    Face encoders without a face run on noise; the note goes into their rows
    (``input_note``) so that the tables say so, not only the JSON's ``input_made_from``.
    """
    if not photos:
        return None, "no face photos: image input is noise"
    try:
        face = _first_face(photos, yunet)
    except SdkError as exc:
        return None, f"face detection failed ({type(exc).__name__}: {exc}): image input is noise"
    if face is None:
        return None, f"no face found in {len(photos)} photo(s): image input is noise"
    return face, None


def _error_text(exc: Exception) -> str:
    """``"ClassName: message"`` of an error, the class named once."""
    return f"{type(exc).__name__}: {exc}"


def run_benchmark(options: BenchOptions, command: str = "",
                  log: Callable[[str], None] = print) -> dict:
    """Measure everything ``options`` selects; unusable models go to ``skipped``
    with the reason (e.g. TensorRT engines on a machine without TensorRT)."""
    import cv2

    cases, skipped = discover(options.models_dir, options.models, options.peers_dir)
    face_photos = _photos(options.face_photos, max(options.pipeline_photos, 1))
    face = content = face_note = None
    if not options.isolate:  # (isolated workers prepare their own inputs)
        # no face: encoders get noise input, noted in each of their rows
        face, face_note = face_input(face_photos, options.yunet)
        if options.content_photo.is_file():
            content = cv2.imread(str(options.content_photo))

    results = {"schema": SCHEMA, "command": command, "machine": machine_info(),
               "settings": {"runs": options.runs, "warmup": options.warmup,
                            "threads": list(options.threads), "frame": list(options.frame),
                            "pipeline_photos": options.pipeline_photos},
               "models": [], "pipeline": [], "skipped": skipped}
    encoders = []
    for path, role in cases:
        is_gpu = path.suffix.lower() in (".engine", ".trt", ".plan")
        for threads in ((None,) if is_gpu else options.threads):
            case = Case(path, role, threads)
            try:
                if options.isolate:
                    r = _measure_in_process(case, options, face_photos)
                else:
                    r = measure(case, runs=options.runs, warmup=options.warmup,
                                frame=options.frame,
                                meta_of=_meta_photo(case, face, content, face_note))
            except BackendUnavailableError as exc:
                # the runtime is missing whatever the thread count: the others fail alike
                skipped.append({"path": str(path), "threads": threads,
                                "reason": f"backend unavailable: {exc}"})
                break
            except (SdkError, ValueError) as exc:
                # one thread count failing says nothing of the others: measure them
                skipped.append({"path": str(path), "threads": threads,
                                "reason": _error_text(exc)})
                continue
            results["models"].append(r)
            where = "gpu" if threads is None else f"t{threads}"
            log(f"  {r['name']} [{r['backend']} {r['precision']} {where}]: median "
                f"{r['latency_ms']['median']:.2f} ms, p90 {_pct(r['latency_ms'], 'p90')} ms")
            if r["kind"] == "face_encoder" and (path, threads) not in encoders:
                encoders.append((path, threads))

    if options.pipeline_photos and encoders:
        photos = face_photos[:options.pipeline_photos]
        if not photos:
            skipped.append({"path": str(options.face_photos),
                            "reason": "face photos absent: no pipeline timing"})
            encoders = []
        for path, threads in encoders:
            try:
                from sdk import load_model

                with load_model(path) as m:
                    meta = meta_of(path, m)
                # a GPU encoder's detector gets the first CPU budget measured, as the rows
                # it is compared with
                p = face_pipeline(path, meta, photos, threads=threads, yunet=options.yunet,
                                  warmup=options.warmup, detector_threads=options.threads[0])
            except (SdkError, ValueError) as exc:
                skipped.append({"path": f"pipeline: {path}", "threads": threads,
                                "reason": _error_text(exc)})
                continue
            results["pipeline"].append(p)
            where = "gpu" if threads is None else f"t{threads}"
            log(f"  pipeline {p['encoder']} {where}: detect {p['detect_ms']['median']:.1f} "
                f"+ align {p['align_ms']['median']:.2f} + quality {p['quality_ms']['median']:.2f} "
                f"+ embed {p['embed_ms']['median']:.2f} ms")
    for r in results["models"]:
        r["vs_peers"] = peer_ratios(r, results["models"])
    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") \
        else None
    return results


def _meta_photo(case: Case, face, content, face_note: str | None = None):
    """meta_of that also picks the input photo by the model's kind (read from the
    contract once the model is open): an aligned face for face encoders, a scene otherwise.
    A face encoder without a face gets ``face_note`` (why) as its row's ``input_note``."""

    def meta(path: Path, model):
        m = meta_of(path, model)
        case.photo = face if m.kind == "face_encoder" else content
        if m.kind == "face_encoder" and face is None and face_note:
            case.extra["input_note"] = face_note
        return m

    return meta


def _measure_in_process(case: Case, options: BenchOptions, face_photos: Sequence[Path]) -> dict:
    """Run one case in ``python -m bench.worker`` and return its result."""
    import json
    import subprocess
    import sys

    from sdk.errors import ModelError

    from .worker import MARK

    spec = {"path": str(case.path), "role": case.role, "threads": case.threads,
            "runs": options.runs, "warmup": options.warmup, "frame": list(options.frame),
            "face_photo": [str(p) for p in face_photos],
            "content_photo": str(options.content_photo) if options.content_photo.is_file()
            else None,
            "yunet": str(options.yunet) if options.yunet else None}
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(repo)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(spec)],
                          capture_output=True, text=True, cwd=repo, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"benchmark worker exited with {proc.returncode}: " + " | ".join(tail))
    out = json.loads(lines[-1][len(MARK):])
    if "error" in out:
        raise _worker_error(out)
    return out


def _worker_error(out: dict) -> Exception:
    """The worker's error as an exception of the same class where that is one the caller
    handles, so that the skip reason names the class once (not "SdkError: SdkError: ...")."""
    from sdk import errors

    if out.get("backend_unavailable"):
        return BackendUnavailableError(out["message"])
    cls = getattr(errors, out["error"], None)
    if isinstance(cls, type) and issubclass(cls, SdkError) and not issubclass(cls, KeyError):
        try:
            return cls(out["message"])
        except TypeError:  # a class with required fields besides the message
            pass
    if out["error"] == "ValueError":
        return ValueError(out["message"])
    return SdkError(f"{out['error']}: {out['message']}")  # e.g. a runtime's RuntimeError
