"""Where the SDK looks for files it needs but does not ship in the wheel.

Third-party files (the YuNet detector) and released models are found, in
order: an explicit argument, an environment variable, the repository's
``models/`` folder (``make setup`` fills it), then ``../shared`` beside the
repository (the development layout).  Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import os
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
