"""Stylise a camera stream, a video file or an image with a released style model.

    python apps/stylize_camera.py --style models/style/udnie_int8.tflite --source 0 --out out.mp4
    python apps/stylize_camera.py --style models/style/wave_fp32.onnx --source clip.mp4 --out wave.mp4
    python apps/stylize_camera.py --style models/style/udnie_int8.tflite --source photo.jpg --out g.jpg

``--source`` is a camera index (``0``, ``camera:1``), a video file or an image file.
Video and camera streams run the stylizer in video mode (temporal smoothing) and
draw the frame rate of the stylizer in the corner (``--no-overlay`` turns it off);
an image is written without it unless ``--overlay`` asks for it.  A camera or
video writes a video (``.mp4``, ``.avi``; a video at its own frame rate, a camera at
the rate frames were stylised, measured over the first 10; an odd width or height is
padded by one repeated row/column, since OpenCV's video writers would drop the last
one), an image writes an image (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``,
``.tif``, ``.tiff``, ``.ppm``).  A video that gives fewer
frames than it declares ends with a warning.

Exit status: 0 done, 1 the stylizer ran but the output could not be written or
the source gave no frames, 2 bad input (arguments, source, model), with a
one-line message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.sources import (CAMERA, IMAGE, IMAGE_SUFFIXES, OUT_IMAGE_SUFFIXES,  # noqa: E402
                          VIDEO, SourceError, source_kind)
from sdk import Stylizer, StylizerOptions  # noqa: E402
from sdk.errors import SdkError  # noqa: E402

#: output container -> the fourcc OpenCV's writer is given for it
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}

PROG = "stylize_camera"  # message prefix, as door_lock's, whatever sys.argv[0] is


class UsageError(ValueError):
    """Bad --out, or a --source OpenCV cannot read: one line, exit status 2 (the app's
    error, not the SDK's, like apps.sources.SourceError)."""


def draw_fps(frame: np.ndarray, fps: float, label: str) -> None:
    """Write ``label  NN.N FPS`` in the top-left corner (in place), readable on any background."""
    text = f"{label}  {fps:5.1f} FPS"
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(frame, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thickness,
                    cv2.LINE_AA)


def check_out(out: str, kind: str) -> None:
    """Refuse an ``--out`` whose extension does not fit the source, before any work."""
    suffix = Path(out).suffix.lower()
    wanted = OUT_IMAGE_SUFFIXES if kind == IMAGE else tuple(VIDEO_FOURCC)
    if suffix not in wanted:
        # a file without an image suffix is read as a video: say so, it may be neither
        read_as = ("" if kind != VIDEO else
                   f" (--source is read as a video: its suffix is none of "
                   f"{'/'.join(IMAGE_SUFFIXES)})")
        raise UsageError(
            f"--out {out!r} does not fit {'an image' if kind == IMAGE else 'a ' + kind} "
            f"source{read_as}: an image source writes {'/'.join(OUT_IMAGE_SUFFIXES)}, a "
            f"camera or video source writes {'/'.join(VIDEO_FOURCC)}")
    folder = Path(out).resolve().parent
    if not folder.is_dir():
        raise UsageError(f"--out {out!r}: the folder {str(folder)!r} does not exist")


#: frames a camera recording holds back to measure the rate it is written at
CAMERA_RATE_FRAMES = 10


#: the most frames per second a camera recording is written at.  Frames that come faster
#: come from no camera (a file or a virtual device read as fast as it goes), and OpenCV's
#: AVI writer loses frames above 1000 FPS (measured: 9 of 15 kept at 1012 FPS).
MAX_CAMERA_FPS = 240.0


def video_rate(cap: cv2.VideoCapture, kind: str, held: list[tuple[float, np.ndarray]]) -> float:
    """Frames per second to write: a camera's measured over the ``held`` (time, frame)
    pairs (at most ``MAX_CAMERA_FPS``), a video file's own (25 when it does not say)."""
    if kind == CAMERA and len(held) >= 2 and held[-1][0] > held[0][0]:
        return min((len(held) - 1) / (held[-1][0] - held[0][0]), MAX_CAMERA_FPS)
    return cap.get(cv2.CAP_PROP_FPS) or 25.0


def even_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` padded to an even width and height by repeating its last row/column.

    OpenCV's video writers (every container and codec tried: mp4v, MJPG, FFV1, PNG)
    silently drop the last row and column of an odd-sized frame; one repeated edge
    pixel keeps the whole picture instead.
    """
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class VideoOut:
    """OpenCV's video writer for frames of one size, padded to even sides (even_frame)."""

    def __init__(self, writer: cv2.VideoWriter) -> None:
        self._writer = writer

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(even_frame(frame))

    def release(self) -> None:
        self._writer.release()


def open_writer(out: str, rate: float, shape: tuple[int, ...]) -> VideoOut | None:
    """An open writer for frames of ``shape``, or None after printing why not."""
    fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[Path(out).suffix.lower()])
    h, w = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    writer = cv2.VideoWriter(out, fourcc, rate, (w, h))
    if not writer.isOpened():
        print(f"{PROG}: error: cannot write video {out}", file=sys.stderr)
        return None
    return VideoOut(writer)


def open_source(kind: str, ref: int | str) -> tuple[cv2.VideoCapture | None, np.ndarray | None]:
    """(capture, None) for a camera/video, (None, image) for an image file."""
    if kind == IMAGE:
        image = cv2.imread(str(ref), cv2.IMREAD_COLOR)
        if image is None:
            raise UsageError(f"--source {ref!r}: not a readable image")
        return None, image
    cap = cv2.VideoCapture(ref)
    if not cap.isOpened():
        cap.release()
        what = f"camera {ref}" if kind == CAMERA else f"video {ref!r}"
        raise UsageError(f"--source: cannot open {what} with OpenCV")
    return cap, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", required=True, help="stylizer model (.tflite/.onnx/.engine)")
    parser.add_argument("--source", required=True,
                        help="camera index (N or camera:N), video file or image file")
    parser.add_argument("--out", required=True,
                        help=f"output: a video ({'/'.join(VIDEO_FOURCC)}) for a camera or video "
                             f"source, an image ({'/'.join(IMAGE_SUFFIXES)}) for an image")
    parser.add_argument("--max-side", type=int, default=None,
                        help="shrink frames to this longest side before the network (speed)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="video: temporal smoothing in [0, 1) (0 = off)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop after N frames (a camera runs until then or Ctrl-C)")
    parser.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=None,
                        help="draw the stylizer's FPS in the corner (default: on for a camera "
                             "or video, off for an image)")
    args = parser.parse_args(argv)

    # OpenCV would otherwise log its own warning next to our one-line message
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        kind, ref = source_kind(args.source, folders=False)  # a camera, video or image
        check_out(args.out, kind)
        cap, image = open_source(kind, ref)
    except (SourceError, UsageError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    overlay = kind != IMAGE if args.overlay is None else args.overlay
    try:
        options = StylizerOptions(model_path=args.style, threads=args.threads,
                                  max_side=args.max_side,
                                  running_mode="image" if kind == IMAGE else "video",
                                  smoothing=args.smoothing)
        stylizer = Stylizer.create_from_options(options)
    except (SdkError, ValueError) as exc:  # bad options as well as bad files: one line
        if cap is not None:
            cap.release()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    with stylizer:
        label = f"{stylizer.style} ({Path(args.style).suffix[1:]})"
        if image is not None:
            start = time.perf_counter()
            try:
                out = stylizer(image)
            except SdkError as exc:  # the runtime failed on this input: one line, as above
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return 1
            fps = 1.0 / max(time.perf_counter() - start, 1e-6)
            if overlay:
                draw_fps(out, fps, label)
            if not cv2.imwrite(args.out, out):
                print(f"{PROG}: error: cannot write {args.out}", file=sys.stderr)
                return 1
            print(f"{args.out}: {out.shape[1]}x{out.shape[0]}, {1000 / fps:.1f} ms")
            return 0

        writer = None
        fps_avg = None
        n = 0
        # a file declares its frame count: fewer read means a cut or damaged file, which
        # otherwise ends like a complete one (containers may only estimate it: a warning)
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == VIDEO else 0
        interrupted = False
        pending: list[tuple[float, np.ndarray]] = []
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
                if overlay:
                    draw_fps(out, fps_avg, label)
                n += 1
                if writer is None and kind == CAMERA and len(pending) < CAMERA_RATE_FRAMES:
                    # a camera's frames come at the stylizer's pace, not its nominal rate:
                    # the file's rate is measured over the first frames (held until then)
                    pending.append((time.perf_counter(), out))
                    continue
                if writer is None:
                    writer = open_writer(args.out, video_rate(cap, kind, pending), out.shape)
                    if writer is None:
                        pending.clear()
                        return 1
                for _, held in pending:
                    writer.write(held)
                pending.clear()
                writer.write(out)
        except KeyboardInterrupt:
            interrupted = True
        except SdkError as exc:  # e.g. an InferenceError mid-stream: what was written stays
            print(f"{PROG}: error: frame {n}: {exc}", file=sys.stderr)
            return 1
        finally:
            if pending and writer is None:  # a short camera run: its frames are still held
                writer = open_writer(args.out, video_rate(cap, kind, pending), pending[0][1].shape)
                if writer is not None:
                    for _, held in pending:
                        writer.write(held)
            cap.release()
            if writer is not None:
                writer.release()
        if n and writer is None:  # the held frames could not be written (said above)
            return 1
        if n == 0:
            print(f"{PROG}: error: the source gave no frames", file=sys.stderr)
            return 1
        wanted = declared if args.max_frames is None else min(declared, args.max_frames)
        if n < wanted and not interrupted:
            print(f"{PROG}: warning: {n} of the {declared} frames the video declares were "
                  "read: it may be cut short or damaged", file=sys.stderr)
        print(f"{args.out}: {n} frames, {fps_avg:.1f} FPS (stylizer only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
