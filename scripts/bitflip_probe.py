"""Probe (session 25): what a model file damaged in storage does when loaded.

Copies of a model file with a few random bits flipped are each loaded and run once in a
fresh process (a damaged flatbuffer can crash an interpreter natively); each copy ends
as "ran" (other weights, no word), a typed SDK error (which one), or a crash.

``--without-seal`` renames the contract's ``file_sha256`` key first (the same length:
the file is otherwise unchanged), which is what a file exported before seals was: the
"before" column of docs/EXPORT.md.

    python scripts/bitflip_probe.py models/faces/face_encoder_int8.tflite --copies 40 \\
        --without-seal
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

RUN_ONE = """
import sys
import numpy as np
import sdk
try:
    with sdk.load_model(sys.argv[1], threads=1) as m:
        spec = m.inputs[0]
        x = np.zeros([d or 1 for d in spec.shape], spec.dtype)
        m.run(x)
    print("ran")
except sdk.errors.SdkError as exc:
    print("refused: " + type(exc).__name__)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--bits", type=int, default=3, help="bits flipped per copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--without-seal", action="store_true",
                    help="hide the seal first (a file exported before seals)")
    args = ap.parse_args(argv)
    data = args.model.read_bytes()
    if args.without_seal:
        data = data.replace(b'"file_sha256":"', b'"file_sha2xx":"')
    outcomes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.copies):
            rng = random.Random(args.seed * 100003 + k)
            damaged = bytearray(data)
            for _ in range(args.bits):
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
            path = Path(tmp) / f"copy{k}{args.model.suffix}"
            path.write_bytes(bytes(damaged))
            done = subprocess.run([sys.executable, "-c", RUN_ONE, str(path)],
                                  capture_output=True, text=True, timeout=300)
            lines = done.stdout.strip().splitlines()
            outcomes[lines[-1] if lines else f"crashed (exit {done.returncode})"] += 1
    print(f"{args.model} ({'seal hidden' if args.without_seal else 'as it is'}), "
          f"{args.copies} copies with {args.bits} bits flipped:")
    for outcome, n in outcomes.most_common():
        print(f"  {n:4d}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
