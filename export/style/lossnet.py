"""Loss networks with named layers: SqueezeNet 1.1 (the offline default, weights
from a local ``.h5`` file with Keras layer names) and VGG19 (Keras applications).

A loss network is a frozen Keras model that takes RGB images in 0..255
(float32, NHWC) and returns a dict ``{layer name: activations}`` for the layers
asked for.  Each network does its own ImageNet pre-processing inside, so callers
never repeat it: both were trained "caffe" style (BGR, mean subtracted, no scaling).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sdk.paths import SHARED_DIR

#: The SqueezeNet 1.1 ImageNet weights (DeepCognition/keras-squeezenet, MIT).
SQUEEZENET_WEIGHTS = (SHARED_DIR / "models" / "squeezenet1.1" /
                      "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5")

#: ImageNet channel means in BGR order ("caffe" pre-processing of both networks).
_BGR_MEAN = (103.939, 116.779, 123.68)


def layer_name(name: str) -> str:
    """The Keras layer name for a SqueezeNet layer given as in the weights file
    (``fire4/concat`` -> ``fire4_concat``); other names are returned unchanged."""
    return name.replace("/", "_")


@dataclass(frozen=True)
class LayerChoice:
    """Which layers a loss network exposes: one content layer and weighted style layers."""

    content: str
    style: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        # accept the weights file's "fire4/concat" spelling as well as Keras' "fire4_concat"
        object.__setattr__(self, "content", layer_name(self.content))
        object.__setattr__(self, "style",
                           tuple((layer_name(n), float(w)) for n, w in self.style))

    @property
    def style_weights(self) -> dict[str, float]:
        return dict(self.style)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([self.content, *self.style_weights]))


#: Defaults.  SqueezeNet: content in the middle (fire4, 1/8 resolution); style
#: from the first conv to fire7 so strokes of several sizes are matched.  The
#: lambdas (sum 1) lean towards the layers whose J_style[l] is small between a
#: photo and a painting (fire7: ~4e4 vs fire3: ~6e5 for chicago vs udnie at
#: 256 px), so the large-scale layers are not drowned by the fine ones.
DEFAULT_LAYERS = {
    "squeezenet": LayerChoice(content="fire4_concat",
                              style=(("relu_conv1", 0.2), ("fire2_concat", 0.2),
                                     ("fire3_concat", 0.1), ("fire5_concat", 0.2),
                                     ("fire7_concat", 0.3))),
    "vgg19": LayerChoice(content="block4_conv2",
                         style=(("block1_conv1", 0.2), ("block2_conv1", 0.2),
                                ("block3_conv1", 0.2), ("block4_conv1", 0.2),
                                ("block5_conv1", 0.2))),
}


def _caffe_preprocess(x):
    """RGB 0..255 -> BGR minus the ImageNet mean (what both networks were trained on)."""
    from keras import ops

    x = ops.flip(x, axis=-1)
    return x - ops.convert_to_tensor(_BGR_MEAN, dtype="float32")


def squeezenet(weights: str | os.PathLike | None = SQUEEZENET_WEIGHTS):
    """SqueezeNet 1.1 without its classifier, with the Keras layer names of the weights file
    (``conv1``, ``relu_conv1``, ``pool1``, ``fire2/squeeze1x1`` ... ``fire9/concat``).

    Keras 3 forbids ``/`` in layer names, so the layers are named with ``_``
    (``fire2_squeeze1x1``); :func:`layer_name` maps either spelling, and the
    weights are matched to the file's ``/`` names.

    Args:
        weights: the ``..._notop.h5`` file; ``None`` leaves random weights (tests).

    Raises:
        FileNotFoundError: the weights file does not exist.
        ValueError: the file lacks a layer or a tensor has another shape.
    """
    import keras
    from keras import layers

    inp = keras.Input((None, None, 3), name="image_rgb_0_255")
    x = layers.Lambda(_caffe_preprocess, name="caffe_preprocess")(inp)
    x = layers.Conv2D(64, 3, strides=2, padding="valid", name="conv1")(x)
    x = layers.ReLU(name="relu_conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)

    def fire(x, idx: int, squeeze: int, expand: int):
        p = f"fire{idx}_"
        x = layers.Conv2D(squeeze, 1, name=p + "squeeze1x1")(x)
        x = layers.ReLU(name=p + "relu_squeeze1x1")(x)
        left = layers.ReLU(name=p + "relu_expand1x1")(layers.Conv2D(expand, 1, name=p + "expand1x1")(x))
        right = layers.ReLU(name=p + "relu_expand3x3")(
            layers.Conv2D(expand, 3, padding="same", name=p + "expand3x3")(x))
        return layers.Concatenate(axis=-1, name=p + "concat")([left, right])

    x = fire(x, 2, 16, 64)
    x = fire(x, 3, 16, 64)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = fire(x, 4, 32, 128)
    x = fire(x, 5, 32, 128)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    x = fire(x, 6, 48, 192)
    x = fire(x, 7, 48, 192)
    x = fire(x, 8, 64, 256)
    x = fire(x, 9, 64, 256)
    model = keras.Model(inp, x, name="squeezenet1_1")
    if weights is not None:
        _load_squeezenet_h5(model, Path(weights))
    model.trainable = False
    return model


def _load_squeezenet_h5(model, path: Path) -> None:
    """Assign kernel and bias of every conv layer by layer name.

    The file is a Keras-1 style ``.h5`` (``<layer>/<tensor>`` datasets whose tensor
    names are not kernel/bias): reading it by hand is more robust than Keras 3's
    legacy loader, and every conv layer must be found (no silent partial load).
    """
    import h5py
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"SqueezeNet weights not found: {path} (see ../shared/README.md)")
    with h5py.File(path, "r") as f:
        for layer in model.layers:
            if not layer.weights:
                continue
            h5_name = layer.name.replace("_", "/", 1) if layer.name.startswith("fire") \
                else layer.name
            if h5_name not in f:
                raise ValueError(f"{path}: no weights for layer {h5_name!r}")
            tensors: list = []
            f[h5_name].visititems(
                lambda _, o: tensors.append(np.asarray(o)) if isinstance(o, h5py.Dataset) else None)
            kernel = [t for t in tensors if t.ndim == 4]
            bias = [t for t in tensors if t.ndim == 1]
            if len(kernel) != 1 or len(bias) != 1:
                raise ValueError(f"{path}: layer {layer.name!r} has {len(tensors)} tensors, "
                                 "expected one kernel and one bias")
            want = [tuple(w.shape) for w in layer.weights]
            if [kernel[0].shape, bias[0].shape] != want:
                raise ValueError(f"{path}: layer {layer.name!r} has shapes "
                                 f"{[kernel[0].shape, bias[0].shape]}, the network needs {want}")
            layer.set_weights([kernel[0], bias[0]])


def vgg19(weights: str | os.PathLike | None = None):
    """VGG19 without its classifier (Keras applications layer names, ``block1_conv1`` ...).

    Args:
        weights: a local weights file (e.g. ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
            or a ``.weights.h5`` saved by Keras); ``"imagenet"`` lets Keras take it from its
            cache or download it; ``None`` leaves random weights.

    Raises:
        FileNotFoundError: a local file that does not exist.
    """
    import keras

    if weights not in (None, "imagenet"):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"VGG19 weights not found: {weights}")
        weights = str(weights)
    base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    inp = keras.Input((None, None, 3), name="image_rgb_0_255")
    x = keras.layers.Lambda(_caffe_preprocess, name="caffe_preprocess")(inp)
    # copies of the applications model's layers, in a chain (VGG19 is one), not the model
    # as one nested layer: every conv is then a layer of this model, by its own name, with
    # this graph as its only one (the feature extractor and the visualiser walk it)
    for layer in base.layers[1:]:
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copy.set_weights(layer.get_weights())
    model = keras.Model(inp, x, name="vgg19_lossnet")
    model.trainable = False
    return model


def feature_extractor(network: str = "squeezenet", layer_names: Sequence[str] | None = None,
                      weights: str | os.PathLike | None = "default"):
    """A model ``images (B,H,W,3) RGB 0..255 -> {name: activations}`` for ``layer_names``.

    Args:
        network: ``"squeezenet"`` or ``"vgg19"``.
        layer_names: defaults to the content and style layers of :data:`DEFAULT_LAYERS`.
        weights: ``"default"`` (SqueezeNet: the local file; VGG19: ``"imagenet"``),
            a path, or ``None`` (random, tests).
    """
    import keras

    if network not in DEFAULT_LAYERS:
        raise ValueError(f"network must be one of {sorted(DEFAULT_LAYERS)}, got {network!r}")
    names = [layer_name(n) for n in (layer_names or DEFAULT_LAYERS[network].names)]
    if network == "squeezenet":
        base = squeezenet(SQUEEZENET_WEIGHTS if weights == "default" else weights)
    else:
        base = vgg19("imagenet" if weights == "default" else weights)
    known = [layer.name for layer in base.layers]
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"{network} has no layer(s) {missing}; it has {known}")
    outputs = {n: base.get_layer(n).output for n in names}
    model = keras.Model(base.input, outputs, name=f"{network}_features")
    model.trainable = False
    return model
