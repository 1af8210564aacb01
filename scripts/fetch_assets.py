"""Put the third-party files the SDK needs (the YuNet face detector) into models/yunet/.

Tries the upstream release with a pinned SHA-256 first; where the network is
closed (as on the build machines) it copies the same file from ../shared.
Never fails the set-up: it says what it did, and the SDK also finds the file
in ../shared by itself (see sdk/paths.py).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = {
    "yunet_s_640_640.onnx": {
        "sha256": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "url": "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/master/"
               "onnx/yunet_s_640_640.onnx",
        "shared": "models/yunet/yunet_s_640_640.onnx",
        "licence": "Apache-2.0 (ShiqiYu/libfacedetection.train)",
    },
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(name: str, spec: dict, dest_dir: Path, shared: Path, timeout: float) -> str:
    dest = dest_dir / name
    if dest.is_file() and _sha256(dest.read_bytes()) == spec["sha256"]:
        return f"{name}: already present"
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(spec["url"], timeout=timeout) as r:
            data = r.read()
        if _sha256(data) != spec["sha256"]:
            raise ValueError("checksum mismatch")
        dest.write_bytes(data)
        return f"{name}: downloaded ({spec['licence']})"
    except Exception as exc:  # no network here is normal: fall back to ../shared
        src = shared / spec["shared"]
        if src.is_file() and _sha256(src.read_bytes()) == spec["sha256"]:
            shutil.copyfile(src, dest)
            return f"{name}: download failed ({type(exc).__name__}); copied from {src}"
        return (f"{name}: download failed ({type(exc).__name__}) and {src} is absent; "
                "the face pipeline will need an explicit detector path")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--dest", type=Path, default=REPO / "models" / "yunet")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    for name, spec in ASSETS.items():
        print(fetch(name, spec, args.dest, args.shared, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
