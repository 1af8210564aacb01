"""Stylise a camera stream, a video file or an image with a released style model.

    python apps/stylize_camera.py --style models/style/udnie_int8.tflite --source 0 --out out.mp4
    python apps/stylize_camera.py --style models/style/wave_fp32.onnx --source clip.mp4 --out wave.mp4
    python apps/stylize_camera.py --style models/style/udnie_int8.tflite --source photo.jpg --out g.jpg

``--source`` is a camera index (``0``, ``camera:1``), a video file or an image file.
Video and camera streams run the stylizer in video mode (temporal smoothing) and
draw the frame rate of the stylizer in the corner.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sdk import Stylizer, StylizerOptions  # noqa: E402
from sdk.errors import SdkError  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def draw_fps(frame: np.ndarray, fps: float, label: str) -> None:
    """Write ``label  NN.N FPS`` in the top-left corner (in place), readable on any background."""
    text = f"{label}  {fps:5.1f} FPS"
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(frame, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thickness,
                    cv2.LINE_AA)


def open_source(source: str) -> tuple[cv2.VideoCapture | None, np.ndarray | None]:
    """(capture, None) for a camera/video, (None, image) for an image file."""
    if source.lower().startswith("camera"):
        source = source.partition(":")[2] or "0"
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    elif Path(source).suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(source, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read image {source}")
        return None, image
    else:
        if not Path(source).is_file():
            raise SystemExit(f"no such video file: {source}")
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise SystemExit(f"cannot open video source {source!r}")
    return cap, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", required=True, help="stylizer model (.tflite/.onnx/.engine)")
    parser.add_argument("--source", required=True, help="camera index, video file or image file")
    parser.add_argument("--out", required=True, help="output video (.mp4/.avi) or image file")
    parser.add_argument("--max-side", type=int, default=None,
                        help="shrink frames to this longest side before the network (speed)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="video: temporal smoothing in [0, 1) (0 = off)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop after N frames (a camera runs until then or Ctrl-C)")
    parser.add_argument("--no-overlay", action="store_true", help="do not draw the FPS")
    args = parser.parse_args(argv)

    cap, image = open_source(args.source)
    mode = "image" if image is not None else "video"
    try:
        options = StylizerOptions(model_path=args.style, threads=args.threads,
                                  max_side=args.max_side, running_mode=mode,
                                  smoothing=args.smoothing)
        stylizer = Stylizer.create_from_options(options)
    except (SdkError, ValueError) as exc:  # bad options as well as bad files: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with stylizer:
        label = f"{stylizer.style} ({Path(args.style).suffix[1:]})"
        if image is not None:
            start = time.perf_counter()
            out = stylizer(image)
            fps = 1.0 / (time.perf_counter() - start)
            if not args.no_overlay:
                draw_fps(out, fps, label)
            if not cv2.imwrite(args.out, out):
                print(f"error: cannot write {args.out}", file=sys.stderr)
                return 1
            print(f"{args.out}: {out.shape[1]}x{out.shape[0]}, {1000 / fps:.1f} ms")
            return 0

        writer = None
        fps_avg = None
        n = 0
        try:
            while args.max_frames is None or n < args.max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                start = time.perf_counter()
                out = stylizer(frame)
                inst = 1.0 / max(time.perf_counter() - start, 1e-6)
                # smoothed for display: a per-frame number is unreadable
                fps_avg = inst if fps_avg is None else 0.9 * fps_avg + 0.1 * inst
                if not args.no_overlay:
                    draw_fps(out, fps_avg, label)
                if writer is None:
                    rate = cap.get(cv2.CAP_PROP_FPS) or 25.0
                    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if args.out.endswith(".mp4") else "MJPG"))
                    writer = cv2.VideoWriter(args.out, fourcc, rate, (out.shape[1], out.shape[0]))
                    if not writer.isOpened():
                        print(f"error: cannot write video {args.out}", file=sys.stderr)
                        return 1
                writer.write(out)
                n += 1
        except KeyboardInterrupt:
            pass
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if n == 0:
            print("error: the source gave no frames", file=sys.stderr)
            return 1
        print(f"{args.out}: {n} frames, {fps_avg:.1f} FPS (stylizer only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
