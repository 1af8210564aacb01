"""Probe (session 12): the release's int8 gate, old and new, on files whose quality is known.

From one trained Keras encoder it writes the fp32 ONNX file, three int8 ONNX files that
differ only in the seed that draws their 300 calibration faces (equally good files: the
gate should pass all three, with the same verdict), the full-range int8 ONNX file that
saturates on x86 CPUs without VNNI (a known-bad file: session 8 measured it, min cosine
0.87 and TAR at FAR 1e-4 3.50 % against 4.32 % on run 7's graph) and the int8 TFLite
file.  Each is scored as the release scores it:

- old gate: 10-fold accuracy of the 3000 listed held-out pairs, drop against Keras;
- new gate (:mod:`export.faces.gate`): every pair of the same photos, best balanced
  accuracy and TAR at FAR 1e-3, drops against Keras.

    python scripts/int8_gate_check.py --model runs/faces/run10/model.keras \\
        --out runs/faces/gate_check > runs/faces/gate_check.log

Session 12 ran it on run 10's weights (then models/faces/face_encoder.keras, now in git:
``git show a4f6918:models/faces/face_encoder.keras > runs/faces/run10/model.keras``);
its table is in docs/RESULTS_faces.md, "The int8 gate reads every pair".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from export.faces import data as fdata  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder.keras"))
    ap.add_argument("--out", default=str(ROOT / "runs/faces/gate_check"))
    ap.add_argument("--cache", default=str(ROOT / "runs/faces/aligned.npz"))
    ap.add_argument("--split", default=str(ROOT / "runs/faces/split.json"))
    ap.add_argument("--pairs", default=str(ROOT / "runs/faces/pairs.txt"))
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "faces"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)

    import keras

    from export import formats as fmt
    from export.faces import model as _m  # noqa: F401  (registers the custom layers)
    from export.faces.evaluate import Encoder, FaceCropper, evaluate_dense, evaluate_pairs
    from export.faces.gate import GateScores, judge
    from export.faces.release import calibration_faces, face_encoder_info

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = keras.models.load_model(args.model, compile=False)
    info = face_encoder_info("gate-check", 1.0, fmt.source_hash(model), {})
    files = {"fp32 ONNX": out / "fp32.onnx"}
    fmt.to_onnx(model, files["fp32 ONNX"], info)
    for seed in args.seeds:
        calib = calibration_faces(args.cache, args.split, 300, seed)
        files[f"int8 ONNX, 7-bit, calibration seed {seed}"] = fmt.quantize_onnx_int8(
            files["fp32 ONNX"], out / f"int8_7bit_s{seed}.onnx", calib)
    calib = calibration_faces(args.cache, args.split, 300, args.seeds[0])
    files["int8 ONNX, full-range (known bad)"] = fmt.quantize_onnx_int8(
        files["fp32 ONNX"], out / "int8_full.onnx", calib, weights="int8")
    files["int8 TFLite"] = fmt.to_tflite(model, out / "int8.tflite", info, precision="int8",
                                         calibration=calib)

    pairs, images = Path(args.pairs), Path(args.images)
    crop = FaceCropper()

    def score(path) -> tuple[float, GateScores, dict]:
        enc = Encoder(path)
        ten = evaluate_pairs(pairs, images, enc, crop, None)["ten_fold"]["accuracy_mean"]
        dense = evaluate_dense(pairs, images, enc, crop)
        enc.close()
        gate = GateScores.from_distances(dense.pop("_dist"), dense.pop("_same"))
        return ten, gate, dense

    ref_ten, ref, dense = score(args.model)
    print(f"{args.model}: every pair of {dense['photos']} held-out photos, {dense['same']} "
          f"same-person and {dense['different']} different-person pairs\n")
    print("| file | 10-fold (listed pairs) | drop | old gate | every-pair accuracy | drop | "
          "TAR at FAR 1e-3 | drop | new gate |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| Keras fp32 (reference) | {100 * ref_ten:.2f} | | | {100 * ref.accuracy:.2f} | | "
          f"{100 * ref.tar:.2f} | | |")
    rows = {}
    for name, path in files.items():
        ten, gate, _ = score(path)
        verdict = judge(ref, gate)
        old_drop = 100 * (ref_ten - ten)
        rows[name] = {"ten_fold": ten, "old_drop": old_drop, **vars(gate),
                      "accuracy_drop": verdict.accuracy_drop, "tar_drop": verdict.tar_drop,
                      "new_ok": verdict.ok}
        print(f"| {name} | {100 * ten:.2f} | {old_drop:+.2f} | "
              f"{'pass' if old_drop <= 0.5 else 'refuse'} | {100 * gate.accuracy:.2f} | "
              f"{verdict.accuracy_drop:+.2f} | {100 * gate.tar:.2f} | {verdict.tar_drop:+.2f} | "
              f"{'pass' if verdict.ok else 'refuse'} |", flush=True)
    (out / "gate_check.json").write_text(json.dumps(
        {"reference": {"ten_fold": ref_ten, **vars(ref)}, "files": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
