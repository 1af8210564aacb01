"""Probe (session 7): where does a face encoder's ONNX int8 export lose its accuracy?

Quantises one fp32 face-encoder ONNX file several ways (ONNX Runtime static QDQ, 300 real
aligned training faces as calibration, as `export faces release` does) and compares each
with the fp32 graph on every held-out face of the training cache: minimum / mean cosine
to fp32, TAR at FAR 1e-3 / 1e-4 over all pairs of those faces, then the time per face of
every file, interleaved (one thread).  Variants: the
calibration methods MinMax / Percentile / Entropy, int8 instead of uint8 activations, the
head (last global-depthwise and linear convs) kept float, the input conv kept float,
and (session 8, the cause) 7-bit or uint8 weights, which cannot saturate the u8·s8
instruction x86 CPUs without VNNI use.

    python scripts/onnx_int8_probe.py [--model runs/faces/release7/face_encoder_fp32.onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402
from export.formats import _Reader, _stem_convs, set_onnx_metadata  # noqa: E402


def held_out_names(pairs_txt: Path) -> set[str]:
    names = set()
    for line in pairs_txt.read_text().splitlines()[1:]:
        p = line.split()
        if len(p) == 3:
            names.add(p[0])
        elif len(p) == 4:
            names.update((p[0], p[2]))
    return names


def embed(path: Path, faces: np.ndarray) -> np.ndarray:
    with sdk.load_model(path, threads=2) as m:
        x = m.info.preprocessing.apply(faces)
        e = np.concatenate([np.asarray(m(x[i:i + 1])).reshape(1, -1) for i in range(len(x))])
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def tar_at(e: np.ndarray, same: np.ndarray, fars=(1e-3, 1e-4)) -> list[float]:
    iu = np.triu_indices(len(e), 1)
    d = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)[iu]
    s = same[iu]
    impostor = np.sort(d[~s])
    return [float(np.mean(d[s] <= impostor[max(int(f * len(impostor)) - 1, 0)])) for f in fars]


def main(argv: list[str] | None = None) -> int:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs/faces/release7/face_encoder_fp32.onnx")
    ap.add_argument("--cache", type=Path, default=ROOT / "runs/faces/aligned.npz")
    ap.add_argument("--pairs", type=Path, default=ROOT / "runs/faces/pairs.txt")
    args = ap.parse_args(argv)

    z = np.load(args.cache)
    identity = np.array(["/".join(p.split("/")[:2]) for p in z["paths"]])
    held = np.isin(identity, list(held_out_names(args.pairs)))
    faces, who = z["images"][held], identity[held]
    train_rows = np.flatnonzero(~held)
    calibration = z["images"][np.sort(np.random.default_rng(0).choice(train_rows, 300,
                                                                      replace=False))]
    same = who[:, None] == who[None, :]
    ref = embed(args.model, faces)
    print(f"{len(faces)} held-out faces; fp32 TAR@1e-3/1e-4 "
          + " / ".join(f"{100 * t:.2f} %" for t in tar_at(ref, same)), flush=True)
    with sdk.load_model(args.model) as m:
        name, pre = m.inputs[0].name, m.info.preprocessing
    inputs = [pre.apply(calibration[i:i + 1]).astype(np.float32) for i in range(len(calibration))]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "pre.onnx"
        quant_pre_process(str(args.model), str(prepared), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        variants = [
            ("MinMax (as released until session 7)", CalibrationMethod.MinMax, QuantType.QUInt8, []),
            ("Percentile", CalibrationMethod.Percentile, QuantType.QUInt8, []),
            ("Entropy", CalibrationMethod.Entropy, QuantType.QUInt8, []),
            ("int8 activations", CalibrationMethod.MinMax, QuantType.QInt8, []),
            ("head float (last 2 convs)", CalibrationMethod.MinMax, QuantType.QUInt8, convs[-2:]),
            ("input conv float (float_stem)", CalibrationMethod.MinMax, QuantType.QUInt8,
             _stem_convs(onnx.load(str(prepared)))),
            # session 8: the cause. x86 CPUs without VNNI (this one: AVX2) multiply uint8
            # activations by int8 weights with an instruction whose int16 pair sums
            # saturate; 7-bit weights or uint8 weights cannot overflow it
            ("7-bit weights (reduce_range)", CalibrationMethod.MinMax, QuantType.QUInt8, [],
             {"reduce_range": True}),
            ("uint8 weights (U8U8)", CalibrationMethod.MinMax, QuantType.QUInt8, [],
             {"weight_type": QuantType.QUInt8}),
        ]
        files = {"fp32": args.model}
        for label, method, activations, excluded, *extra in variants:
            dst = Path(tmp) / "q.onnx"
            options = {"weight_type": QuantType.QInt8, **(extra[0] if extra else {})}
            quantize_static(str(prepared), str(dst), _Reader(name, inputs),
                            quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=activations,
                            calibrate_method=method, nodes_to_exclude=excluded, **options)
            # the float file's contract, so that sdk.FaceVerifier takes it, sealed for this
            # file (the quantiser's copy carries the float file's seal)
            with sdk.load_model(args.model) as m:
                set_onnx_metadata(dst, m.info)
            kept = Path(tmp) / f"variant{len(files)}.onnx"
            dst.rename(kept)
            files[label] = kept
            e = embed(kept, faces)
            cos = (e * ref).sum(1)
            print(f"{label}: cos min {cos.min():.3f} mean {cos.mean():.4f}; TAR@1e-3/1e-4 "
                  + " / ".join(f"{100 * t:.2f} %" for t in tar_at(e, same)), flush=True)
        # time every file in turn on the same face, round after round, so that drifts of
        # the machine's speed hit all of them alike (timed one after another, the medians
        # drifted by more than the files differ)
        print("median / p90 ms per face, one thread, 300 interleaved rounds after 30:")
        models = {label: sdk.load_model(path, threads=1) for label, path in files.items()}
        x = {label: m.info.preprocessing.apply(faces[:1]) for label, m in models.items()}
        times: dict[str, list[float]] = {label: [] for label in models}
        for r in range(330):
            for label, m in models.items():
                t = time.perf_counter()
                m(x[label])
                if r >= 30:
                    times[label].append(1e3 * (time.perf_counter() - t))
        for label, m in models.items():
            m.close()
            print(f"  {label}: {np.median(times[label]):.2f} / "
                  f"{np.percentile(times[label], 90):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
