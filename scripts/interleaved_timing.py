"""Time two or more model files in turn, in one process, to compare files of one network.

`apps/benchmark.py` runs each case in a fresh process, one after the other; on a shared
VM a median then moves by a third between processes, and the order of two files of the
same network can reverse between runs. Here every file is loaded once and the files
take turns, call by call (the order flips every round), so they share the machine's state.

    python scripts/interleaved_timing.py A.onnx B.onnx [--rounds 3000] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sdk  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    models = [sdk.load_model(m, threads=args.threads) for m in args.models]
    rng = np.random.default_rng(args.seed)
    inputs = []
    for m in models:
        spec = m.inputs[0]
        shape = tuple(1 if not isinstance(d, int) or d < 1 else d for d in spec.shape)
        x = rng.integers(0, 256, shape)
        inputs.append([x.astype(spec.dtype)])
    times = [[] for _ in models]
    for m, x in zip(models, inputs):
        for _ in range(args.warmup):
            m.run(x)
    order = list(range(len(models)))
    for r in range(args.rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            models[i].run(inputs[i])
            times[i].append(time.perf_counter() - t)
    print(f"{args.rounds} rounds after {args.warmup} warm-up runs each, {args.threads} "
          "thread(s), batch 1, the files in turn:")
    for name, t in zip(args.models, times):
        ms = np.array(t) * 1e3
        print(f"  {name}: median {np.median(ms):.3f} ms, p90 {np.percentile(ms, 90):.3f}, "
              f"p99 {np.percentile(ms, 99):.3f}")
    for m in models:
        m.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
