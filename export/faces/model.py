"""The face encoder: a MobileFaceNet-like network and the pair-verification heads.

Input: 112x112x3 RGB float in 0..255 (normalisation is inside the model).
Output: a 128-d embedding, L2-normalised inside the model as
``x * rsqrt(max(sum(x*x), eps))`` (written by hand: Keras' ``UnitNormalization``
leaves a float SQUARE op in a full-int8 TFLite model).

Architecture (after MobileFaceNet, Chen et al. 2018): 3x3 stride-2 conv,
depthwise 3x3, inverted-residual bottlenecks (expand 1x1, depthwise 3x3,
project 1x1, linear bottleneck, residual when shapes match), a 1x1 conv, a
global depthwise conv (GDConv 7x7, keeps where features are, unlike average
pooling) and a linear 1x1 to 128.  ``width`` scales all channel counts.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from export.encoders import L2Normalize

INPUT_SIZE = 112
EMBEDDING_SIZE = 128


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _dw_bn(x, stride: int, name: str, act: bool = True, kernel: int = 3, padding: str = "same"):
    x = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False,
                               name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _bottleneck(x, out: int, expand: int, stride: int, name: str):
    cin = x.shape[-1]
    y = _conv_bn(x, cin * expand, 1, 1, f"{name}_exp")
    y = _dw_bn(y, stride, f"{name}_dw")
    y = _conv_bn(y, out, 1, 1, f"{name}_proj", act=False)
    if stride == 1 and cin == out:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_encoder(width: float = 1.0, expand: int = 2, embedding_size: int = EMBEDDING_SIZE,
                  blocks: tuple[int, int, int] = (3, 4, 2), final: int = 256,
                  name: str = "face_encoder") -> keras.Model:
    """The MobileFaceNet-like encoder (Keras functional model).

    Args:
        width: channel multiplier (1.0: 64/64/128/128 stage channels).
        expand: expansion factor of the bottlenecks.
        blocks: number of bottlenecks at 28x28, 14x14 and 7x7.
        final: channels of the 1x1 conv before the global depthwise conv.
    """
    c = lambda n: max(8, int(round(n * width / 8)) * 8)  # noqa: E731
    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inp)
    x = _conv_bn(x, c(64), 3, 2, "stem")                     # 56
    x = _dw_bn(x, 1, "stem_dw")
    x = _bottleneck(x, c(64), expand, 2, "b1_0")             # 28
    for i in range(1, blocks[0]):
        x = _bottleneck(x, c(64), expand, 1, f"b1_{i}")
    x = _bottleneck(x, c(128), expand * 2, 2, "b2_0")        # 14
    for i in range(1, blocks[1]):
        x = _bottleneck(x, c(128), expand, 1, f"b2_{i}")
    x = _bottleneck(x, c(128), expand * 2, 2, "b3_0")        # 7
    for i in range(1, blocks[2]):
        x = _bottleneck(x, c(128), expand, 1, f"b3_{i}")
    x = _conv_bn(x, c(final), 1, 1, "head")
    x = _dw_bn(x, 1, "gdconv", act=False, kernel=7, padding="valid")   # 1x1
    x = layers.Dropout(0.1, name="dropout")(x)
    x = layers.Conv2D(embedding_size, 1, use_bias=False, name="embed_conv")(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name="embed_bn")(x)
    x = layers.Flatten(name="flatten")(x)
    out = L2Normalize(name="l2norm")(x)
    return keras.Model(inp, out, name=name)


def encoder_width(model: keras.Model) -> float:
    """The ``width`` a :func:`build_encoder` model was built with (its stem has
    ``c(64)`` channels, a multiple of 8)."""
    return model.get_layer("stem_conv").filters / 64


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            h, w, c = layer.output.shape[1:]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += h * w * c * k
        elif isinstance(layer, layers.Conv2D):
            h, w, c = layer.output.shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


# ----------------------------------------------------------------- pair verification heads

def pair_features(fi, fj, form: str = "abs", eps: float = 1e-3):
    """Per-dimension features of an embedding pair for the verification head.

    ``abs``: |f_i - f_j|.  ``chi2``: (f_i - f_j)^2 / (|f_i| + |f_j| + eps).
    The classic chi-square form divides by (f_i + f_j), which assumes
    non-negative features (histograms, post-ReLU); our embeddings are signed
    (L2-normalised, components in [-1, 1]) so f_i + f_j can be 0 or negative
    and the ratio would flip sign or explode.  Using |f_i| + |f_j| keeps every
    term >= 0, equals the classic form when both are >= 0, and ``eps`` bounds
    it when both components are near 0.
    """
    diff = fi - fj
    if form == "abs":
        return ops.abs(diff)
    if form == "chi2":
        return diff * diff / (ops.abs(fi) + ops.abs(fj) + eps)
    raise ValueError(f"form must be 'abs' or 'chi2', got {form!r}")


def build_pair_head(form: str = "abs", embedding_size: int = EMBEDDING_SIZE) -> keras.Model:
    """ŷ = σ(Σ_k w_k · φ_k(f_i, f_j) + b) on two embeddings; φ from :func:`pair_features`."""
    a = keras.Input((embedding_size,), name="emb_a")
    b = keras.Input((embedding_size,), name="emb_b")
    feats = layers.Lambda(lambda t: pair_features(t[0], t[1], form), name=f"phi_{form}")([a, b])
    out = layers.Dense(1, activation="sigmoid", name="logistic")(feats)
    return keras.Model([a, b], out, name=f"pair_head_{form}")
