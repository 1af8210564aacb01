"""``python -m export seal FILE...``: seal model files exported before seals existed.

Every file the export stage writes now carries its own SHA-256 in its contract
(``sdk.contract.seal``), which ``sdk.load_model`` checks before a runtime parses
the file.  This command rewrites the contract of an older file with that seal and
checks that the sealed file computes exactly what the old one did (same outputs on
a fixed input; for a TensorRT engine, the same plan bytes).

A file whose seal no longer matches is refused, never re-sealed: that would bless
a damaged file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

import sdk
from export.formats import embed_tflite_metadata, set_onnx_metadata
from sdk.contract import ModelInfo, check_seal, pack_engine, unpack_engine
from sdk.errors import SdkError
from sdk.paths import write_atomic


def _reseal_tflite(path: Path, info: ModelInfo) -> None:
    write_atomic(path, embed_tflite_metadata(path.read_bytes(), info))


def _reseal_onnx(path: Path, info: ModelInfo) -> None:
    set_onnx_metadata(path, info)


def _reseal_engine(path: Path, info: ModelInfo) -> None:
    _, body = unpack_engine(path.read_bytes(), source=str(path))
    write_atomic(path, pack_engine(info, body))


#: file suffix -> how its contract is rewritten
RESEALERS: dict[str, Callable[[Path, ModelInfo], None]] = {
    ".tflite": _reseal_tflite,
    ".onnx": _reseal_onnx,
    ".engine": _reseal_engine,
    ".trt": _reseal_engine,
    ".plan": _reseal_engine,
}


def _probe(model: sdk.Model) -> list[np.ndarray]:
    """The model's outputs on a fixed input (dynamic dimensions taken as 1)."""
    rng = np.random.default_rng(0)
    inputs = []
    for spec in model.inputs:
        shape = [d if d else 1 for d in spec.shape]
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            lo, hi = np.iinfo(spec.dtype).min, np.iinfo(spec.dtype).max
            inputs.append(rng.integers(lo, hi, shape, endpoint=True).astype(spec.dtype))
        else:
            inputs.append(rng.uniform(0.0, 1.0, shape).astype(spec.dtype))
    return model.run(inputs, dequantize=False)


def seal_file(path: str | os.PathLike) -> str:
    """Seal one exported file in place; returns its SHA-256.  A file whose seal matches
    already is left as it is (a TFLite file would otherwise grow with each run).

    Raises:
        ModelFormatError: the file is sealed and damaged, or of an unknown type.
        MetadataError: it carries no SDK contract (nothing says what it is).
        RuntimeError: the sealed file does not compute what the old one did (the old
            file is put back).
    """
    path = Path(path)
    reseal = RESEALERS.get(path.suffix.lower())
    if reseal is None:
        raise sdk.errors.ModelFormatError(f"{path}: cannot seal a {path.suffix!r} file; "
                                          f"expected one of {sorted(RESEALERS)}")
    engine = reseal is _reseal_engine
    with tempfile.TemporaryDirectory() as tmp:
        backup = Path(tmp) / path.name
        shutil.copy2(path, backup)
        if engine:  # no TensorRT here, perhaps: the plan bytes must stay the same
            data = backup.read_bytes()
            sealed = check_seal(data, source=str(path))
            if sealed is not None:
                return sealed
            info, before = unpack_engine(data, source=str(path))
            before = bytes(before)
        else:
            with sdk.load_model(path, threads=1) as m:
                if m.file_sha256 is not None:
                    return m.file_sha256
                info, before = m.info, _probe(m)
        reseal(path, info)
        try:
            if engine:
                same = bytes(unpack_engine(path.read_bytes())[1]) == before
                digest = check_seal(path.read_bytes(), source=str(path))
            else:
                with sdk.load_model(path, threads=1) as m:
                    same = m.info == info and all(
                        np.array_equal(a, b) for a, b in zip(before, _probe(m)))
                    digest = m.file_sha256
            if not same or digest is None:
                raise RuntimeError(f"{path}: the sealed file does not compute what the old "
                                   "one did; the old file is kept")
        except BaseException:
            write_atomic(path, backup.read_bytes())
            raise
    return digest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export seal", description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help=".tflite, .onnx or engine files")
    args = ap.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            digest = seal_file(path)
        except (SdkError, RuntimeError, OSError) as exc:
            print(f"{path}: not sealed: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: sealed, sha256 {digest}")
    return 1 if failed else 0
