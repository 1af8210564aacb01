"""``python -m export <command> ...``: training, evaluation, quantisation, conversion.

Each command lives in its own module exposing ``main(argv) -> int``; this
table maps command names to modules, imported only for the command run.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "faces": ("export.faces.cli", "train, evaluate and export the face encoder"),
    "style": ("export.style.cli", "Gatys optimiser, fast style network training and export"),
    "jetson": ("export.jetson.cli", "check ONNX graphs and build TensorRT engines"),
    "nd": ("export.nd.cli", "1D signal / 3D clip encoders: example data, training, export"),
    "visualize": ("export.visualize.cli", "top-9 patches per unit of a trained network"),
    "seal": ("export.seal", "write its own SHA-256 into a model file exported before seals"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = "\n".join(f"  {k:<{width}}  {v[1]}" for k, v in COMMANDS.items())
        print(f"usage: python -m export <command> [options]\n\ncommands:\n{lines}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
