# edge-sdk: set-up, demo, tests, exports and benchmarks.  `make help` lists targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared

.PHONY: help setup demo test export-tflite export-onnx export-jetson bench clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY) ## venv with the runtime, LiteRT, the export stage and test tools; fetch YuNet
	$(PY) -m pip install -q -e ".[tflite,train,dev]"
	$(PY) scripts/fetch_assets.py --shared $(SHARED)

demo: setup ## the main job on embedded defaults (CPU, ONNX Runtime/TFLite, models/)
	$(PY) apps/demo.py --shared $(SHARED)

test: setup ## the test suite (tiny models; < 10 min on 2 cores)
	$(PY) -m pytest -q

export-tflite: setup ## TFLite fp32/fp16/int8 of the trained models
	$(PY) -m export faces export --formats tflite
	$(PY) -m export style export --formats tflite

export-onnx: setup ## ONNX fp32 + int8 QDQ of the trained models
	$(PY) -m export faces export --formats onnx
	$(PY) -m export style export --formats onnx

export-jetson: setup ## TensorRT engines (on the Jetson), or the bundle to build them there
	$(PY) -m export jetson --models models --out build/jetson

bench: setup ## latency/memory of every released model x backend x precision, with peers
	$(PY) apps/benchmark.py --peers --json build/bench.json --markdown build/bench.md --plot build/bench.png

clean:
	rm -rf build .pytest_cache
