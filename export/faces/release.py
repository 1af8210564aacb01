"""Export the trained encoder to TFLite (fp32, fp16, full int8) and ONNX (fp32,
int8 QDQ), check each file, gate the quantised ones on accuracy, release.

``python -m export faces release --model runs/faces/run1/model.keras``

1. τ is calibrated with the float Keras model on the held-out ``pairs.txt``
   (the threshold maximising accuracy over all its pairs, the 10-fold protocol's
   shipped threshold) and written into every file's contract.
2. int8 models are calibrated on real aligned training faces (never held-out ones).
3. Each file is run through ``sdk.load_model`` on the held-out pairs (images
   re-detected and re-aligned from disk, as on the device) and gets its own τ and
   named operating points ``far_1e-2/-3/-4/-5`` (fitted on every pair of those photos,
   about a million different-person pairs); a file is refused when, over every pair
   of those photos, its best balanced accuracy is more than ``--max-drop`` points
   below the float model's, or its TAR at FAR 1e-3 more than ``--max-tar-drop``
   points (:mod:`export.faces.gate`: why not the 10-fold accuracy of the listed pairs,
   which is still reported), and a float file (fp32, fp16) also when its embeddings
   drift from Keras' (:data:`FLOAT_MIN_COSINE`: a broken conversion, not rounding).
4. Only when no file is refused (or with ``--keep-going``: the files that pass) are
   the int8 TFLite, int8 ONNX and fp32 ONNX files copied to ``models/faces/``, with
   the Keras model and, in ``face_encoder.train.npz``, the training state a next leg
   starts from (``train --init models/faces/face_encoder.keras``).  Each file replaces
   its released copy in one rename, so a crash never leaves a half-written model
   there; a refused file's earlier copy is removed rather than left beside files of
   other weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from sdk.contract import ModelInfo, Preprocessing, TensorSpec

from . import data as fdata


#: Least cosine between a float file's embeddings and the Keras model's on the check
#: faces.  Conversion rounding stays far above it (fp32 files: 1 - 1e-12, fp16: 1 - 1e-6,
#: runs/faces/release15.json); a broken conversion falls below it.
FLOAT_MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999}


def install(src: Path, dst: Path) -> None:
    """Copy ``src`` onto ``dst`` in one rename: ``dst`` is the old file or the new one,
    never half of either (a released model must not be left half-written)."""
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


#: The exported files a release copies to the release folder.  The fp32 ONNX file ships
#: too: TensorRT builds its FP16/INT8 engines from the float graph (ONNX Runtime's QDQ file
#: has uint8 activations, which TensorRT cannot take).
RELEASED_FILES = ("face_encoder_int8.tflite", "face_encoder_int8.onnx",
                  "face_encoder_fp32.onnx")


def publish(out: Path, rel: Path, refused: list[str], model: Path) -> list[str]:
    """Copy the exported files of ``out`` that passed (:data:`RELEASED_FILES`) and the
    Keras ``model`` into ``rel``, each in one rename; a refused file's earlier copy in
    ``rel`` is removed (it holds other weights than the files beside it).  Returns the
    released paths."""
    rel.mkdir(parents=True, exist_ok=True)
    released = []
    for name in RELEASED_FILES:
        if name in refused:
            if (rel / name).exists():
                (rel / name).unlink()
                print(f"removed the earlier {rel / name}: its new version was refused")
            continue
        install(out / name, rel / name)
        released.append(str(rel / name))
    # the trained Keras model, so a clone can re-export and visualise without retraining
    kept = rel / "face_encoder.keras"
    if not kept.exists() or not kept.samefile(model):
        install(model, kept)
    released.append(str(kept))
    return released


def face_encoder_info(name: str, threshold: float, source_hash: str, extra: dict) -> ModelInfo:
    """The contract of a face encoder (I/O specs are filled in by export.formats)."""
    return ModelInfo(
        kind="face_encoder", name=name,
        inputs=(TensorSpec("input", (1, 112, 112, 3), "float32"),),
        outputs=(TensorSpec("embedding", (1, 128), "float32"),),
        preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255),
                                    mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC"),
        output={"embedding_size": 128, "metric": "squared_l2", "threshold": float(threshold)},
        source_hash=source_hash, extra=extra)


def set_threshold(path: Path, tau: float, operating_points: dict | None = None) -> None:
    """Rewrite the τ (and the named operating points) in the contract embedded in
    an exported file."""
    import sdk
    from export import formats as fmt

    with sdk.load_model(path) as m:
        info = m.info
    output = {**dict(info.output), "threshold": float(tau)}
    if operating_points:
        output["operating_points"] = {k: float(v) for k, v in operating_points.items()}
    info = info.replace(output=output,
                        extra={**dict(info.extra), "threshold_calibration":
                               "best accuracy over all held-out pairs, with this file; "
                               "far_1e-N: largest τ with false-accept rate <= 1e-N over "
                               "every different-person pair of the held-out photos"})
    if path.suffix == ".tflite":
        path.write_bytes(fmt.embed_tflite_metadata(path.read_bytes(), info))
    else:
        fmt.set_onnx_metadata(path, info)


def calibration_faces(cache_path, split_path, n: int = 300, seed: int = 0, checks: int = 0):
    """``n`` aligned training faces (never held-out ones), one model-input batch of one
    each, drawn with ``seed``: the int8 calibration set.  With ``checks`` > 0 returns
    ``(calibration, check_batch)``, a further batch of that many training faces drawn
    after them to compare each file with Keras."""
    cache = fdata.load_cache(cache_path)
    names = list(cache["names"])
    holdout = json.loads(Path(split_path).read_text())["holdout"]
    unknown = sorted(set(holdout) - set(names))
    if unknown:
        raise fdata.FacesDataError(f"held-out identities not in the cache: {unknown[:5]}")
    hold = [names.index(h) for h in holdout]
    train_rows = np.flatnonzero(~np.isin(cache["labels"], hold))
    rng = np.random.default_rng(seed)
    pick = rng.choice(train_rows, size=min(n, len(train_rows)), replace=False)
    calib = [fdata.bgr_to_model_input(cache["images"][k:k + 1]) for k in pick]
    if not checks:
        return calib
    return calib, fdata.bgr_to_model_input(cache["images"][rng.choice(train_rows, checks)])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces release``."""
    from sdk.paths import REPO_ROOT

    from .cli import FACES, RUNS
    from .gate import DEFAULT_MAX_DROP, GATE_FAR, GateScores, judge

    ap = argparse.ArgumentParser(prog="python -m export faces release")
    ap.add_argument("--model", default=str(RUNS / "run1" / "model.keras"))
    ap.add_argument("--name", default=None,
                    help="model name (default edge-faces-mfnNNN, NNN = 100 x the width)")
    ap.add_argument("--out", default=str(RUNS / "export"))
    ap.add_argument("--release-dir", default=str(REPO_ROOT / "models" / "faces"))
    ap.add_argument("--cache", default=str(RUNS / "aligned.npz"))
    ap.add_argument("--split", default=str(RUNS / "split.json"))
    ap.add_argument("--pairs", default=str(RUNS / "pairs.txt"))
    ap.add_argument("--images", default=str(FACES))
    ap.add_argument("--calibration", type=int, default=300, help="aligned faces for int8")
    ap.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                    help="points of every-pair balanced accuracy a quantised file may lose")
    ap.add_argument("--max-tar-drop", type=float, default=DEFAULT_MAX_DROP,
                    help=f"points of every-pair TAR at FAR {GATE_FAR:g} it may lose")
    ap.add_argument("--keep-going", action="store_true",
                    help="release the files that pass even if a quantised one is refused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.calibration < 16:
        ap.error(f"--calibration must be at least 16 faces, got {args.calibration}")
    if not (0 <= args.max_drop < math.inf and 0 <= args.max_tar_drop < math.inf):
        ap.error("--max-drop and --max-tar-drop must be finite and not negative")
    for option, path in (("--model", args.model), ("--cache", args.cache),
                         ("--split", args.split), ("--pairs", args.pairs)):
        if not Path(path).is_file():
            ap.error(f"{option} {path}: no such file")
    # the calibration faces before minutes of evaluation: a split that does not match the
    # cache fails here, by name
    try:
        calib, check_inputs = calibration_faces(args.cache, args.split, args.calibration,
                                                args.seed, checks=32)
    except fdata.FacesDataError as e:   # held-out names the cache does not have
        ap.error(f"--split {args.split} does not match --cache {args.cache}: {e}")
    except KeyError as e:
        ap.error(f"--split {args.split}: no {e} list (not a split.json of faces prepare)")
    # TensorFlow only after the arguments: --help and usage errors answer at once
    import keras

    from export import formats as fmt

    from . import model as _m  # noqa: F401
    from .model import encoder_width
    from .evaluate import (Encoder, FaceCropper, dense_operating_points, evaluate_dense,
                           evaluate_pairs)
    from .train import heads_file, save_heads

    out, rel = Path(args.out), Path(args.release_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = keras.models.load_model(args.model, compile=False)
    width = encoder_width(model)
    name = args.name or f"edge-faces-mfn{round(100 * width):03d}"
    crop = FaceCropper()
    pairs, images = Path(args.pairs), Path(args.images)

    enc = Encoder(args.model)
    ref = evaluate_pairs(pairs, images, enc, crop, None)
    tau = ref["ten_fold"]["threshold_all"]
    ref_acc = ref["ten_fold"]["accuracy_mean"]
    ref_dense = evaluate_dense(pairs, images, enc, crop)
    ref_gate = GateScores.from_distances(ref_dense.pop("_dist"), ref_dense.pop("_same"))
    print(f"Keras fp32: 10-fold {100 * ref_acc:.2f}%, AUC {ref['auc']:.4f}; τ = {tau:.4f}; "
          f"every pair ({ref_dense['same']} same, {ref_dense['different']} different): "
          f"accuracy {100 * ref_gate.accuracy:.2f}%, TAR at FAR {GATE_FAR:g} "
          f"{100 * ref_gate.tar:.2f}%")

    info = face_encoder_info(name, tau, fmt.source_hash(model), {
        "architecture": f"MobileFaceNet-like, width {width:g}",
        "params": int(model.count_params()),
        "training": "triplet (batch-hard) + CosFace + distillation from dlib ResNet "
                    "(absolute, then relational, then projected through a learnt linear "
                    "map); see MODEL_CARD.md",
        "threshold_calibration": f"best accuracy over all {ref['pairs']} held-out pairs "
                                 f"({pairs.name}, Keras fp32)",
        "aligner": "YuNet 5 points -> ArcFace 112x112 template (sdk.faces.detector)"})

    def reference(x):
        return np.asarray(model(x, training=False))

    files = {"fp32.tflite": ("tflite", "fp32"), "fp16.tflite": ("tflite", "fp16"),
             "int8.tflite": ("tflite", "int8"), "fp32.onnx": ("onnx", "fp32"),
             "int8.onnx": ("onnx", "int8")}
    report = {"keras_fp32": {"ten_fold": ref_acc, "auc": ref["auc"], "threshold": tau,
                             "gate": vars(ref_gate), "dense_at_far": ref_dense["at_far"]},
              "files": {}}
    refused, reasons = [], {}
    for suffix, (kind, precision) in files.items():
        stem, ext = suffix.split(".")
        path = out / f"face_encoder_{stem}.{ext}"
        if kind == "tflite":
            fmt.to_tflite(model, path, info, precision=precision, calibration=calib)
        elif precision == "fp32":
            fmt.to_onnx(model, path, info)
        else:
            fmt.quantize_onnx_int8(out / "face_encoder_fp32.onnx", path, calib)
        e = Encoder(path)
        agree = fmt.agreement(reference(check_inputs), e(check_inputs[..., ::-1].astype(np.uint8)))
        r = evaluate_pairs(pairs, images, e, crop, None)
        # the named low-FAR points from every pair of the same photos (~1M different-
        # person pairs): the 1500 of the 10-fold list put far_1e-3 on one or two pairs
        dense = evaluate_dense(pairs, images, e, crop)
        scores = GateScores.from_distances(dense.pop("_dist"), dense.pop("_same"))
        verdict = judge(ref_gate, scores, args.max_drop, args.max_tar_drop)
        why = list(verdict.reasons)
        floor = FLOAT_MIN_COSINE.get(precision)
        # "not >=": one NaN embedding makes the minimum NaN, which "<" would pass
        if floor is not None and not agree.min_cosine >= floor:
            why.append(f"its embeddings drift from Keras' (min cosine {agree.min_cosine:.6f} "
                       f"< {floor}): the conversion is broken")
        e.close()
        own_tau = r["ten_fold"]["threshold_all"]  # this file's own τ (int8 shifts distances)
        points = {"best_accuracy": own_tau, **dense_operating_points(dense)}
        set_threshold(path, own_tau, points)
        acc = r["ten_fold"]["accuracy_mean"]
        drop = 100 * (ref_acc - acc)  # the 10-fold list's: reported, too noisy to gate on
        ok = not why
        report["files"][path.name] = {
            "bytes": path.stat().st_size, "ten_fold": acc,
            "ten_fold_std": r["ten_fold"]["accuracy_std"],
            "auc": r["auc"], "eer": r["eer"], "tar_at_far_1e-3": r["tar_at_far_1e-3"],
            "threshold": own_tau, "operating_points": points,
            "tar_at_far_1e-2": r["tar_at_far_1e-2"], "drop_points": drop,
            "gate": {**vars(scores), "accuracy_drop": verdict.accuracy_drop,
                     "tar_drop": verdict.tar_drop, "reasons": why},
            "dense_at_far": dense["at_far"],
            "min_cosine_vs_keras": agree.min_cosine, "accepted": ok}
        print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB, 10-fold {100 * acc:.2f}% "
              f"(drop {drop:+.2f} pts), AUC {r['auc']:.4f}, min cos vs Keras "
              f"{agree.min_cosine:.4f}; every pair: accuracy {100 * scores.accuracy:.2f}% "
              f"(drop {verdict.accuracy_drop:+.2f}), TAR at FAR {GATE_FAR:g} "
              f"{100 * scores.tar:.2f}% (drop {verdict.tar_drop:+.2f}) "
              f"-> {'ok' if ok else 'REFUSED'}")
        if not ok:
            refused.append(path.name)
            reasons[path.name] = why
    report["refused"] = refused
    if refused and not args.keep_going:
        # decided before anything is copied: models/ keeps the earlier release whole
        report["released"] = []
        if args.json:
            args.json.write_text(json.dumps(report, indent=1))
        print("refused, nothing released (--keep-going releases the files that pass): "
              + "; ".join(f"{name}: {' and '.join(why)}" for name, why in reasons.items()),
              file=sys.stderr)
        return 1
    released = publish(out, rel, refused, Path(args.model))
    kept = rel / "face_encoder.keras"
    # and what the next training leg starts from (CosFace centres, distillation map, the
    # record): runs/ does not outlive a machine, the release does
    src_heads, dst_heads = heads_file(Path(args.model)), heads_file(kept)
    if src_heads.is_file():
        if not dst_heads.exists() or not dst_heads.samefile(src_heads):
            install(src_heads, dst_heads)
    elif save_heads(Path(args.model).parent, dst_heads) is None:
        dst_heads.unlink(missing_ok=True)  # an older release's heads would not fit
    if dst_heads.is_file():
        released.append(str(dst_heads))
    report["released"] = released
    print(f"released: {released}; refused: {refused}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0
