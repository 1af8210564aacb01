"""The end-to-end face pipeline on real photos, timed per stage: detect / align / quality /
embed.

Stages are the SDK's own: YuNet through ``sdk.faces.FaceDetector``, the
5-point similarity warp ``sdk.faces.align_face`` to the encoder's input size,
the quality measurements the door and enrolment apply (``sdk.faces.quality``,
on the 112x112 crop), then the encoder's pre-processing and inference.  Reading the photo from disk
is outside the timings (a camera hands frames over in memory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

import sdk
from sdk.errors import NoFaceError

from .measure import ModelMeta, preprocess, summarize


def _encoder_size(model, layout: str) -> int:
    shape = model.inputs[0].shape
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    if h is None or w is None:
        return 112  # dynamic: the ArcFace template size
    if h != w:
        raise ValueError(f"face encoder input must be square, got {h}x{w}")
    return int(h)


def face_pipeline(encoder: Path, meta: ModelMeta, photos: Sequence[Path], *,
                  threads: int | None, yunet: Path | None, warmup: int = 2,
                  detector_threads: int | None = None) -> dict:
    """Time detect / align / embed for every photo (the largest face of each), after
    ``warmup`` untimed passes on the first photo with a face.

    The detector runs in OpenCV on the CPU with ``threads`` threads, or, for a GPU
    encoder (``threads`` None), ``detector_threads``: never OpenCV's default of every
    core, which would make a GPU row's detect time incomparable with the CPU rows'.

    Raises:
        NoFaceError: no face in any photo.
        SdkError: the encoder or the detector cannot be loaded.
    """
    import cv2

    from sdk.faces import ALIGNED_SIZE, FaceDetector, align_face
    from sdk.faces.quality import assess_face

    images = [img for img in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos)
              if img is not None]
    if not images:
        raise NoFaceError("no readable photos for the face pipeline")
    pre = meta.preprocessing or sdk.Preprocessing()
    previous_cv_threads = cv2.getNumThreads()
    cv_threads = threads if threads is not None else detector_threads
    if cv_threads is not None:
        cv2.setNumThreads(cv_threads)  # the detector runs in OpenCV: a stated thread budget
    try:
        with FaceDetector.create(yunet) as det, sdk.load_model(encoder, threads=threads) as model:
            size = _encoder_size(model, pre.layout)

            def once(img):
                t0 = time.perf_counter()
                faces = det.detect(img)
                t1 = time.perf_counter()
                if not faces:
                    return None
                crop = align_face(img, faces[0].landmarks, size=size)
                t2 = time.perf_counter()
                # measured on the 112x112 template crop, whatever the encoder's size
                assess_face(img, faces[0], crop if size == ALIGNED_SIZE else None)
                t3 = time.perf_counter()
                emb = model.run(preprocess(crop, pre))[0]
                t4 = time.perf_counter()
                if not np.all(np.isfinite(emb)):
                    raise ValueError(f"{encoder}: non-finite embedding")
                return ((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                        (t4 - t3) * 1e3)

            # first calls allocate and pick kernels: not counted.  Warmed on a photo with a
            # face, else the encoder's first (slow) call would be among the timed ones
            if warmup > 0:
                first = next((img for img in images if once(img) is not None), None)
                for _ in range(warmup - 1 if first is not None else 0):
                    once(first)
            rows = [r for r in (once(img) for img in images) if r is not None]
            detector_name = det.path.name
            backend, runtime = model.backend, model.runtime
    finally:
        cv2.setNumThreads(previous_cv_threads)
    if not rows:
        raise NoFaceError(f"no face found in any of {len(images)} photos")
    d, a, q, e = (list(col) for col in zip(*rows))
    return {
        "encoder": encoder.stem, "path": str(encoder), "backend": backend, "runtime": runtime,
        "precision": meta.precision, "threads": threads, "detector": detector_name,
        "detector_threads": cv_threads,
        "photos": len(images), "faces": len(rows), "aligned_size": size, "warmup": warmup,
        "detect_ms": summarize(d), "align_ms": summarize(a), "quality_ms": summarize(q),
        "embed_ms": summarize(e), "total_ms": summarize([sum(r) for r in rows]),
    }
