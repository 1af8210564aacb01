"""``python -m export jetson``: check ONNX graphs for TensorRT, build engines on a Jetson,
or prepare the bundle to build them there.

    python -m export jetson --check models/faces/face_encoder_fp32.onnx   # no TensorRT needed
    python -m export jetson --models models --precision fp16 int8 --out build/jetson
    python -m export jetson --manifest build/jetson/manifest.json     # on the device

Exit status: 0 done (or bundle prepared on a host without TensorRT), 1 a graph
failed the check or a build failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdk.errors import BackendUnavailableError, EngineBuildError, SdkError

from .check import DEFAULT_MAX_OPSET, CheckOptions, check_onnx, summarize


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m export jetson",
        description="Check ONNX graphs against TensorRT's ONNX parser and build TensorRT "
                    "engines (FP16/INT8) on the device, or prepare the bundle to build them there.")
    ap.add_argument("onnx_files", nargs="*", type=Path, metavar="ONNX",
                    help="ONNX graphs (with --check: the graphs to check)")
    ap.add_argument("--onnx", nargs="+", type=Path, default=[], metavar="ONNX",
                    help="ONNX graphs to build (same as positional)")
    ap.add_argument("--check", action="store_true",
                    help="only check the graphs for TensorRT's ONNX parser (no TensorRT needed)")
    ap.add_argument("--json", type=Path, help="with --check: also write the reports as JSON")
    ap.add_argument("--models", type=Path,
                    help="build every fp32 ONNX under this folder (e.g. models/)")
    ap.add_argument("--manifest", type=Path,
                    help="on the device: build what this prepared bundle's manifest lists")
    ap.add_argument("--precision", nargs="+", default=["fp16"], choices=["fp32", "fp16", "int8"],
                    help="engines to build per model (default: fp16)")
    ap.add_argument("--workspace", type=int, default=1024, metavar="MB",
                    help="builder workspace memory limit in MiB (default 1024)")
    ap.add_argument("--calib-images", type=Path, metavar="DIR",
                    help="real photos for INT8 calibration (default by model kind: "
                         "../shared/data/faces/celeba-299 for face encoders, "
                         "../shared/data/style/content-train for stylizers)")
    ap.add_argument("--calib-count", type=int, default=200, metavar="N",
                    help="calibration photos to use (default 200)")
    ap.add_argument("--shape", action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                    help="optimisation profile of one input, e.g. "
                         "input:1x256x256x3:1x480x640x3:1x720x1280x3 (repeatable)")
    ap.add_argument("--frame-sizes", nargs=3, metavar=("MIN", "OPT", "MAX"),
                    help="HxW range for dynamic image height/width (stylizers), "
                         "e.g. 256x256 480x640 720x1280")
    ap.add_argument("--batch", default="1:1:1", metavar="MIN:OPT:MAX",
                    help="range of a dynamic batch axis (default 1:1:1)")
    ap.add_argument("--max-opset", type=int, default=DEFAULT_MAX_OPSET,
                    help=f"highest opset the target TensorRT parses (default {DEFAULT_MAX_OPSET}, "
                         "TensorRT 10.0's documented limit)")
    ap.add_argument("--yunet", type=Path, help="YuNet ONNX for aligning face calibration photos")
    ap.add_argument("--out", type=Path, default=Path("build/jetson"),
                    help="bundle/engine folder (default build/jetson)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the bundle even where TensorRT is installed, build nothing")
    ap.add_argument("--force", action="store_true",
                    help="rebuild engines and recalibrate even when present")
    ap.add_argument("--device", type=int, default=0, help="GPU ordinal (default 0)")
    return ap


def _print_skipped(skipped: list[str]) -> None:
    """One line per ONNX file that --models left out, with the reason."""
    for line in skipped:
        print(f"skip {line}")


def _check(paths: list[Path], args, skipped: list[str]) -> int:
    if not paths:
        _print_skipped(skipped)
        print("--check needs ONNX files (or --models DIR)")
        return 2
    reports = [check_onnx(p, CheckOptions(max_opset=args.max_opset)) for p in paths]
    for r in reports:
        print(r.format())
        print()
    # next to the summary, not above pages of reports: "3 checked" must not read as "all"
    _print_skipped(skipped)
    print(summarize(reports))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    return 0 if all(r.ok for r in reports) else 1


def _options(args):
    from .build import JetsonOptions, parse_shape, parse_size

    shapes = {}
    for text in args.shape:
        r = parse_shape(text)
        shapes[r.input] = r
    try:
        batch = tuple(int(v) for v in args.batch.split(":"))
    except ValueError:
        raise EngineBuildError(f"--batch {args.batch!r}: expected MIN:OPT:MAX") from None
    if len(batch) != 3:
        raise EngineBuildError(f"--batch {args.batch!r}: expected MIN:OPT:MAX")
    frames = tuple(parse_size(s) for s in args.frame_sizes) if args.frame_sizes else None
    return JetsonOptions(precisions=tuple(dict.fromkeys(args.precision)),
                         workspace_mb=args.workspace, shapes=shapes, frame_sizes=frames,
                         batch=batch, calib_images=args.calib_images,
                         calib_count=args.calib_count, max_opset=args.max_opset,
                         yunet=args.yunet, force=args.force, device=args.device)


def _tensorrt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export jetson``; returns the exit status."""
    ap = _parser()
    args = ap.parse_args(argv)
    paths = list(args.onnx_files) + list(args.onnx)

    from . import build

    try:
        if args.check:
            skipped = []
            if args.models:
                found, skipped = build.find_onnx_models(args.models)
                paths += found
            return _check(paths, args, skipped)
        options = _options(args)
        if args.manifest:
            results = build.build_from_manifest(args.manifest, options)
            print(f"{len(results)} engine(s) in {args.manifest.parent / 'engines'}")
            return 0
        if args.models:
            found, skipped = build.find_onnx_models(args.models)
            _print_skipped(skipped)
            paths += found
        manifest, reports = build.prepare_bundle(paths, args.out, options)
        for r in reports:
            for w in r.warnings:
                print(f"{Path(r.path).name}: {w}")
        doc = json.loads(manifest.read_text())
        for m in doc["models"]:
            prof = "; ".join(f"{p['input']} {p['min']}..{p['opt']}..{p['max']}"
                             for p in m["profiles"])
            cal = (f", {m['calibration']['count']} calibration samples -> "
                   f"{m['calibration']['npy']}" if m["calibration"] else "")
            print(f"{m['name']}: {', '.join(m['precisions'])}; profile {prof}{cal}")
        print(f"bundle written: {manifest}")
        if args.prepare_only or not _tensorrt_importable():
            if not args.prepare_only:
                print("TensorRT is not installed on this machine, so no engine was built "
                      "(engines are specific to one GPU and TensorRT version: build them on "
                      "the Jetson).")
            print(f"Copy {args.out} (and this repository) to the device and run there:\n"
                  f"  {doc['command']}")
            return 0
        results = build.build_from_manifest(manifest, options)
        print(f"{len(results)} engine(s) in {manifest.parent / 'engines'}")
        return 0
    except (EngineBuildError, BackendUnavailableError) as exc:
        print(f"error: {exc}")
        return 1
    except SdkError as exc:  # e.g. a missing detector file for face calibration
        print(f"error: {type(exc).__name__}: {exc}")
        return 1
    except ValueError as exc:  # option validation (JetsonOptions)
        print(f"error: {exc}")
        return 2
