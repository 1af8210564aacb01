"""Prepare what a lent GPU machine needs to run the TensorRT backend's CUDA code.

The lent machine (see docs/JETSON.md, "Checks on a lent GPU") has CUDA, nvcc and
Python 3.12 but no pycuda and no network. This downloads, from the package registry
only, into ``build/device/``:

* pycuda's source distribution (it has no wheels; it is built there, against that
  machine's CUDA), checked against the SHA-256 the registry publishes;
* wheels of its pure-Python/compiled dependencies for CPython 3.12 on manylinux x86-64.

``scripts/device_check.sh`` (run there, with ``build/device`` carried) builds pycuda and
runs the GPU tests. Usage: ``python scripts/device_bundle.py [--out build/device]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

PYCUDA = "2026.1"
DEPENDENCIES = ("pytools", "mako", "platformdirs")
PYTHON = "3.12"


def fetch_sdist(name: str, version: str, out: Path) -> Path:
    """Download ``name==version``'s sdist from PyPI and check its SHA-256."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as r:
        meta = json.load(r)
    files = meta.get("releases", {}).get(version)
    if files is None and meta["info"]["version"] == version:
        files = meta["urls"]
    sdists = [u for u in files or [] if u["packagetype"] == "sdist"]
    if not sdists:
        raise SystemExit(f"{name} {version}: no source distribution on PyPI")
    entry = sdists[0]
    target = out / entry["filename"]
    if not target.is_file():
        with urllib.request.urlopen(entry["url"], timeout=120) as r:
            target.write_bytes(r.read())
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != entry["digests"]["sha256"]:
        target.unlink()
        raise SystemExit(f"{target.name}: SHA-256 {digest} does not match PyPI's")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/device"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sdist = fetch_sdist("pycuda", PYCUDA, args.out)
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary", ":all:",
                    "--python-version", PYTHON, "--implementation", "cp",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(args.out), *DEPENDENCIES], check=True)
    files = sorted(p.name for p in args.out.iterdir())
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {len(files)} files, {size / 1e6:.1f} MB ({sdist.name} + wheels); "
          "carry it to the lent machine and run scripts/device_check.sh there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
