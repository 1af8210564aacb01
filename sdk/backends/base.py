"""The protocol every inference backend implements.

One module per runtime lives next to this file; each imports its runtime
lazily (inside :meth:`Backend.load`), so importing ``sdk`` never pulls in
ONNX Runtime, LiteRT or TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np

from ..contract import ModelInfo, TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """Options shared by all backends.

    Attributes:
        threads: intra-op CPU threads; ``None`` lets the runtime decide.
        device: GPU ordinal for GPU backends.
        runtime: for ``tflite`` only, force one interpreter package:
            ``"ai_edge_litert"``, ``"tflite_runtime"`` or ``"tensorflow"``.
    """

    threads: int | None = None
    device: int = 0
    runtime: str | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")
        if not isinstance(self.device, int) or self.device < 0:
            raise ValueError(f"device must be a non-negative int, got {self.device!r}")


@runtime_checkable
class Backend(Protocol):
    """A loaded model in one runtime.

    ``run`` takes arrays already shaped and typed as ``inputs`` say (the
    :class:`sdk.Model` wrapper checks that) and returns one array per output,
    in ``outputs`` order.
    """

    name: ClassVar[str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    info: ModelInfo | None
    runtime: str  # e.g. "onnxruntime 1.32.0", shown in reports

    @classmethod
    def load(cls, path: Path, options: BackendOptions) -> "Backend": ...

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...
