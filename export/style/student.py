"""The student: a small fully convolutional image-to-image network that learns
one style (Johnson et al.'s encoder / residual blocks / decoder, made mobile).

Choices made for clean conversion to TFLite int8, ONNX and TensorRT:

* BatchNormalization instead of instance normalisation: at inference it is a
  per-channel affine that the converters fold into the preceding conv, so no
  mean/variance is computed on the device (instance norm's reductions are the
  known int8/TensorRT trouble);
* zero ("same") padding instead of reflection padding;
* bilinear resize + conv for upsampling instead of Conv2DTranspose (no
  checkerboard, and better int8 agreement on these machines);
* depthwise-separable residual blocks to keep the MACs low (~0.45 GMAC at 256x256
  with the default widths);
* input RGB 0..255 (scaled inside), output ``255 * sigmoid``: the range is fixed,
  so int8 calibration of the output is exact and the SDK only clips and casts.

Two output stages (``StudentConfig.stages``):

* ``"full"`` (the first releases): a 3x3 conv at full resolution in the encoder, and
  bilinear x2 + separable conv + 3x3 output conv at full resolution in the decoder.
  16/32-channel tensors at full resolution cost memory bandwidth, which two CPU
  threads do not hide.
* ``"shuffle"``: no layer runs at full resolution. The stem is a stride-2 conv; the
  decoder's last conv runs at half resolution and emits 4 x 3 channels that
  ``depth_to_space`` (DEPTH_TO_SPACE in TFLite, DepthToSpace in ONNX/TensorRT, both
  int8-capable) rearranges into the full-resolution RGB image ("pixel shuffle", Shi et
  al. 2016), initialised so that it starts as a nearest-neighbour upsampling (ICNR);
  one 3x3 conv over the three colour planes is the only full-resolution layer.

Any input size whose sides are multiples of :data:`SIZE_MULTIPLE` gives an
output of the same size (two stride-2 stages, two x2 upsamplings).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Input sides must be multiples of this for the output to have the same size.
SIZE_MULTIPLE = 4


@dataclass(frozen=True)
class StudentConfig:
    """Widths of the student: ``base`` channels at full resolution, ``2*base`` at
    1/2, ``4*base`` in the ``blocks`` residual blocks at 1/4."""

    base: int = 16
    blocks: int = 4
    separable: bool = True
    # the default stays "full" so that runs and releases saved before "shuffle" existed
    # (their config.json has no such key) rebuild the architecture they were trained with
    stages: str = "full"

    def __post_init__(self) -> None:
        if self.base < 2 or self.blocks < 0:
            raise ValueError("base must be >= 2 and blocks >= 0")
        if self.stages not in STAGES:
            raise ValueError(f"stages must be one of {STAGES}, got {self.stages!r}")


#: The output stages :class:`StudentConfig` accepts (see the module docstring).
STAGES = ("full", "shuffle")


def _upsample_layer_class():
    """``Upsample2x``: bilinear x2 resize with a dynamic size.

    Keras 3's ``UpSampling2D(interpolation="bilinear")`` cannot be traced with
    unknown height/width (it tests a symbolic shape in Python), which breaks the
    SavedModel route of the TFLite converter; ``tf.image.resize`` on the runtime
    shape becomes RESIZE_BILINEAR (TFLite) / Resize (ONNX).
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="edge_sdk_style")
    class Upsample2x(keras.layers.Layer):
        def call(self, x):
            shape = tf.shape(x)
            return tf.image.resize(x, tf.stack([shape[1] * 2, shape[2] * 2]), method="bilinear")

        def compute_output_shape(self, input_shape):
            b, h, w, c = input_shape
            return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)

    return Upsample2x


def _pixel_shuffle_layer_class():
    """``PixelShuffle2x``: ``depth_to_space`` with block 2 (12 channels -> RGB at x2)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="edge_sdk_style")
    class PixelShuffle2x(keras.layers.Layer):
        def call(self, x):
            return tf.nn.depth_to_space(x, 2)

        def compute_output_shape(self, input_shape):
            b, h, w, c = input_shape
            return (b, None if h is None else 2 * h, None if w is None else 2 * w, c // 4)

    return PixelShuffle2x


def _icnr_initializer():
    import keras

    def init(shape, dtype=None):
        # depth_to_space reads channel (2*i + j)*3 + c for sub-pixel (i, j), colour c
        kh, kw, cin, cout = shape
        base = keras.initializers.GlorotUniform()((kh, kw, cin, cout // 4), dtype=dtype)
        return keras.ops.tile(base, (1, 1, 1, 4))

    return init


def _identity_3x3(shape, dtype=None):
    import numpy as np

    kernel = np.zeros(shape, dtype="float32")
    for c in range(min(shape[2], shape[3])):
        kernel[shape[0] // 2, shape[1] // 2, c, c] = 1.0
    return kernel


def build_student(config: StudentConfig = StudentConfig(), name: str = "style_student"):
    """The Keras student, input ``(None, None, None, 3)`` RGB float 0..255 ->
    output of the same size, RGB float in 0..255."""
    import keras
    from keras import layers

    b = config.base
    upsample = _upsample_layer_class()

    def conv_bn_relu(x, filters, kernel, strides, tag):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                          name=f"{tag}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{tag}_bn")(x)
        return layers.ReLU(name=f"{tag}_relu")(x)

    def sep_bn(x, filters, tag, relu=True):
        if config.separable:
            x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{tag}_dw")(x)
            x = layers.Conv2D(filters, 1, use_bias=False, name=f"{tag}_pw")(x)
        else:
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{tag}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{tag}_bn")(x)
        return layers.ReLU(name=f"{tag}_relu")(x) if relu else x

    inp = keras.Input((None, None, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
    if config.stages == "full":
        x = conv_bn_relu(x, b, 3, 1, "enc1")
        x = conv_bn_relu(x, 2 * b, 3, 2, "enc2")
    else:
        x = conv_bn_relu(x, 2 * b, 3, 2, "enc2")
    x = conv_bn_relu(x, 4 * b, 3, 2, "enc3")
    for i in range(config.blocks):
        y = sep_bn(x, 4 * b, f"res{i}a")
        y = sep_bn(y, 4 * b, f"res{i}b", relu=False)
        x = layers.Add(name=f"res{i}_add")([x, y])
    x = upsample(name="up1")(x)
    x = sep_bn(x, 2 * b, "dec1")
    if config.stages == "full":
        x = upsample(name="up2")(x)
        x = sep_bn(x, b, "dec2")
        x = layers.Conv2D(3, 3, padding="same", name="out_conv")(x)
    else:
        # ICNR initialisation (Aitken et al. 2017): the four sub-pixel outputs of each
        # colour start equal, i.e. the shuffle starts as a nearest-neighbour upsampling
        # instead of four independent random maps (the 2-pixel checkerboard seen in
        # training without it)
        x = layers.Conv2D(12, 3, padding="same", kernel_initializer=_icnr_initializer(),
                          name="out_conv")(x)
        x = _pixel_shuffle_layer_class()(name="shuffle")(x)
        # one 3x3 conv on the three colour planes at full resolution (81 MACs per
        # pixel) can still smooth what is left of the 2x2 pattern; starts as identity
        x = layers.Conv2D(3, 3, padding="same", kernel_initializer=_identity_3x3,
                          name="smooth_conv")(x)
    x = layers.Activation("sigmoid", name="out_sigmoid")(x)
    out = layers.Rescaling(255.0, name="to_0_255")(x)
    return keras.Model(inp, out, name=name)
