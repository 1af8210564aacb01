"""Which model files to benchmark, and what each one is (kind, precision, pre-processing)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sdk.contract import Preprocessing

from .measure import MODEL_SUFFIXES, ModelMeta

#: Third-party peers in ../shared/models/peers: they carry no SDK contract, so their
#: input conventions come from ../shared/README.md.
PEERS: dict[str, ModelMeta] = {
    "mobilefacenet.tflite": ModelMeta(
        "face_encoder", "fp32", Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
        "peer table"),
    "mobilefacenet_uint8.tflite": ModelMeta(
        "face_encoder", "int8 (uint8 I/O)",
        Preprocessing(channel_order="RGB", pixel_range=(0, 255)), "peer table"),
    "style_predict_quantized_256.tflite": ModelMeta(
        "style_predict", "int8 weights", Preprocessing(channel_order="RGB", pixel_range=(0, 1)),
        "peer table"),
    "style_transfer_quantized_384.tflite": ModelMeta(
        "stylizer", "int8 weights", Preprocessing(channel_order="RGB", pixel_range=(0, 1)),
        "peer table"),
    "style_transfer_f16_384.tflite": ModelMeta(
        "stylizer", "fp16 weights", Preprocessing(channel_order="RGB", pixel_range=(0, 1)),
        "peer table"),
}

#: Peer folders that hold no runnable model file, and why.
PEER_NOTES = {
    "johnson-fast-style": "TF.js raw weights, not a runnable model file (no TF.js runtime in the "
                          "SDK); convert it to ONNX/TFLite to include it",
}


def _guess_precision(path: Path) -> str:
    tokens = path.stem.lower().replace("-", "_").split("_")
    for token, precision in (("int8", "int8"), ("uint8", "int8"), ("quantized", "int8 weights"),
                             ("fp16", "fp16"), ("f16", "fp16"), ("fp32", "fp32")):
        if token in tokens:
            return precision
    return "unknown"


def meta_of(path: Path, model) -> ModelMeta:
    """The contract if the file has one, else the peer table, else the file name."""
    if model.has_info:
        info = model.info
        return ModelMeta(info.kind, info.precision, info.preprocessing, "contract")
    if path.name in PEERS:
        return PEERS[path.name]
    return ModelMeta("unknown", _guess_precision(path), None, "file name")


def discover(models_dir: Path | None, given: Sequence[Path], peers_dir: Path | None
             ) -> tuple[list[tuple[Path, str]], list[dict]]:
    """(path, role) pairs to measure, and skipped entries with reasons.

    ``models_dir``: released models (``models/faces``, ``models/style``, ...;
    the YuNet detector is measured inside the face pipeline instead).
    """
    found: list[tuple[Path, str]] = []
    skipped: list[dict] = []
    if models_dir is not None:
        if not models_dir.is_dir():
            skipped.append({"path": str(models_dir), "reason": "models folder absent"})
        else:
            for p in sorted(models_dir.rglob("*")):
                if p.suffix.lower() in MODEL_SUFFIXES and "yunet" not in p.parts:
                    found.append((p, "released"))
    for p in given:
        if not p.is_file():
            skipped.append({"path": str(p), "reason": "file not found"})
        else:
            found.append((p, "given"))
    if peers_dir is not None:
        if not peers_dir.is_dir():
            skipped.append({"path": str(peers_dir),
                            "reason": "peers folder absent (third-party files live in "
                                      "../shared/models/peers)"})
        else:
            for sub in sorted(d for d in peers_dir.iterdir() if d.is_dir()):
                files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES)
                if not files:
                    skipped.append({"path": str(sub),
                                    "reason": PEER_NOTES.get(sub.name, "no model file")})
                found += [(p, "peer") for p in files]
    # the same file given twice is measured once
    seen, unique = set(), []
    for p, role in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((p, role))
    return unique, skipped
