"""What an app's ``--source`` names: a camera, a video file, an image or a folder of images.

One reading for apps/door_lock.py and apps/stylize_camera.py, so the same ``--source``
means the same thing to both.
"""

from __future__ import annotations

from pathlib import Path

#: Image files the apps read (cv2.imread).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
#: Image files stylize_camera writes (cv2.imwrite): not .pgm, which holds grey images only.
OUT_IMAGE_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".pgm")
#: Kinds of --source (:func:`source_kind`).
CAMERA, VIDEO, FOLDER, IMAGE = "camera", "video", "folder", "image"


class SourceError(ValueError):
    """The --source names nothing the app can read (an app's error, not the SDK's)."""


def source_kind(source: str, *, folders: bool = True) -> tuple[str, int | str]:
    """``(CAMERA, index)`` for ``N``, ``camera`` or ``camera:N``; ``(FOLDER, source)`` for
    a folder (when ``folders``; it is checked first, so a folder named ``0`` is one); else
    ``(IMAGE, source)`` or ``(VIDEO, source)`` for an existing file, by its suffix.

    Opens nothing, but a file must exist (so OpenCV never warns about a missing one).

    Raises:
        SourceError: none of those.
    """
    if folders and Path(source).is_dir():
        return FOLDER, source
    text = source.lower()
    if text == "camera" or text.startswith("camera:"):
        index = source.partition(":")[2] or "0"
        if not index.isdigit():
            raise SourceError(f"--source {source!r}: a camera is camera:INDEX, e.g. camera:1")
        return CAMERA, int(index)
    if source.isdigit():
        return CAMERA, int(source)
    path = Path(source)
    if not folders and path.is_dir():
        raise SourceError(f"--source {source!r} is a folder; this app reads a camera index, "
                          "a video file or one image")
    if not path.is_file():
        kinds = "a camera index, a video file, an image nor a folder of images" if folders \
            else "a camera index nor an existing file"
        raise SourceError(f"--source {source!r} is neither {kinds}")
    return (IMAGE if path.suffix.lower() in IMAGE_SUFFIXES else VIDEO), source
