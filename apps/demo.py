"""The main job on embedded defaults: list the released models, then run the face
door-lock demo and the style demo on CPU with the models in models/.

    python apps/demo.py [--shared ../shared] [--out build/demo]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sdk  # noqa: E402  (after the path set-up, so the demo runs from a checkout)
from sdk import errors  # noqa: E402

SUFFIXES = (".tflite", ".onnx", ".engine", ".trt", ".plan")


def describe_models(models_dir: Path) -> int:
    """Print each released model's contract; returns how many were found."""
    found = 0
    for path in sorted(p for p in models_dir.rglob("*") if p.suffix in SUFFIXES):
        if "yunet" in path.parts:
            continue
        try:
            with sdk.load_model(path, threads=2) as m:
                i = m.info
                extra = ", ".join(f"{k}={v}" for k, v in i.output.items())
                print(f"  {path.relative_to(REPO)}  [{m.runtime}] {i.kind} '{i.name}' "
                      f"{i.precision} in={m.inputs[0].describe()} {extra} "
                      f"({path.stat().st_size / 1024:.0f} KiB)")
                found += 1
        except errors.SdkError as exc:
            print(f"  {path.relative_to(REPO)}: cannot load: {exc}")
    return found


def run_part(name: str, argv: list[str]) -> int:
    """Run apps/<name>.py's main(argv) if that app exists."""
    path = REPO / "apps" / f"{name}.py"
    if not path.is_file():
        print(f"({name} is not part of this build)")
        return 0
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    # OpenCV 5 warns on every YuNet load that its new graph engine ignores the target
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    # the docstring's first paragraph: its sentence spans two lines
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="third-party data folder (default: ../shared)")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "demo",
                    help="where the style demo writes its pictures (default: build/demo)")
    args = ap.parse_args(argv)
    print(f"edge-sdk {sdk.__version__}: released models in {REPO / 'models'}")
    if describe_models(REPO / "models") == 0:
        print("  (none yet)")
    status = 0
    print("\n== faces: door lock ==")
    status |= run_part("demo_faces", ["--shared", str(args.shared)])
    print("\n== style ==")
    status |= run_part("demo_style", ["--shared", str(args.shared),
                                      "--out", str(args.out / "style")])
    return status


if __name__ == "__main__":
    sys.exit(main())
