"""Where the SDK looks for files it needs but does not ship in the wheel.

Third-party files (the YuNet detector) and released models are found, in
order: an explicit argument, an environment variable, the repository's
``models/`` folder (``make setup`` fills it), then ``../shared`` beside the
repository (the development layout).  Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ModelNotFoundError

#: Root of the source checkout (``sdk/`` lives directly under it).
REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"
SHARED_DIR = Path(os.environ.get("EDGE_SDK_SHARED", REPO_ROOT.parent / "shared"))

YUNET_FILE = "yunet_s_640_640.onnx"


def find_file(explicit: str | os.PathLike | None, env: str, candidates: list[Path],
              what: str) -> Path:
    """The first existing file of: ``explicit``, ``$env``, ``candidates``.

    An explicit path or environment variable that does not exist is an error,
    never skipped over.
    """
    for given, origin in ((explicit, "argument"), (os.environ.get(env), f"${env}")):
        if given:
            p = Path(given)
            if not p.is_file():
                raise ModelNotFoundError(f"{what}: {p} (from {origin}) does not exist")
            return p
    for p in candidates:
        if p.is_file():
            return p
    tried = "\n  ".join(str(p) for p in candidates)
    raise ModelNotFoundError(f"{what} not found; pass a path, set ${env}, or run `make setup`. "
                             f"Looked in:\n  {tried}")


def yunet_path(explicit: str | os.PathLike | None = None) -> Path:
    """The YuNet face detector ONNX file."""
    return find_file(explicit, "EDGE_SDK_YUNET",
                     [MODELS_DIR / "yunet" / YUNET_FILE,
                      SHARED_DIR / "models" / "yunet" / YUNET_FILE],
                     "YuNet face detector")


def write_atomic(path: str | os.PathLike, data: bytes, *, new_mode: int | None = None) -> Path:
    """Replace the content of ``path`` with ``data`` atomically; returns the file written.

    A temporary file in the same folder (``os.replace`` is atomic only within one file
    system) is synced, renamed over the file, and the rename synced too: a crash leaves
    the old file or the new one, never a mix.  Through a symlink the file it points at is
    replaced (the link stays); a file already there keeps its permissions; a new one gets
    ``new_mode`` (default: 0o666 less the umask, as ``open`` gives).
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    # created by the kernel with the umask applied (0o666 & ~umask) or with new_mode: no
    # process-wide umask change, which other threads would see
    created = 0o666 if new_mode is None else new_mode
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, created)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path.parent}: no free temporary file name")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:  # the replaced file's permissions: a service may read it
                os.fchmod(f.fileno(), mode)
            elif new_mode is not None:
                os.fchmod(f.fileno(), new_mode)  # exactly, whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder; NTFS journals the rename itself
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the data itself is synced
    finally:
        os.close(fd)
