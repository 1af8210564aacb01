"""Probe (session 25): ONNX Runtime's spinning worker threads, on and off.

The SDK turns ``session.intra_op.allow_spinning`` off (``sdk/backends/ort.py``).  This
prints, for both settings at ``--threads``: the model's median / p90 latency over
back-to-back runs, and the CPU time the process burns per second of wall time while the
app does what a camera loop does (a run, then waiting ``--idle-ms`` for the next frame).

    python scripts/ort_spin_probe.py [--model models/faces/face_encoder_int8.onnx]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/faces/face_encoder_int8.onnx"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--idle-ms", type=float, default=10.0)
    args = ap.parse_args(argv)
    for spin in ("1", "0"):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        x = np.random.default_rng(0).uniform(0, 255, [d if isinstance(d, int) else 1
                                                      for d in spec.shape]).astype(np.float32)
        for _ in range(20):
            session.run(None, {spec.name: x})
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            session.run(None, {spec.name: x})
            times.append(time.perf_counter() - start)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(100):
            session.run(None, {spec.name: x})
            time.sleep(args.idle_ms / 1000)
        burn = (time.process_time() - cpu) / (time.perf_counter() - wall)
        print(f"allow_spinning={spin}: median {1e3 * np.median(times):.3f} ms, p90 "
              f"{1e3 * np.percentile(times, 90):.3f} ms; CPU s per wall s with "
              f"{args.idle_ms:g} ms idle between runs: {burn:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
