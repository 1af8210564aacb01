"""Export a trained student: TFLite fp32/fp16/int8 and ONNX (fp32, optionally
int8 QDQ), each carrying the stylizer contract, each checked against the Keras
student on real photos and refused (deleted, ``ConversionError``) when it drifts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .student import SIZE_MULTIPLE

#: Minimum PSNR (dB, peak 255) of each format against the Keras student.  Float
#: exports must be near-identical.  int8 redraws some texture (the measured values are
#: in docs/RESULTS_style.md: 35-37 dB for both int8 formats since session 8; until then
#: the ONNX file's full-range int8 weights saturated x86's u8·s8 instruction and agreed
#: to 23-29 dB only, see export.formats.ONNX_WEIGHTS).  A broken conversion (wrong
#: layout, unfolded BN, saturated output) lands far below both floors.
MIN_PSNR = {"tflite_fp32": 45.0, "onnx_fp32": 45.0, "tflite_fp16": 35.0,
            "tflite_int8": 25.0, "onnx_int8": 30.0}

FORMATS = tuple(MIN_PSNR)


def stylizer_info(student, options, steps: int):
    """The contract of a stylizer exported from ``student`` trained with ``options``."""
    from sdk.contract import ModelInfo, Preprocessing

    from ..formats import source_hash

    costs = options.costs
    layers = costs.layer_choice
    return ModelInfo(
        kind="stylizer", name=f"style-{options.style_name}", inputs=(), outputs=(),
        preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
        output={"style": options.style_name, "output_range": [0, 255],
                "size_multiple": SIZE_MULTIPLE},
        source_hash=source_hash(student),
        extra={"student": dataclasses.asdict(options.student), "train_steps": steps,
               "train_crop": options.crop, "loss_network": costs.network,
               "alpha": costs.alpha, "beta": costs.beta, "gamma": costs.gamma,
               # the layers and their lambda: evaluate and bench score the file with them
               "content_layer": layers.content,
               "style_layers": [[name, lam] for name, lam in layers.style],
               "distill_images": options.distill_images,
               "grain_weight": options.grain_weight,
               "train_scale_range": list(options.scale_range),
               "train_extra_crops": list(options.extra_crops),
               "train_balance_crop": options.balance_side,
               "frozen_batchnorm": options.freeze_batchnorm,
               "training_data": "BSDS500 photos (research use); style image: "
                                f"{Path(options.style).name}"})


def real_crops(folder: str | Path, n: int, size: int, seed: int,
               skip: int = 0) -> np.ndarray:
    """``n`` centre crops (RGB float32, ``size`` x ``size``) of photos in ``folder``,
    taken from a seeded shuffle after skipping ``skip`` photos."""
    from .train import center_crop, list_images, read_rgb

    files = list_images(folder)
    order = np.random.default_rng(seed).permutation(len(files))[skip:skip + n]
    if len(order) < n:
        raise ValueError(f"{folder} has {len(files)} photos, {skip + n} needed")
    return np.stack([center_crop(read_rgb(files[i]), size) for i in order]).astype(np.float32)


def export_student(student, info, out_dir: str | Path, stem: str, *,
                   calibration: np.ndarray, check: np.ndarray,
                   formats: Sequence[str] = FORMATS, min_psnr: dict | None = None) -> dict:
    """Write and check each format; returns ``{format: {path, bytes, agreement...}}``.

    Every file is made and checked in a staging folder inside ``out_dir``; only the ones
    that pass then replace their namesakes there, each in one rename, so ``out_dir``
    (``models/style`` for a release) never holds a half-written or unchecked model.  The
    int8 ONNX file is always quantised from this student's own fp32 graph, which is then
    made, checked and released with it.

    Raises:
        ConversionError: a file drifts from the Keras student (it is not released, and
            an earlier file of that name, of other weights, is deleted); ``.report``
            says what was made and what was refused.
    """
    from .. import formats as fmt

    unknown = [f for f in formats if f not in MIN_PSNR]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {list(MIN_PSNR)}")
    thresholds = {**MIN_PSNR, **(min_psnr or {})}
    formats = list(formats)
    if "onnx_int8" in formats:
        # the int8 file is quantised from this student's fp32 graph: that graph is made,
        # checked and released first, whatever the order asked for (an older fp32 file
        # left beside the new int8 one would hold other weights)
        formats = ["onnx_fp32"] + [f for f in formats if f != "onnx_fp32"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calib = [c[None] for c in calibration]
    student(check[:1], training=False)  # Keras exporters need one forward call first

    def reference(x):
        return np.concatenate([np.asarray(student(xi[None], training=False)) for xi in x])

    report, passed = {}, []
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
        staging = Path(staging)
        for name in formats:
            kind, precision = name.split("_")
            path = staging / _file_name(stem, name)
            thr = thresholds[name]
            if name == "onnx_int8":
                if "refused" in report.get("onnx_fp32", {}):
                    report[name] = {"refused": f"{path.name}: its source, the fp32 ONNX graph, "
                                               "was refused", "min_psnr_db": thr}
                    continue
                fmt.quantize_onnx_int8(staging / f"{stem}_fp32.onnx", path, calib)
            elif kind == "onnx":
                fmt.to_onnx(student, path, info)
            else:
                fmt.to_tflite(student, path, info, precision=precision, calibration=calib)
            try:
                agree = fmt.check_against(reference, path, check, peak=255.0,
                                          check=lambda a, thr=thr: a.psnr_db >= thr,
                                          requirement=f"PSNR >= {thr} dB against the Keras "
                                                      "student")
            except fmt.ConversionError as exc:
                report[name] = {"refused": str(exc), "min_psnr_db": thr}
                continue  # the other formats are still made and checked
            passed.append(path)
            report[name] = {"path": str(out / path.name), "bytes": path.stat().st_size,
                            "psnr_db": round(agree.psnr_db, 2),
                            "max_abs": round(agree.max_abs, 2),
                            "mean_abs": round(agree.mean_abs, 3), "min_psnr_db": thr}
        for path in passed:
            os.replace(path, out / path.name)
    refused = [k for k, v in report.items() if "refused" in v]
    for k in refused:  # an earlier file of that name holds other weights: not released
        (out / _file_name(stem, k)).unlink(missing_ok=True)
    if refused:
        error = fmt.ConversionError("refused (deleted): " + "; ".join(
            report[k]["refused"] for k in refused))
        error.report = report  # what was made and what was refused, for the caller's record
        raise error
    return report


def portable_options(options):
    """``options`` with its paths relative to the repository root (``../shared/...``,
    ``runs/...``) where they lie beside or inside it, so a committed copy names no
    machine's directories."""
    from sdk.paths import REPO_ROOT

    root = Path(os.path.abspath(REPO_ROOT))

    def rel(p):
        if p is None or not Path(p).is_absolute():
            return p
        # abspath, not resolve: ../shared is often a symlink, and its target is no
        # business of the record
        p = Path(os.path.abspath(p))
        if not p.is_relative_to(root.parent):
            return str(p)  # somewhere else entirely: keep it as it is
        return os.path.relpath(p, root)

    return dataclasses.replace(options, style=rel(options.style), run_dir=rel(options.run_dir),
                               content_dir=rel(options.content_dir),
                               samples_dir=rel(options.samples_dir), init=rel(options.init))


def keep_keras_copy(student, options, steps: int, run_dir: str | Path,
                    out_dir: str | Path) -> Path:
    """Keep the trained Keras weights beside the exports (``<out>/<style>_student/``: config,
    weights, steps), so ``export`` can re-create every format without the training run."""
    dst = Path(out_dir) / f"{options.style_name}_student"
    if dst.resolve() == Path(run_dir).resolve():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(portable_options(options).to_json())
    (dst / "steps.json").write_text(json.dumps({"steps": steps}))
    student.save_weights(str(dst / "student.weights.h5"))
    return dst


def expand_formats(names) -> list[str]:
    """``tflite`` -> its three precisions, ``onnx`` -> fp32 + int8; exact names pass through."""
    groups = {"tflite": ["tflite_fp32", "tflite_fp16", "tflite_int8"],
              "onnx": ["onnx_fp32", "onnx_int8"]}
    out: list[str] = []
    for name in names:
        for f in groups.get(name, [name]):
            if f not in MIN_PSNR:
                raise ValueError(f"unknown format {f!r}; choose tflite, onnx or one of "
                                 f"{list(MIN_PSNR)}")
            if f not in out:
                out.append(f)
    return out


def _file_name(stem: str, fmt: str) -> str:
    """``<stem>_<precision>.tflite|.onnx``: the file a format (``tflite_int8``) is written to."""
    kind, precision = fmt.split("_")
    return f"{stem}_{precision}.{'tflite' if kind == 'tflite' else 'onnx'}"


def _made_from(path: Path) -> str | None:
    """The ``source_hash`` in a model file's contract, read without a runtime (a runtime
    that cannot run a file says nothing about its weights); None where the file is
    damaged or has no contract."""
    from sdk.errors import ModelFormatError

    from ..formats import read_contract

    try:
        info = read_contract(path)
    except ModelFormatError:  # a seal that no longer matches, a malformed contract
        return None
    return None if info is None else info.source_hash


def remove_other_weights(out_dir: str | Path, stem: str, source_hash: str,
                         keep: Sequence[str]) -> list[Path]:
    """Delete every ``<stem>_<fp32|fp16|int8>.tflite|.onnx`` in ``out_dir`` that is not of
    the formats in ``keep`` or whose contract names other weights than ``source_hash``
    (an unreadable one too), saying so on stdout; returns the deleted paths."""
    from sdk.contract import PRECISIONS

    removed = []
    for precision in PRECISIONS:
        for suffix in ("tflite", "onnx"):
            path = Path(out_dir) / f"{stem}_{precision}.{suffix}"
            fmt = f"{suffix}_{precision}"
            if not path.is_file():
                continue
            made_from = _made_from(path)
            if fmt in keep and made_from == source_hash:
                continue
            why = ("not in the export record" if made_from == source_hash else
                   "unreadable contract" if made_from is None else
                   f"made from other weights ({made_from[:12]})")
            path.unlink()
            removed.append(path)
            print(f"removed {path}: {why}; {stem!r} is exported from the weights "
                  f"{source_hash[:12]}", flush=True)
    return removed


def export_run(run_dir: str | Path, out_dir: str | Path, *, calibration_dir: str | Path,
               formats: Sequence[str] = ("tflite_fp32", "tflite_fp16", "tflite_int8",
                                         "onnx_fp32")) -> dict:
    """Export the student of a training run (or of a ``<style>_student/`` copy made by an
    earlier export) into ``out_dir`` as ``<style>_<precision>.*``.

    Afterwards every model file of the style in ``out_dir`` holds these weights and is in
    ``<style>_export.json``: a file of other weights that this export did not replace (a
    format not asked for) is deleted, and stdout says so. The Keras copy
    (``<style>_student/``) is replaced only when at least one format was accepted.

    Raises:
        ConversionError: a format was refused (after the record is written).
    """
    from .train import load_run

    options, student, steps = load_run(run_dir, with_steps=True)
    # calibration and checking use different photos (seeded shuffle, disjoint slices)
    calibration = real_crops(calibration_dir, 32, 256, seed=123)
    check = real_crops(calibration_dir, 8, 256, seed=123, skip=32)
    info = stylizer_info(student, options, steps)
    from ..formats import ConversionError

    error = None
    try:
        report = export_student(student, info, out_dir, options.style_name,
                                calibration=calibration, check=check,
                                formats=expand_formats(formats))
    except ConversionError as exc:
        if not hasattr(exc, "report"):
            raise
        report, error = exc.report, exc
    if any("path" in v for v in report.values()):
        # with every format refused the kept copy stays that of the weights released before
        # (``export`` can re-create their files from it); no file holds the refused ones
        keep_keras_copy(student, options, steps, run_dir, out_dir)
    record = Path(out_dir, f"{options.style_name}_export.json")
    run_name = str(run_dir)
    if record.is_file():  # keep the other formats' entries of the same weights
        old = json.loads(record.read_text())
        if old.get("source_hash") == info.source_hash:
            report = {**old.get("formats", {}), **report}
            # re-exporting from the kept <style>_student/ copy: the training run that
            # made these weights is still the one to name
            run_name = old.get("run", run_name)
    # A file of other weights left beside the new ones (a format this export was not asked
    # for) would be taken for this style's release by stylizer_paths, evaluate and the SDK,
    # and the record would not name it: it is deleted, as export_student deletes a refused
    # format's older file. Refusing the export instead would make every partial export of
    # new weights fail until someone deletes files by hand.
    # Only once something was accepted: an export whose every format was refused leaves
    # the earlier release's files as they were.
    recorded = [f for f, v in report.items() if "path" in v]
    if recorded:
        remove_other_weights(out_dir, options.style_name, info.source_hash, recorded)
    # an entry of the same weights whose file is gone (deleted by hand) describes nothing
    report = {f: v for f, v in report.items()
              if "path" not in v or Path(out_dir, _file_name(options.style_name, f)).is_file()}
    summary = {"style": options.style_name, "run": run_name, "train_steps": steps,
               "source_hash": info.source_hash, "formats": report}
    record.write_text(json.dumps(summary, indent=1))
    if error is not None:
        raise error  # the record is written; the command still fails
    return summary
