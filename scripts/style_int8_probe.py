"""Probe (session 8): where does a stylizer's ONNX int8 export lose its agreement?

Quantises one fp32 stylizer ONNX file with ONNX Runtime static QDQ (the same 32
calibration crops and 8 check crops of real photos as `export style export`) several
ways and prints the PSNR of each int8 file against the fp32 file: full-range int8
weights (as released until session 7) with different nodes kept float (the input
convolution: the face encoder's session-7 fix; the output tail; with --single each
quantisable node on its own), int8 activations, then the weight encodings that x86's
u8·s8 instruction cannot saturate on CPUs without VNNI: 7-bit int8 (the default since
session 8) and uint8.  Keeping nodes float barely helps; the weight encoding does.

    python scripts/style_int8_probe.py [--model models/style/udnie_fp32.onnx]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sdk  # noqa: E402
from export.formats import _Reader, _stem_convs, agreement, drop_onnx_contract  # noqa: E402
from export.style.release import real_crops  # noqa: E402

#: node types ONNX Runtime's QDQ quantiser wraps (the rest are shape arithmetic)
QUANTISED = {"Conv", "Add", "Mul", "Resize", "Sigmoid", "DepthToSpace", "Relu"}


def run(path: Path, x: np.ndarray) -> np.ndarray:
    with sdk.load_model(path, threads=2) as m:
        return np.concatenate([np.asarray(m(xi[None])) for xi in x])


def main(argv: list[str] | None = None) -> int:
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/style/udnie_fp32.onnx"))
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/style/content-train"))
    ap.add_argument("--single", action="store_true",
                    help="also keep each quantisable node float on its own (slow)")
    args = ap.parse_args(argv)

    calib = real_crops(args.photos, 32, 256, seed=123)
    check = real_crops(args.photos, 8, 256, seed=123, skip=32)
    src = Path(args.model)
    ref = run(src, check)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        nodes = [n for n in graph.node if n.op_type in QUANTISED]
        name = graph.input[0].name

        def psnr(exclude: list[str], act=QuantType.QUInt8, weight=QuantType.QInt8,
                 reduce_range=False) -> float:
            dst = Path(tmp) / "q.onnx"
            quantize_static(str(pre), str(dst), _Reader(name, [c[None] for c in calib]),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=act, weight_type=weight,
                            reduce_range=reduce_range, nodes_to_exclude=exclude)
            drop_onnx_contract(dst)  # the quantiser's copy of the float file's (and its seal)
            return agreement(ref, run(dst, check), peak=255.0).psnr_db

        stem = _stem_convs(onnx.load(str(pre)))
        # the tail: everything from the last full-resolution conv on (pixel shuffle,
        # RGB conv, sigmoid, scale to 0..255)
        tail_types = ("DepthToSpace", "Sigmoid")
        first_tail = next(i for i, n in enumerate(nodes) if n.op_type in tail_types)
        tail = [n.name for n in nodes[first_tail - 1:]]
        print(f"{src.name}: {len(nodes)} quantisable nodes; PSNR against fp32 on 8 crops")
        rows = [("all int8", []), ("stem float", stem), ("tail float", tail),
                ("stem + tail float", stem + tail)]
        for label, excl in rows:
            print(f"  {label:<28} {psnr(excl):6.2f} dB   float: {excl}")
        print(f"  {'int8 activations':<28} {psnr([], QuantType.QInt8):6.2f} dB")
        print(f"  {'7-bit int8 weights':<28} {psnr([], reduce_range=True):6.2f} dB")
        print(f"  {'uint8 weights':<28} {psnr([], weight=QuantType.QUInt8):6.2f} dB")
        if args.single:
            for n in nodes:
                print(f"  float {n.op_type:<12} {n.name[-40:]:<40} {psnr([n.name]):6.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
