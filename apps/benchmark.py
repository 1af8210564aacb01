"""Benchmark every model x available backend x precision on this machine.

    python apps/benchmark.py [--models models/] [--model PATH ...] [--peers]
                             [--runs N] [--warmup N] [--threads 1 4]
                             [--json OUT] [--markdown OUT] [--plot OUT.png]

Per model: file size, load time, first-inference time, latency median/p90/p99
after warm-up, throughput and peak RSS; the face pipeline split into
detect / align / embed on real photos; optional peers from
../shared/models/peers in the same run.  CPU backends (ONNX Runtime, TFLite)
run everywhere; TensorRT engines are measured where TensorRT is installed
(a Jetson) and listed as skipped elsewhere.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import markdown, plot, table, write_json  # noqa: E402
from bench.run import BenchOptions, run_benchmark  # noqa: E402
from sdk.paths import MODELS_DIR, SHARED_DIR  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, got {text!r}") from None
    if min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"expected positive HEIGHTxWIDTH, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=MODELS_DIR,
                    help="released models folder (default: models/)")
    ap.add_argument("--no-released", action="store_true",
                    help="do not scan --models (measure only --model files / peers)")
    ap.add_argument("--model", type=Path, nargs="+", default=[], metavar="PATH",
                    help="extra model files to measure")
    ap.add_argument("--peers", action="store_true",
                    help="also measure the third-party peers in --peers-dir")
    ap.add_argument("--peers-dir", type=Path, default=SHARED_DIR / "models" / "peers")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per case (default 100)")
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed runs first, per case and per pipeline (default 10)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1],
                    help="CPU thread counts to measure (default 1)")
    ap.add_argument("--frame", type=_size, default=(256, 256), metavar="HxW",
                    help="size for dynamic image inputs, e.g. stylizers (default 256x256)")
    ap.add_argument("--pipeline-photos", type=int, default=20,
                    help="face photos for the detect/align/embed split (0: skip)")
    ap.add_argument("--face-photos", type=Path,
                    default=SHARED_DIR / "data" / "faces" / "deepface-pairs")
    ap.add_argument("--yunet", type=Path, help="YuNet ONNX (default: found like the SDK does)")
    ap.add_argument("--in-process", action="store_true",
                    help="measure all cases in this process (faster; peak memory then "
                         "under-reports after the first model)")
    ap.add_argument("--json", type=Path, help="write results as JSON")
    ap.add_argument("--markdown", type=Path, help="write results as Markdown")
    ap.add_argument("--plot", type=Path, help="write a PNG bar plot")
    args = ap.parse_args(argv)

    try:
        options = BenchOptions(
            models_dir=None if args.no_released else args.models, models=tuple(args.model),
            peers_dir=args.peers_dir if args.peers else None, runs=args.runs,
            warmup=args.warmup, threads=tuple(dict.fromkeys(args.threads)), frame=args.frame,
            pipeline_photos=args.pipeline_photos, face_photos=args.face_photos, yunet=args.yunet,
            isolate=not args.in_process)
    except ValueError as exc:
        ap.error(str(exc))
    command = "python apps/benchmark.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results = run_benchmark(options, command=command.strip())
    print()
    print(table(results))
    if args.json:
        print(f"JSON: {write_json(results, args.json)}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results))
        print(f"Markdown: {args.markdown}")
    if args.plot:
        print(f"plot: {plot(results, args.plot)}")
    if not results["models"]:
        print("no model could be measured (see 'skipped' above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
