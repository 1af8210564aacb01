"""Build TensorRT engines from the exported ONNX models (TensorRT 10 Python API),
or prepare the bundle a Jetson needs to build them itself.

Engines are tied to one TensorRT version and one GPU, so they are built on the
device.  The flow is the same everywhere:

1. :func:`prepare_bundle` (any host, no TensorRT): check every graph
   (:mod:`export.jetson.check`), copy the ONNX files, turn real calibration
   photos into model inputs (``.npy``), resolve the optimisation profiles and
   write ``manifest.json`` with the one-line build command.
2. :func:`build_from_manifest` (the device, TensorRT 10 + pycuda): for each
   model x precision parse the ONNX, configure the builder (workspace limit,
   FP16/INT8 flags after checking the GPU has them, the profile, an entropy
   calibrator whose cache is written once and reused), build, and write the
   engine with the SDK contract header (``sdk.contract.pack_engine``) that
   records the TensorRT version and GPU.  Engine file names carry the source
   hash, precision, build-settings hash, TensorRT version and GPU, so an
   existing engine is reused and a changed model or device gets a new one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sdk.contract import ModelInfo, TensorSpec, pack_engine
from sdk.errors import EngineBuildError, PrecisionUnavailableError
from sdk.paths import SHARED_DIR

from .calibrator import (CalibrationData, array_sha256, calibration_images, calibration_inputs,
                         list_images, make_entropy_calibrator, spatial_size)
from .check import DEFAULT_MAX_OPSET, CheckOptions, CheckReport, InputInfo, check_onnx

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
#: Upper bound on the calibration images stored in a bundle (uint8 bytes).
MAX_CALIBRATION_BYTES = 256 << 20
PRECISIONS = ("fp32", "fp16", "int8")

#: Real photos to calibrate each model kind on, when --calib-images is not given.
DEFAULT_CALIBRATION = {
    "face_encoder": SHARED_DIR / "data" / "faces" / "celeba-299",
    "stylizer": SHARED_DIR / "data" / "style" / "content-train",
}


# --- shapes and profiles --------------------------------------------------------


@dataclass(frozen=True)
class ShapeRange:
    """Min/opt/max shapes of one network input (one optimisation profile entry)."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise EngineBuildError(f"profile for {self.input!r}: min/opt/max ranks differ")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not 1 <= lo <= mid <= hi:
                raise EngineBuildError(f"profile for {self.input!r}: need 1 <= min <= opt <= max "
                                       f"on every axis, got {self.min} / {self.opt} / {self.max}")

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ShapeRange":
        return cls(str(d["input"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EngineBuildError(f"bad shape {text!r}: expected dims joined by 'x', "
                               "e.g. 1x256x256x3") from None
    return dims


def parse_shape(text: str) -> ShapeRange:
    """``NAME:MIN:OPT:MAX`` with shapes like ``1x256x256x3`` (``NAME:SHAPE`` = static)."""
    parts = text.rsplit(":", 3)
    if len(parts) == 4:
        return ShapeRange(parts[0], _dims(parts[1]), _dims(parts[2]), _dims(parts[3]))
    name, _, shape = text.rpartition(":")
    if not name:
        raise EngineBuildError(f"bad --shape {text!r}: expected NAME:MIN:OPT:MAX "
                               "(e.g. input:1x256x256x3:1x480x640x3:1x720x1280x3) or NAME:SHAPE")
    d = _dims(shape)
    return ShapeRange(name, d, d, d)


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (height, width)."""
    d = _dims(text)
    if len(d) != 2:
        raise EngineBuildError(f"bad frame size {text!r}: expected HEIGHTxWIDTH, e.g. 480x640")
    return d[0], d[1]


def resolve_profiles(inputs: Sequence[InputInfo], *, layout: str = "NHWC",
                     shapes: Mapping[str, ShapeRange] | None = None,
                     frame_sizes: Sequence[tuple[int, int]] | None = None,
                     batch: tuple[int, int, int] = (1, 1, 1)) -> list[ShapeRange]:
    """Min/opt/max shapes for every network input.

    Explicit ``shapes`` win; a dynamic batch axis takes ``batch``; dynamic
    spatial axes of a 4-D image input take ``frame_sizes`` (min, opt, max as
    (H, W)).  Any other dynamic axis without a given shape is an error, never a
    guess.
    """
    shapes = dict(shapes or {})
    known = {i.name for i in inputs}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise EngineBuildError(f"--shape names unknown input(s) {unknown}; the graph's inputs "
                               f"are {sorted(known)}")
    out = []
    for info in inputs:
        rank = len(info.shape)
        if info.name in shapes:
            r = shapes[info.name]
            if len(r.min) != rank:
                raise EngineBuildError(f"--shape for {info.name!r} has rank {len(r.min)}, the "
                                       f"input is {info.describe()}")
            for axis, d in enumerate(info.shape):
                if isinstance(d, int) and not (r.min[axis] == r.opt[axis] == r.max[axis] == d):
                    raise EngineBuildError(f"--shape for {info.name!r}: axis {axis} is static "
                                           f"({d}) in the graph")
            out.append(r)
            continue
        lo, mid, hi = ([d if isinstance(d, int) else None for d in info.shape] for _ in range(3))
        spatial = (1, 2) if layout == "NHWC" else (2, 3)
        for axis in info.dynamic_axes:
            if axis == 0:
                lo[0], mid[0], hi[0] = batch
            elif rank == 4 and axis in spatial and frame_sizes:
                k = spatial.index(axis)
                lo[axis], mid[axis], hi[axis] = (s[k] for s in frame_sizes)
            else:
                raise EngineBuildError(
                    f"input {info.describe()}: axis {axis} ({info.shape[axis]}) is dynamic and "
                    "no range was given; pass --frame-sizes MINxMIN OPTxOPT MAXxMAX for image "
                    f"height/width or --shape {info.name}:MIN:OPT:MAX")
        out.append(ShapeRange(info.name, tuple(lo), tuple(mid), tuple(hi)))
    return out


# --- precision and naming ---------------------------------------------------------


def precision_supported(precision: str, compute_capability: str) -> bool:
    """Whether the GPU has fast ``precision`` kernels.

    TensorRT 10.5 deprecated ``platform_has_fast_fp16/int8`` ("query CUDA
    directly"), so this is decided from the compute capability: fast FP16 on
    sm_53/60/62 and sm_70+; INT8 (DP4A or tensor cores) on sm_61 and sm_70+.
    Jetson Nano (5.3) and TX2 (6.2): FP16 yes, INT8 no; Xavier (7.2), Orin (8.7): both.
    """
    major, minor = (int(v) for v in compute_capability.split("."))
    if precision == "fp32":
        return True
    if precision == "fp16":
        return (major, minor) in ((5, 3), (6, 0), (6, 2)) or major >= 7
    if precision == "int8":
        return (major, minor) == (6, 1) or major >= 7
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def require_precision(precision: str, gpu: Mapping[str, str]) -> None:
    """Raise :class:`PrecisionUnavailableError` rather than build another precision."""
    if not precision_supported(precision, gpu["compute_capability"]):
        raise PrecisionUnavailableError(
            f"{precision.upper()} is not available on {gpu['gpu']} "
            f"(sm_{gpu['compute_capability']}): TensorRT would fall back to another precision, "
            f"which this tool refuses to do silently; build with --precision "
            f"{'fp16' if precision == 'int8' else 'fp32'} instead")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def settings_hash(profiles: Sequence[ShapeRange], workspace_mb: int,
                  calibration_sha256: str | None) -> str:
    """Hash of the build settings that change the engine besides the precision."""
    doc = {"profiles": [p.to_dict() for p in profiles], "workspace_mb": workspace_mb,
           "calibration": calibration_sha256}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def engine_filename(stem: str, precision: str, onnx_sha256: str, settings: str,
                    trt_version: str, gpu: Mapping) -> str:
    """``<stem>.<precision>.<src12>.<settings8>.trt<version>.<gpu>-sm<cc>[-<n>sm][-<board8>]
    .engine``: the SM count and a hash of the board's model tell apart devices that share
    a name and compute capability (Orin modules)."""
    cc = gpu["compute_capability"].replace(".", "")
    device = f"{_slug(gpu['gpu'])}-sm{cc}"
    if gpu.get("sm_count"):
        device += f"-{int(gpu['sm_count'])}sm"
    if gpu.get("board"):
        device += "-" + hashlib.sha256(str(gpu["board"]).encode()).hexdigest()[:8]
    return (f"{stem}.{precision}.{onnx_sha256[:12]}.{settings[:8]}.trt{trt_version}."
            f"{device}.engine")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_contract(path: str | Path) -> ModelInfo | None:
    """The SDK contract in an ONNX file's metadata, or ``None`` (third-party graph)."""
    from ..formats import read_contract as read

    return read(path)


# --- options ------------------------------------------------------------------------


@dataclass(frozen=True)
class JetsonOptions:
    """Options of :func:`prepare_bundle` / :func:`build_from_manifest`.

    Attributes:
        precisions: engines to build per model (``fp16``, ``int8``, ``fp32``).
        workspace_mb: builder workspace memory-pool limit (MiB).
        shapes: explicit min/opt/max per input name (wins over the rest).
        frame_sizes: (min, opt, max) (H, W) for dynamic image height/width,
            e.g. a stylizer taking camera frames; ``None``: use the contract's
            ``extra["frame_sizes"]`` if it has one.
        batch: (min, opt, max) for a dynamic batch axis (1 on a device).
        calib_images: folder of real photos for INT8; ``None``: by model kind
            (:data:`DEFAULT_CALIBRATION`).
        calib_count: photos to use (spread evenly over the folder).
        max_opset: highest opset the target parser takes (see check.py).
        yunet: YuNet file for aligning face calibration photos (``None``: found).
        force: rebuild engines (and recalibrate) even when present.
        device: GPU ordinal.
    """

    precisions: tuple[str, ...] = ("fp16",)
    workspace_mb: int = 1024
    shapes: Mapping[str, ShapeRange] = field(default_factory=dict)
    frame_sizes: tuple[tuple[int, int], ...] | None = None
    batch: tuple[int, int, int] = (1, 1, 1)
    calib_images: Path | None = None
    calib_count: int = 200
    max_opset: int = DEFAULT_MAX_OPSET
    yunet: Path | None = None
    force: bool = False
    device: int = 0

    def __post_init__(self) -> None:
        if not self.precisions:
            raise ValueError("give at least one precision")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; choose from {PRECISIONS}")
        if self.workspace_mb < 16:
            raise ValueError(f"workspace_mb must be >= 16, got {self.workspace_mb}")
        if self.frame_sizes is not None and len(self.frame_sizes) != 3:
            raise ValueError("frame_sizes takes exactly three sizes: min, opt, max")
        if self.calib_count < 16:
            raise ValueError(f"calib_count must be >= 16, got {self.calib_count}")


# --- step 1: the bundle (no TensorRT) ----------------------------------------------------


@dataclass
class PreparedModel:
    """One model in the bundle (an entry of ``manifest.json``)."""

    name: str
    onnx: str                      # relative to the bundle
    sha256: str
    kind: str
    precisions: list[str]
    profiles: list[ShapeRange]
    quantized: bool                # explicit Q/DQ in the graph (no calibrator then)
    calibration: dict | None       # {"npy", "sha256", "count", "source"}
    warnings: list[str]

    def to_dict(self) -> dict:
        return {"name": self.name, "onnx": self.onnx, "sha256": self.sha256, "kind": self.kind,
                "precisions": self.precisions, "profiles": [p.to_dict() for p in self.profiles],
                "quantized": self.quantized, "calibration": self.calibration,
                "warnings": self.warnings}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PreparedModel":
        return cls(name=d["name"], onnx=d["onnx"], sha256=d["sha256"], kind=d["kind"],
                   precisions=list(d["precisions"]),
                   profiles=[ShapeRange.from_dict(p) for p in d["profiles"]],
                   quantized=bool(d["quantized"]), calibration=d.get("calibration"),
                   warnings=list(d.get("warnings", [])))


def find_onnx_models(models_dir: str | Path) -> tuple[list[Path], list[str]]:
    """ONNX graphs to build from under ``models_dir`` and why others were skipped.

    TensorRT builds every precision from the fp32 graph (it calibrates INT8
    itself), so ONNX Runtime's int8 QDQ exports (uint8 activations, which
    TensorRT cannot import) are skipped, and so is the YuNet detector (the SDK
    runs it through OpenCV).
    """
    root = Path(models_dir)
    if not root.is_dir():
        raise EngineBuildError(f"models folder {root} does not exist")
    chosen, skipped, quantized = [], [], []
    for p in sorted(root.rglob("*.onnx")):
        if "yunet" in p.parts:
            skipped.append(f"{p}: the YuNet detector runs through OpenCV, not TensorRT")
            continue
        info = read_contract(p)
        if info is not None and info.precision != "fp32":
            quantized.append((p, info))
            continue
        chosen.append(p)
    fp32_ids = set()
    for p in chosen:
        info = read_contract(p)
        if info is not None:
            fp32_ids.add(info.model_id)
    for p, info in quantized:
        if info.model_id in fp32_ids:
            why = "the fp32 graph of the same model is built instead"
        else:
            why = ("and no fp32 ONNX of this model is in the folder: release it there or pass "
                   "it with --onnx (e.g. runs/faces/export/face_encoder_fp32.onnx)")
        skipped.append(f"{p}: {info.precision} export; TensorRT builds every precision from "
                       f"the fp32 graph (it calibrates INT8 itself), {why}")
    return chosen, skipped


def prepare_bundle(onnx_paths: Sequence[str | Path], out_dir: str | Path,
                   options: JetsonOptions) -> tuple[Path, list[CheckReport]]:
    """Check the graphs and write everything the device needs into ``out_dir``.

    Returns (manifest path, check reports).  Raises :class:`EngineBuildError`
    when a graph fails the check (nothing is written then) or when profiles or
    calibration data cannot be made.
    """
    out = Path(out_dir)
    if not onnx_paths:
        raise EngineBuildError("no ONNX models to build (export them first: make export-onnx)")
    check_opts = CheckOptions(max_opset=options.max_opset)
    reports = [check_onnx(p, check_opts) for p in onnx_paths]
    failed = [r for r in reports if not r.ok]
    if failed:
        raise EngineBuildError(
            "TensorRT's ONNX parser would reject: " + "; ".join(
                f"{Path(r.path).name}: {r.errors[0].message}" for r in failed)
            + " (run `python -m export jetson --check` for the full report)")

    stems = [Path(p).stem for p in onnx_paths]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise EngineBuildError(f"several ONNX files share the name(s) {dupes}; engines are "
                               "named after the file, rename one")

    entries: list[PreparedModel] = []
    staged: list[tuple[Path, Path]] = []
    arrays: list[tuple[Path, np.ndarray]] = []
    for path, report in zip(map(Path, onnx_paths), reports):
        info = read_contract(path)
        kind = info.kind if info else "generic"
        layout = info.preprocessing.layout if info else "NCHW"
        frame_sizes = options.frame_sizes
        if frame_sizes is None and info is not None and info.extra.get("frame_sizes"):
            frame_sizes = tuple(tuple(int(v) for v in s) for s in info.extra["frame_sizes"])
        profiles = resolve_profiles(report.inputs, layout=layout, shapes=options.shapes,
                                    frame_sizes=frame_sizes, batch=options.batch)
        sha = file_sha256(path)
        calibration = None
        if "int8" in options.precisions and not report.quantized:
            calibration, samples = _calibration(path, sha, info, kind, profiles, options)
            arrays.append((out / calibration["npy"], samples))
        entries.append(PreparedModel(
            name=path.stem, onnx=f"onnx/{path.name}", sha256=sha, kind=kind,
            precisions=list(options.precisions), profiles=profiles, quantized=report.quantized,
            calibration=calibration, warnings=[str(i) for i in report.warnings]))
        staged.append((path, out / "onnx" / path.name))

    # everything computed: now write (a failure above leaves no half bundle)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    for src, dst in staged:
        if not dst.is_file() or file_sha256(dst) != file_sha256(src):
            shutil.copyfile(src, dst)
    for dst, samples in arrays:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file():  # the name is the content hash: an existing file is this data
            tmp = dst.with_name(dst.name + ".partial")
            with open(tmp, "wb") as f:
                np.save(f, samples, allow_pickle=False)
            tmp.replace(dst)  # atomic: an interrupted run never leaves half a file named final
    manifest = out / MANIFEST_NAME
    doc = {
        "schema": MANIFEST_SCHEMA, "kind": "edge_sdk.jetson_bundle",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workspace_mb": options.workspace_mb, "max_opset": options.max_opset,
        "models": [e.to_dict() for e in entries],
        "command": build_command(manifest),
    }
    manifest.write_text(json.dumps(doc, indent=1))
    return manifest, reports


def build_command(manifest: Path) -> str:
    """The one line to run on the device."""
    return f"python -m export jetson --manifest {manifest}"


def _calibration(path: Path, sha: str, info: ModelInfo | None, kind: str,
                 profiles: Sequence[ShapeRange], options: JetsonOptions
                 ) -> tuple[dict, np.ndarray]:
    if info is None:
        raise EngineBuildError(f"{path}: INT8 calibration needs the SDK contract (input "
                               "pre-processing) in the ONNX file; export it with "
                               "`python -m export`, or build this graph in fp16")
    if len(profiles) != 1:
        raise EngineBuildError(f"{path}: INT8 calibration from images needs exactly one "
                               f"image input, the graph has {len(profiles)}")
    folder = options.calib_images or DEFAULT_CALIBRATION.get(kind)
    if folder is None:
        raise EngineBuildError(f"{path}: no default calibration photos for a {kind!r} model; "
                               "pass --calib-images DIR")
    if not Path(folder).is_dir():
        raise EngineBuildError(f"calibration photos {folder} are absent (third-party data "
                               "lives in ../shared; pass --calib-images DIR)")
    size = spatial_size(profiles[0].opt, info.preprocessing.layout)
    # keep the bundle copyable: large stylizer frames get fewer (still >= 16) samples
    count = max(16, min(options.calib_count, MAX_CALIBRATION_BYTES // (size[0] * size[1] * 3)))
    images = list_images(folder, count)
    samples = calibration_images(images, size, kind=kind, yunet=options.yunet)
    calibration_inputs(samples[:1], profiles[0].opt, info.preprocessing)  # shape check now
    data_sha = array_sha256(samples)
    # named by content: models calibrated on the same images share one file in the bundle
    doc = {"npy": f"calib/{kind}_{size[0]}x{size[1]}.{data_sha[:12]}.npy", "sha256": data_sha,
           "count": int(len(samples)), "images_tried": len(images), "source": str(folder),
           "format": "uint8 BGR (N, H, W, 3) at the input size; the contract's "
                     "pre-processing is applied on the device"}
    return doc, samples


# --- step 2: the device build (TensorRT 10 + pycuda) ----------------------------------------


@dataclass(frozen=True)
class BuiltEngine:
    """One engine written (or found already built) by :func:`build_from_manifest`."""

    name: str
    precision: str
    path: Path
    cached: bool
    seconds: float
    check: dict = field(default_factory=dict)


def load_manifest(path: str | Path) -> tuple[dict, list[PreparedModel]]:
    path = Path(path)
    if not path.is_file():
        raise EngineBuildError(f"manifest {path} does not exist (prepare it with "
                               "`python -m export jetson --models models --out DIR`)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineBuildError(f"{path}: not valid JSON ({exc})") from None
    if doc.get("kind") != "edge_sdk.jetson_bundle" or doc.get("schema") != MANIFEST_SCHEMA:
        raise EngineBuildError(f"{path}: not a jetson bundle manifest of schema {MANIFEST_SCHEMA}")
    return doc, [PreparedModel.from_dict(m) for m in doc["models"]]


def build_from_manifest(manifest: str | Path, options: JetsonOptions | None = None,
                        log=print) -> list[BuiltEngine]:
    """Build every engine the manifest lists, on this device (needs TensorRT 10 + pycuda).

    Engines go to ``<bundle>/engines/``; an engine already there under the
    same name (same source, settings, precision, TensorRT and GPU) is reused
    unless ``options.force``.

    Raises:
        BackendUnavailableError: TensorRT/pycuda/CUDA missing.
        PrecisionUnavailableError: a precision this GPU lacks.
        EngineBuildError: parse/build failures, a changed ONNX file, bad settings.
    """
    import time

    from sdk.backends.tensorrt import _import_runtime, gpu_identity, primary_context

    options = options or JetsonOptions()
    manifest = Path(manifest)
    doc, models = load_manifest(manifest)
    root = manifest.parent
    trt, cuda = _import_runtime()
    if int(trt.__version__.split(".")[0]) < 10:
        raise EngineBuildError(f"TensorRT {trt.__version__}: this builder and the SDK's engine "
                               "runner use the TensorRT 10 API (JetPack 6.1 or later); "
                               "upgrade JetPack")
    if not hasattr(trt.BuilderFlag, "INT8") or not hasattr(trt.BuilderFlag, "FP16"):
        raise EngineBuildError(f"TensorRT {trt.__version__} has no FP16/INT8 builder flags "
                               "(TensorRT 11 removed weak typing); this builder targets "
                               "TensorRT 10 (JetPack 6.1 or later)")
    gpu = gpu_identity(cuda, options.device)
    for m in models:  # refuse early, before minutes of building
        for p in m.precisions:
            require_precision(p, gpu)
    # retained once per process and never detached (see primary_context): verify_engine's
    # sdk.load_model pushes the same context again
    ctx = primary_context(cuda, options.device)
    ctx.push()
    results = []
    try:
        for m in models:
            onnx_path = root / m.onnx
            if not onnx_path.is_file() or file_sha256(onnx_path) != m.sha256:
                raise EngineBuildError(f"{onnx_path} is missing or changed since the bundle was "
                                       "prepared; prepare it again")
            calib_sha = m.calibration["sha256"] if m.calibration else None
            for precision in m.precisions:
                settings = settings_hash(m.profiles, int(doc["workspace_mb"]),
                                         calib_sha if precision == "int8" else None)
                name = engine_filename(m.name, precision, m.sha256, settings, trt.__version__,
                                       gpu)
                dst = root / "engines" / name
                if dst.is_file() and not options.force:
                    log(f"{m.name} {precision}: up to date {dst}")
                    results.append(BuiltEngine(m.name, precision, dst, True, 0.0))
                    continue
                t0 = time.perf_counter()
                log(f"{m.name} {precision}: building (minutes on a Jetson) ...")
                engine_bytes, inputs, outputs = _build_serialized(
                    trt, cuda, onnx_path, m, precision, int(doc["workspace_mb"]), root,
                    options.force, log)
                info = _engine_contract(onnx_path, m, precision, inputs, outputs, trt, gpu,
                                        int(doc["workspace_mb"]))
                dst.parent.mkdir(parents=True, exist_ok=True)
                # checked under a temporary name first: the cache name means "verified",
                # and a later run trusts it without building or checking again
                tmp = dst.with_name(f"{dst.stem}.partial{dst.suffix}")
                tmp.write_bytes(pack_engine(info, engine_bytes))
                seconds = time.perf_counter() - t0
                try:
                    check = verify_engine(tmp, onnx_path, root, m, options.device, precision)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                if not check.get("compared"):
                    # never under the cache name, which a later run trusts as checked: it
                    # is kept beside it, and the next run builds (and tries to check) again
                    dst = dst.with_name(f"{dst.stem}.unverified{dst.suffix}")
                tmp.replace(dst)
                log(f"{m.name} {precision}: wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB, "
                    f"{seconds:.0f} s); vs ONNX Runtime: "
                    + (str(check) if check.get("compared") else
                       f"NOT compared ({check.get('why')}): not cached"))
                results.append(BuiltEngine(m.name, precision, dst, False, seconds, check))
    finally:
        ctx.pop()
    report = root / "engines" / "build_report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({
        "tensorrt": trt.__version__, "gpu": gpu,
        "engines": [{"name": r.name, "precision": r.precision, "path": str(r.path),
                     "cached": r.cached, "seconds": round(r.seconds, 1), "check": r.check}
                    for r in results]}, indent=1))
    return results


def _io_specs(trt, network) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    from sdk.backends.tensorrt import numpy_dtype
    from sdk.errors import ModelFormatError

    def spec(t) -> TensorSpec:
        # trt.nptype raises a bare TypeError for BF16/FP8/INT4 I/O: refuse before building
        try:
            dtype = numpy_dtype(trt, t.dtype, t.name)
        except ModelFormatError as exc:
            raise EngineBuildError(str(exc)) from None
        return TensorSpec(t.name, tuple(int(d) for d in t.shape), dtype)

    return (tuple(spec(network.get_input(i)) for i in range(network.num_inputs)),
            tuple(spec(network.get_output(i)) for i in range(network.num_outputs)))


def _build_serialized(trt, cuda, onnx_path: Path, m: PreparedModel, precision: str,
                      workspace_mb: int, root: Path, force: bool, log):
    """Parse + configure + build one engine; returns (bytes, inputs, outputs)."""
    from sdk.backends.tensorrt import trt_logger

    logger = trt_logger(trt)  # the process's one logger, shared with the runtime
    builder = trt.Builder(logger)
    # TensorRT 10: every network is explicit-batch; the EXPLICIT_BATCH flag is deprecated
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    # path: "Only required if the model has externally stored weights" (OnnxParser.parse)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  "
                               + "\n  ".join(errors[:10]))
    inputs, outputs = _io_specs(trt, network)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)

    by_name = {p.input: p for p in m.profiles}
    missing = [s.name for s in inputs if s.name not in by_name]
    if missing:
        raise EngineBuildError(f"{onnx_path}: no shape range for input(s) {missing}")
    dynamic = any(None in s.shape for s in inputs)
    if dynamic:
        profile = builder.create_optimization_profile()
        for s in inputs:
            r = by_name[s.name]
            _set_profile_shape(profile, s.name, r.min, r.opt, r.max, onnx_path)
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"{onnx_path}: TensorRT rejected the optimisation profile "
                                   f"{[p.to_dict() for p in m.profiles]}")

    calibrator = None
    # FP16/INT8 are weak-typing flags: deprecated in TensorRT 10.12 (release notes: "Weak
    # typing APIs deprecated") and removed in 11 (replacement: a strongly typed network from
    # an fp16 / Q/DQ ONNX graph). They still work on 10.x, which is what this builder targets
    # (build_from_manifest refuses a TensorRT without them).
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        # layers without an int8 kernel run in fp16 rather than fp32 (recorded in the contract)
        config.set_flag(trt.BuilderFlag.FP16)
        if not m.quantized:
            if not m.calibration:
                raise EngineBuildError(f"{m.name}: INT8 needs calibration data; prepare the "
                                       "bundle with --precision int8")
            _require_calibratable(m.name, inputs)
            images, to_input = _calibration_samples(root, m, onnx_path)
            cache = (root / "calib" / f"{m.name}.{m.sha256[:12]}."
                     f"{m.calibration['sha256'][:8]}.trt{trt.__version__}.cache")
            if force and cache.is_file():
                cache.unlink()
            log(f"  calibration cache {cache} "
                + ("found: reused, no recalibration" if cache.is_file()
                   else f"absent: calibrating on {len(images)} real samples"))
            data = CalibrationData(images, cache, transform=to_input)
            # implicit quantisation: IInt8EntropyCalibrator2, int8_calibrator and
            # set_calibration_profile are "Deprecated in TensorRT 10.1. Superseded by
            # explicit quantization" (Python API, Int8/Calibrator.html), still present in 10.x;
            # the replacement is a Q/DQ graph (m.quantized above: no calibrator).
            calibrator = make_entropy_calibrator(trt, cuda, data)
            config.int8_calibrator = calibrator
            if dynamic:
                # calibrate at exactly the shape of the samples (the profile's opt shape)
                cprof = builder.create_optimization_profile()
                shape = data.sample_shape
                _set_profile_shape(cprof, inputs[0].name, shape, shape, shape, onnx_path)
                if not config.set_calibration_profile(cprof):
                    raise EngineBuildError(f"{m.name}: TensorRT rejected the calibration "
                                           f"profile {shape}")
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        # raised inside get_batch, where TensorRT would have read it as "end of data"; the
        # cache it may have written covers part of the data only, so it must not be reused
        calibrator.data.cache_path.unlink(missing_ok=True)
        raise EngineBuildError(f"{m.name}: INT8 calibration failed after "
                               f"{calibrator.batches_given} batches: {calibrator.error}"
                               ) from calibrator.error
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build a {precision} engine "
                               "(see the TensorRT log above; a larger --workspace may help)")
    return bytes(serialized), inputs, outputs


def _require_calibratable(name: str, inputs: Sequence[TensorSpec]) -> None:
    """Refuse INT8 calibration of a network the entropy calibrator cannot feed.

    The calibrator (calibrator.py) copies one float32 sample of batch 1 per
    ``get_batch`` into a buffer sized for that, and TensorRT reads the input's own
    dtype and shape from it: another dtype would be misread and a static batch above
    1 would read past the buffer.
    """
    if len(inputs) != 1:
        raise EngineBuildError(f"{name}: INT8 calibration feeds one image input, the network "
                               f"has {len(inputs)} ({[s.describe() for s in inputs]})")
    spec = inputs[0]
    if spec.dtype != "float32":
        raise EngineBuildError(f"{name}: INT8 calibration feeds float32 samples, but input "
                               f"{spec.name!r} is {spec.describe()}; export the graph with a "
                               "float32 input (cast inside the graph), or build fp16")
    if not spec.shape or spec.shape[0] not in (None, 1):
        raise EngineBuildError(f"{name}: INT8 calibration feeds batches of 1, but input "
                               f"{spec.name!r} is {spec.describe()} (a static batch of "
                               f"{spec.shape[0] if spec.shape else '?'}); export the graph "
                               "with a dynamic or 1 batch axis, or build fp16")


def _set_profile_shape(profile, name: str, lo, mid, hi, onnx_path: Path) -> None:
    """``IOptimizationProfile.set_shape`` raises RuntimeError ("Shape provided for min is
    inconsistent with other shapes", pyCore.cpp) rather than returning False."""
    try:
        profile.set_shape(name, tuple(lo), tuple(mid), tuple(hi))
    except RuntimeError as exc:
        raise EngineBuildError(f"{onnx_path}: TensorRT rejected the shape range of {name!r} "
                               f"{list(lo)} / {list(mid)} / {list(hi)}: {exc}") from None


def _calibration_samples(root: Path, m: PreparedModel, onnx_path: Path):
    """The bundle's calibration images (verified against the manifest) and the
    function that pre-processes one of them per the contract."""
    images = np.load(root / m.calibration["npy"], allow_pickle=False)
    if array_sha256(images) != m.calibration["sha256"]:
        raise EngineBuildError(f"{m.calibration['npy']} changed since the bundle was prepared")
    info = read_contract(onnx_path)
    shape = m.profiles[0].opt

    def to_input(img: np.ndarray) -> np.ndarray:
        return calibration_inputs(img[None], shape, info.preprocessing)[0]

    return images, to_input


def _engine_contract(onnx_path: Path, m: PreparedModel, precision: str,
                     inputs, outputs, trt, gpu: Mapping[str, str], workspace_mb: int) -> ModelInfo:
    base = read_contract(onnx_path) or ModelInfo(kind="generic", name=m.name, inputs=(),
                                                 outputs=())
    if precision == "int8":
        quant = ({"scheme": "tensorrt_explicit_qdq"} if m.quantized else
                 {"scheme": "tensorrt_entropy_calibration",
                  "calibration_samples": m.calibration["count"],
                  "calibration_source": m.calibration["source"]})
        quant["fallback"] = "fp16 for layers without int8 kernels"
    else:
        quant = {}
    return base.replace(
        precision=precision, inputs=inputs, outputs=outputs, quantization=quant,
        versions={**base.versions, "tensorrt": trt.__version__},
        extra={**base.extra, "tensorrt": {
            "version": trt.__version__, "gpu": gpu["gpu"],
            "compute_capability": gpu["compute_capability"],
            "sm_count": gpu.get("sm_count"), "board": gpu.get("board"),
            # engines are not portable across platforms either (checked on load)
            "platform": gpu.get("platform"),
            "profiles": [p.to_dict() for p in m.profiles], "workspace_mb": workspace_mb,
            "onnx_sha256": m.sha256}})


#: Least correlation (cosine of the mean-centred outputs) between an engine's outputs and
#: ONNX Runtime's on the same inputs, per precision: a working FP16 engine stays near 1, an
#: INT8 one within a few 1e-3 (the int8 ONNX face encoder against Keras: 0.996; a
#: stylizer's int8 file at 36 dB PSNR, about 0.998); below it the build is refused, not
#: cached.  Centred because a plain cosine of 0..255 images stays near 1 for a blurred or
#: noisy output (0.995 for a 9x9 blur), which the mean carries.
ENGINE_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}


def verify_engine(engine: Path, onnx_path: Path, root: Path, m: PreparedModel,
                  device: int, precision: str = "fp32") -> dict:
    """Run the new engine through ``sdk.load_model`` on a few inputs and compare with
    ONNX Runtime on the same inputs (when ONNX Runtime is installed on the device).

    Returns {"compared": True, "max_abs", "min_cosine", "samples"}, or {"compared":
    False, "why"} when no comparison could run; raises EngineBuildError for non-finite
    outputs or outputs that drift from ONNX Runtime's (below :data:`ENGINE_MIN_COSINE`
    for ``precision``): a broken engine is not written off as "slower".
    """
    import sdk

    if len(m.profiles) != 1:
        # multi-input graphs: no generic way to make meaningful inputs
        return {"compared": False, "why": "a graph of several inputs"}
    # run at the profile's opt shape, batch included: a batch of 1 is outside a profile
    # built with --batch 4:8:16, and opt is the shape the kernels were tuned for
    batch = m.profiles[0].opt[0]
    count = batch * max(1, -(-4 // batch))  # whole batches, at least 4 samples
    if m.calibration:
        images, to_input = _calibration_samples(root, m, onnx_path)
        picks = images[np.arange(count) % len(images)]
        x = np.stack([to_input(img) for img in picks])
    else:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, size=(count, *m.profiles[0].opt[1:])).astype(np.float32)
    batches = [x[i:i + batch] for i in range(0, count, batch)]
    with sdk.load_model(engine, backend="tensorrt", device=device) as model:
        got = _per_sample([model.run(b)[0] for b in batches])
    if not all(np.all(np.isfinite(g)) for g in got):
        raise EngineBuildError(f"{engine}: the engine produces non-finite outputs")
    try:
        import onnxruntime  # noqa: F401  (optional on a device)
    except ImportError:
        return {"compared": False,
                "why": "onnxruntime is not installed on this device (pip install onnxruntime)"}
    with sdk.load_model(onnx_path) as ref_model:
        ref = _per_sample([ref_model.run(b)[0] for b in batches])
    r = np.stack([a.ravel() for a in ref]).astype(np.float64)
    g = np.stack([a.ravel() for a in got]).astype(np.float64)
    cos = centred_cosine(r, g)
    floor = ENGINE_MIN_COSINE[precision]
    if not cos.min() >= floor:  # NaN outputs make the minimum NaN: refused, not passed
        raise EngineBuildError(f"{engine}: its {precision} outputs drift from ONNX Runtime's "
                               f"(min cosine {cos.min():.5f} < {floor} over {len(x)} inputs); "
                               "not cached. Check the calibration images, or build another "
                               "precision")
    return {"compared": True, "max_abs": float(np.abs(r - g).max()),
            "min_cosine": float(cos.min()), "samples": int(len(x))}


def _per_sample(outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Batched outputs -> one array per sample (axis 0 is the batch)."""
    return [row for out in outputs for row in out]


def centred_cosine(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per row, the cosine of ``ref`` and ``got`` after each row's mean is taken off (their
    correlation): insensitive to the large common offset of image outputs."""
    r = ref - ref.mean(axis=1, keepdims=True)
    g = got - got.mean(axis=1, keepdims=True)
    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    cos = (r * g).sum(1) / np.maximum(nr * ng, 1e-12)
    # a constant row has no direction: it agrees only if the other is the same constant
    flat = (nr < 1e-9) | (ng < 1e-9)
    same = np.all(np.isclose(ref, got, rtol=1e-3, atol=1e-3), axis=1)
    return np.where(flat, same.astype(np.float64), cos)
