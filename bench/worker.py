"""Measure one case in a fresh process: ``python -m bench.worker '<json>'``.

Why a process per case: memory freed by one model stays in the allocator's
pools and hides the next model's peak, and runtimes keep global state (thread
pools, XNNPACK caches) that would make later cases look cheaper.  The runtime
package is imported (for an engine: CUDA's primary context and a TensorRT runtime
created) and the input photo prepared *before* the memory baseline, so the peak-RSS
figure is what loading and running the model costs.

Prints one JSON line: the result dict, or ``{"error": class name, "message": ...}``.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

MARK = "BENCH_RESULT "


def _preimport(suffix: str) -> None:
    """Import the runtime the model will use, so its import is outside the timings."""
    suffix = suffix.lower()
    if suffix == ".onnx":
        import onnxruntime  # noqa: F401
    elif suffix == ".tflite":
        from sdk.backends.tflite import _import_interpreter

        _import_interpreter(None)
    elif suffix in (".engine", ".trt", ".plan"):
        from sdk.backends.tensorrt import _import_runtime, primary_context, trt_logger

        trt, cuda = _import_runtime()
        # CUDA's context and TensorRT's runtime libraries cost the same for every engine:
        # set them up before the baseline, so the peak RSS is the engine's own (the
        # backend pushes the same retained primary context and shares the one logger)
        ctx = primary_context(cuda, 0)
        ctx.push()
        try:
            _KEEP.append(trt.Runtime(trt_logger(trt)))
        finally:
            ctx.pop()


#: What _preimport set up, alive until the process ends.
_KEEP: list = []


def run_case(spec: dict) -> dict:
    """Measure the case ``spec`` describes (see ``bench.run._measure_in_process``)."""
    import cv2

    from .measure import Case, measure
    from .run import _meta_photo, face_input

    path = Path(spec["path"])
    _preimport(path.suffix)
    # no face (no detector, no face found): encoders run on noise and their rows say why
    face, face_note = face_input([Path(p) for p in spec.get("face_photo") or ()],
                                 Path(spec["yunet"]) if spec.get("yunet") else None)
    content = cv2.imread(spec["content_photo"]) if spec.get("content_photo") else None
    case = Case(path, spec["role"], spec["threads"])
    meta = _meta_photo(case, face, content, face_note)

    gc.collect()
    return measure(case, runs=int(spec["runs"]), warmup=int(spec["warmup"]),
                   frame=tuple(spec["frame"]), meta_of=meta)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    try:
        out = run_case(spec)
    except Exception as exc:  # reported to the parent, which records the case as skipped
        out = {"error": type(exc).__name__, "message": str(exc),
               "backend_unavailable": _is_unavailable(exc)}
    print(MARK + json.dumps(out), flush=True)
    return 0


def _is_unavailable(exc: Exception) -> bool:
    from sdk.errors import BackendUnavailableError

    return isinstance(exc, BackendUnavailableError)


if __name__ == "__main__":
    sys.exit(main())
