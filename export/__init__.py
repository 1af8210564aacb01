"""The export stage: TensorFlow training, quantisation and conversion.

Writes models that carry the SDK contract (``sdk.contract``) to TFLite, ONNX
and TensorRT.  ``export`` may import ``sdk``; ``sdk`` never imports ``export``.
"""
