"""Siamese encoders for 1D signals, 2D images and 3D volumes from one builder.

An input of shape ``(n, channels)`` builds a Conv1D encoder, ``(h, w, c)`` a
Conv2D one and ``(d, h, w, c)`` a Conv3D one; everything after the builder
(triplet training, export, the ``sdk`` runtime and galleries) is the same.

Shape rule of the first layer ("valid" convolution, stride 1): each spatial
size shrinks by ``kernel - 1``, channels become the number of filters — a
14x1 signal through 16 filters of 5x1 gives 10x16, a 14x14x14x1 volume through
16 filters of 5x5x5x1 gives 10x10x10x16.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers, ops

# rank of the spatial part -> layer classes; a table, not a chain of ifs
_CONV = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
_GLOBAL_POOL = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D,
                3: layers.GlobalAveragePooling3D}


# Registered under the face encoder's package name: released face models were saved with it.
@keras.saving.register_keras_serializable(package="edge_faces")
class L2Normalize(layers.Layer):
    """Unit-length rows, written as ``x * rsqrt(max(sum(x^2), eps))``.

    ``keras.layers.UnitNormalization`` converts to a float SQUARE that a
    full-int8 TFLite model cannot keep; this form quantises cleanly.
    """

    def __init__(self, eps: float = 1e-10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps = eps

    def call(self, x):
        return x * ops.rsqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), self.eps))

    def get_config(self) -> dict:
        return {**super().get_config(), "eps": self.eps}


def spatial_rank(input_shape: Sequence[int]) -> int:
    """1 for (n, c), 2 for (h, w, c), 3 for (d, h, w, c)."""
    rank = len(input_shape) - 1
    if rank not in _CONV:
        raise ValueError(f"input_shape must be (n, c), (h, w, c) or (d, h, w, c), "
                         f"got {tuple(input_shape)}")
    return rank


def valid_conv_output_shape(input_shape: Sequence[int], filters: int,
                            kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    """Output shape of a stride-1 'valid' convolution (the shape rule above)."""
    rank = spatial_rank(input_shape)
    kernel = (kernel_size,) * rank if isinstance(kernel_size, int) else tuple(kernel_size)
    out = tuple(n - k + 1 for n, k in zip(input_shape[:rank], kernel))
    if min(out) < 1:
        raise ValueError(f"kernel {kernel} does not fit input {tuple(input_shape)}")
    return (*out, filters)


def build_encoder(input_shape: Sequence[int], *, filters: Sequence[int] = (16, 32, 64),
                  kernel_size: int | Sequence[int] = 5, embedding_size: int = 64,
                  mean: float = 0.0, std: float = 1.0, name: str = "encoder") -> keras.Model:
    """A small conv encoder ending in an L2-normalised embedding.

    The first convolution is 'valid' (the shape rule above); the following ones
    halve each spatial size with stride 2 (not pooling: MaxPooling3D does not
    convert to built-in TFLite ops). ``(x - mean) / std`` is applied inside the
    model so the exported file takes raw features.
    """
    rank = spatial_rank(input_shape)
    conv = _CONV[rank]
    inp = keras.Input(tuple(input_shape), name="input")
    x = layers.Rescaling(1.0 / std, offset=-mean / std, name="normalise")(inp)
    x = conv(filters[0], kernel_size, padding="valid", name="conv_valid")(x)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    for i, f in enumerate(filters[1:], start=1):
        x = conv(f, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = _GLOBAL_POOL[rank](name="pool")(x)
    x = layers.Dense(embedding_size, name="embedding")(x)
    out = L2Normalize(name="l2")(x)
    return keras.Model(inp, out, name=name)
