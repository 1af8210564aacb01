"""Shared fixtures: paths to ../shared and tiny models built inside the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_SDK_SHARED", REPO.parent / "shared"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (third-party data lives in ../shared, see its README)")
    return p


def assert_agrees_with_float(ref: np.ndarray, got: np.ndarray, min_cos: float,
                             max_frac: float = 0.1) -> None:
    """A quantised model's outputs ``got`` against its float model's ``ref`` on the same
    inputs (first axis = input).

    Two checks, because a cosine floor alone cannot tell: an untrained encoder may put
    every input within a few degrees of one direction, so an output that ignores its input
    can clear the floor, and cosine is blind to a wrong output scale.  So besides the
    floor, each output must lie within ``max_frac`` of the median squared-L2 distance
    between different inputs' float outputs of its own input's float output."""
    from export.formats import agreement

    cos = agreement(ref, got).min_cosine
    assert cos >= min_cos, (cos, min_cos)
    i, j = np.triu_indices(len(ref), 1)
    spread = float(np.median(np.sum((ref[i] - ref[j]) ** 2, axis=1)))
    own = np.sum((np.asarray(got, np.float64) - ref) ** 2, axis=1)
    assert own.max() < max_frac * spread, (float(own.max()), spread, max_frac)


def load_app(name: str, folder: str = "apps"):
    """apps/<name>.py (or ``folder``/<name>.py, e.g. scripts/) as a module: neither is an
    installed package."""
    import importlib.util
    import sys

    path = REPO / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def yunet():
    """The YuNet detector file in ../shared (skips the test when absent)."""
    return shared_path("models", "yunet", "yunet_s_640_640.onnx")


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, or skip (only the export stage and its tests need it)."""
    return pytest.importorskip("tensorflow", reason="TensorFlow is needed to build test models "
                                                    "(pip install -e '.[train]')")


@pytest.fixture(scope="session")
def tiny_encoder(tf):
    """A tiny conv encoder (16x16x3 -> 8-d, L2-normalised by hand as the real encoders do)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(8)(x)
    out = layers.Lambda(lambda t: t * keras.ops.rsqrt(
        keras.ops.maximum(keras.ops.sum(t * t, axis=-1, keepdims=True), 1e-12)))(x)
    model = keras.Model(inp, out, name="tiny_encoder")
    # give BatchNorm non-trivial statistics so conversion really has to fold them
    bn = model.layers[4]
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    return model


@pytest.fixture(scope="session")
def tiny_info(tiny_encoder):
    from export.formats import source_hash
    from sdk.contract import ModelInfo, Preprocessing

    return ModelInfo(kind="face_encoder", name="tiny-test-encoder", inputs=(), outputs=(),
                     preprocessing=Preprocessing(channel_order="RGB", pixel_range=(0, 255)),
                     output={"embedding_size": 8, "metric": "squared_l2", "threshold": 0.8},
                     source_hash=source_hash(tiny_encoder))


@pytest.fixture(scope="session")
def sample_images():
    rng = np.random.default_rng(1)
    # smooth random images: closer to real pixels than white noise, so int8 calibrates sensibly
    base = rng.uniform(0, 255, size=(40, 4, 4, 3))
    return np.repeat(np.repeat(base, 4, axis=1), 4, axis=2).astype(np.float32) + \
        rng.normal(0, 8, size=(40, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def exported(tiny_encoder, tiny_info, sample_images, tmp_path_factory):
    """The tiny encoder in every format, written once per test session."""
    from export import formats

    d = tmp_path_factory.mktemp("exported")
    calib = [x[None] for x in sample_images[:24]]
    paths = {
        "tflite_fp32": formats.to_tflite(tiny_encoder, d / "m_fp32.tflite", tiny_info),
        "tflite_fp16": formats.to_tflite(tiny_encoder, d / "m_fp16.tflite", tiny_info,
                                         precision="fp16"),
        "tflite_int8": formats.to_tflite(tiny_encoder, d / "m_int8.tflite", tiny_info,
                                         precision="int8", calibration=calib),
        "onnx_fp32": formats.to_onnx(tiny_encoder, d / "m_fp32.onnx", tiny_info),
    }
    paths["onnx_int8"] = formats.quantize_onnx_int8(paths["onnx_fp32"], d / "m_int8.onnx", calib)
    return paths
