"""TensorRT for Jetson: check ONNX graphs against TensorRT's ONNX parser, build
engines on the device (FP16/INT8 with an entropy calibrator), or prepare the
bundle a device needs when this host has no TensorRT.

``python -m export jetson --check model.onnx`` needs only the ``onnx`` package;
building needs TensorRT 10 and pycuda (JetPack), imported lazily.
"""
