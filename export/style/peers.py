"""The peers of the style benchmark: Magenta's arbitrary-style TFLite pair and a
Johnson fast-style network stored as TF.js raw weights (Engstrom's
``fast-style-transfer`` layout, as published by ml5).

The Johnson network (``johnson_from_tfjs``) is rebuilt in Keras from its
``manifest.json`` so it runs, and converts, like our own student:
conv 9x9/32 s1, conv 3x3/64 s2, conv 3x3/128 s2, 5 residual blocks (128),
transposed conv 3x3/64 s2, transposed conv 3x3/32 s2, conv 9x9/3; every conv
without bias and followed by instance normalisation (shift, then scale, as the
variables were created), ReLU except after the last; output ``tanh(x)*150 + 127.5``;
input RGB 0..255 without normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sdk.paths import SHARED_DIR

PEERS = SHARED_DIR / "models" / "peers"
MAGENTA = PEERS / "magenta-style"
JOHNSON_UDNIE = PEERS / "johnson-fast-style" / "udnie"


def read_tfjs_raw(folder: str | Path) -> list[np.ndarray]:
    """The variables of a TF.js raw-weights folder in creation order (Variable, Variable_1, ...)."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())

    def order(name: str) -> int:
        return 0 if name == "Variable" else int(name.rsplit("_", 1)[1])

    arrays = []
    for name in sorted(manifest, key=order):
        entry = manifest[name]
        data = np.fromfile(folder / entry["filename"], dtype="<f4")
        shape = tuple(entry["shape"])
        if data.size != int(np.prod(shape)):
            raise ValueError(f"{folder / entry['filename']}: {data.size} floats, "
                             f"manifest says {shape}")
        arrays.append(data.reshape(shape))
    return arrays


def johnson_from_tfjs(folder: str | Path = JOHNSON_UDNIE,
                      input_shape: tuple = (None, None, 3)):
    """The Johnson network with the folder's weights: a Keras model, RGB 0..255 in and out."""
    import keras
    from keras import layers, ops

    weights = iter(read_tfjs_raw(folder))

    class InstanceNorm(layers.Layer):
        """``scale * (x - mean) / sqrt(var + 1e-3) + shift`` over H, W per image and channel."""

        def __init__(self, shift, scale, **kw):
            super().__init__(**kw)
            self._init = (shift, scale)

        def build(self, input_shape):
            shift, scale = self._init
            self.shift = self.add_weight(shape=shift.shape, initializer="zeros", name="shift")
            self.scale = self.add_weight(shape=scale.shape, initializer="ones", name="scale")
            self.shift.assign(shift)
            self.scale.assign(scale)

        def call(self, x):
            mean, var = ops.moments(x, axes=[1, 2], keepdims=True)
            return self.scale * (x - mean) * ops.rsqrt(var + 1e-3) + self.shift

    def conv(x, strides, relu=True, transpose=False):
        kernel = next(weights)
        shift, scale = next(weights), next(weights)
        if transpose:   # TF conv2d_transpose filters are (h, w, out, in), as Keras stores them
            layer = layers.Conv2DTranspose(kernel.shape[2], kernel.shape[0], strides=strides,
                                           padding="same", use_bias=False)
        else:
            layer = layers.Conv2D(kernel.shape[3], kernel.shape[0], strides=strides,
                                  padding="same", use_bias=False)
        x = layer(x)
        layer.set_weights([kernel])
        x = InstanceNorm(shift, scale)(x)
        return layers.ReLU()(x) if relu else x

    inp = keras.Input(input_shape, name="image")
    x = conv(inp, 1)
    x = conv(x, 2)
    x = conv(x, 2)
    for _ in range(5):
        y = conv(x, 1)
        y = conv(y, 1, relu=False)
        x = layers.Add()([x, y])
    x = conv(x, 2, transpose=True)
    x = conv(x, 2, transpose=True)
    x = conv(x, 1, relu=False)
    out = layers.Lambda(lambda t: ops.tanh(t) * 150.0 + 127.5)(x)
    if next(weights, None) is not None:
        raise ValueError(f"{folder}: more variables than the Johnson architecture uses")
    return keras.Model(inp, out, name="johnson_udnie")
