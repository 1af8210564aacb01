"""Top-9 patch visualiser: receptive fields from the layer graph, patch search, grid."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_net(tf):
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 3))
    a = layers.Conv2D(4, 3, padding="valid", name="c1")(inp)            # rf 3, jump 1
    b = layers.MaxPooling2D(2, name="p1")(a)                            # rf 4, jump 2
    c = layers.Conv2D(4, 3, strides=2, padding="same", name="c2")(b)    # rf 8, jump 4
    d = layers.Conv2D(4, 5, padding="same", dilation_rate=2, name="c3")(c)  # rf 8+8*4=40
    e = layers.Concatenate(name="cat")([c, d])
    f = layers.GlobalAveragePooling2D(name="gap")(e)
    return keras.Model(inp, f)


def test_receptive_fields_follow_the_layer_arithmetic(small_net):
    from export.visualize import receptive_fields

    rf = receptive_fields(small_net)
    assert (rf["c1"].size, rf["c1"].jump, rf["c1"].start) == (3, 1, 1)
    assert (rf["p1"].size, rf["p1"].jump) == (4, 2)
    assert (rf["c2"].size, rf["c2"].jump) == (8, 4)
    assert (rf["c3"].size, rf["c3"].jump) == (40, 4)
    assert rf["cat"].size == 40            # a merge sees the largest field
    assert rf["gap"].size is None          # global pooling sees everything


def test_top_patches_find_the_planted_pattern(small_net, tf):
    """A unit that detects a bright dot must pick the images/positions where the dot is."""
    import keras
    from keras import layers

    from export.visualize import top_patches

    inp = keras.Input((24, 24, 3))
    conv = layers.Conv2D(2, 3, padding="valid", name="dot", use_bias=False)
    out = conv(inp)
    model = keras.Model(inp, out)
    k = np.zeros((3, 3, 3, 2), np.float32)
    k[1, 1, :, 0] = 1.0           # unit 0: brightness of the centre pixel
    k[:, :, :, 1] = -1.0 / 27     # unit 1: darkness
    conv.set_weights([k])
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 50, (24, 24, 3)).astype(np.float32) for _ in range(20)]
    planted = {3: (5, 7), 11: (15, 2), 17: (9, 18)}
    for i, (y, x) in planted.items():
        images[i][y, x] = 255.0
    units, hits, field = top_patches(model, "dot", images, units=[0], per_unit=3)
    found = {(h.image, h.y + 1, h.x + 1) for h in hits[0]}  # valid conv: output (y,x) = input+1
    assert found == {(i, y, x) for i, (y, x) in planted.items()}
    assert field.size == 3


def test_crop_and_grid_shapes():
    from export.visualize import ReceptiveField, crop_patch, grid

    img = np.zeros((50, 60, 3), np.uint8)
    patch = crop_patch(img, ReceptiveField(11, 2, 1), y=0, x=0)  # runs off the image: padded
    assert patch.shape == (11, 11, 3)
    out = grid([[patch] * 9] * 9, tile=16, gap=1, block_gap=4)
    assert out.shape == (3 * (3 * 16 + 2) + 4 * 4,) * 2 + (3,)


def test_unknown_layer_lists_layers(small_net):
    from export.visualize import VisualizeError, top_patches

    with pytest.raises(VisualizeError, match="no layer 'nope'.*c1"):
        top_patches(small_net, "nope", [np.zeros((32, 32, 3), np.float32)])


def test_cli_on_squeezenet_shallow_layer(tmp_path):
    from conftest import shared_path

    from export.visualize.cli import main

    weights = shared_path("models", "squeezenet1.1",
                          "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5")
    images = shared_path("data", "style", "content-train")
    out = tmp_path / "grid.png"
    assert main(["--model", "squeezenet", "--weights", str(weights), "--layer", "fire2_concat",
                 "--images", str(images), "--max-images", "12", "--size", "96",
                 "--out", str(out)]) == 0
    import cv2

    grid_img = cv2.imread(str(out))
    assert grid_img is not None and grid_img.shape[0] == grid_img.shape[1] > 9 * 32


@pytest.mark.parametrize("side", [7, 8])
def test_unit_centres_match_tensorflow_padding_on_odd_and_even_sizes(tf, side):
    """A centre-tap kernel copies one input pixel per unit: the field's centre must name it."""
    import keras
    from keras import layers

    from export.visualize import receptive_fields

    inp = keras.Input((side, side, 1))
    x = layers.ZeroPadding2D(((2, 0), (2, 0)), name="pad")(inp)
    x = layers.Conv2D(1, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    model = keras.Model(inp, x)
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[1, 1] = 1.0
    model.get_layer("conv").set_weights([kernel])
    rows = np.repeat(np.arange(side, dtype=np.float32)[:, None], side, axis=1) + 1  # row + 1
    out = np.asarray(model(rows[None, :, :, None]))[0, :, -1, 0]  # a column off the padding
    field = receptive_fields(model, input_size=side)["conv"]
    for i, value in enumerate(out):
        centre = field.centre(i)
        # a unit over the zero padding reads 0; every other one reads its centre row + 1
        assert value == (0.0 if centre < 0 else centre + 1), (side, i, centre, value)


def test_nested_models_and_unknown_layers_are_refused(tf):
    import keras
    from keras import layers

    from export.visualize import VisualizeError, receptive_fields

    inner = keras.Sequential([layers.Conv2D(2, 3)], name="inner")
    inp = keras.Input((16, 16, 3))
    with pytest.raises(VisualizeError, match="nested model"):
        receptive_fields(keras.Model(inp, inner(inp)))
    odd = layers.Reshape((8, 32, 3), name="reshape")(inp)
    with pytest.raises(VisualizeError, match="Reshape"):
        receptive_fields(keras.Model(inp, odd))


def test_vgg19_loss_network_is_flat_with_known_fields(tf):
    """Its convs are layers of the model itself (conv5_4 sees 252 px), and its features work."""
    from export.style import lossnet
    from export.visualize import receptive_fields

    net = lossnet.vgg19(None)
    rf = receptive_fields(net)
    assert (rf["block3_conv1"].size, rf["block3_conv1"].jump) == (24, 4)
    assert (rf["block5_conv4"].size, rf["block5_conv4"].jump) == (252, 16)
    feats = lossnet.feature_extractor("vgg19", ["block1_conv1", "block2_conv1"], weights=None)
    out = feats(np.zeros((1, 32, 32, 3), np.float32))
    assert out["block1_conv1"].shape == (1, 32, 32, 64)
    assert out["block2_conv1"].shape == (1, 16, 16, 128)
