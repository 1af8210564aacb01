"""edge-sdk: on-device face recognition and style transfer.

The runtime needs numpy, OpenCV and one inference backend (ONNX Runtime,
the TFLite interpreter, or TensorRT + pycuda); never TensorFlow.  Importing
``sdk`` is cheap: runtimes and task classes load on first use.
"""

from __future__ import annotations

import importlib

from . import errors
from .contract import ModelInfo, Preprocessing, TensorSpec
from .distance import l2_normalize, squared_l2
from .model import Model, load_model

__version__ = "0.1.0"

# Task classes resolved lazily (PEP 562) so `import sdk` loads no model code.
_LAZY = {
    "Encoder": "sdk.encoder",
    "EncoderOptions": "sdk.encoder",
    "FaceDetector": "sdk.faces.detector",
    "FaceDetectorOptions": "sdk.faces.detector",
    "FaceVerifier": "sdk.faces.verifier",
    "FaceVerifierOptions": "sdk.faces.verifier",
    "FaceQuality": "sdk.faces.quality",
    "Gallery": "sdk.faces.gallery",
    "QualityOptions": "sdk.faces.quality",
    "assess_face": "sdk.faces.quality",
    "SitePairs": "sdk.faces.calibration",
    "calibrate_threshold": "sdk.faces.calibration",
    "pair_distances": "sdk.faces.calibration",
    "pair_rates": "sdk.faces.calibration",
    "Stylizer": "sdk.style",
    "StylizerOptions": "sdk.style",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


__all__ = ["Model", "ModelInfo", "Preprocessing", "TensorSpec", "errors", "l2_normalize",
           "load_model", "squared_l2", "__version__", *_LAZY]
