# edge-sdk: set-up, demo, tests, training, exports and benchmarks.  `make help` lists targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared
FACES_RUN ?= runs/faces/run18

.PHONY: help setup-runtime setup demo test export-tflite export-onnx export-jetson jetson-check \
        device-bundle bench \
        faces-data faces-teacher train-faces release-faces eval-faces \
        train-style eval-style example-1d example-3d visualize clean

# grep reads the Makefile's text, so a variable in a ## comment is expanded here by sed
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/:.*## /\t/' \
	    -e 's|$$(FACES_RUN)|$(FACES_RUN)|g'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# demo needs only the runtime: no TensorFlow download before the README's first command.
# Everything else needs the export stage (onnx, matplotlib, TensorFlow) or the test tools.
setup-runtime: $(PY) ## venv with the runtime and LiteRT only (no TensorFlow); fetch YuNet
	$(PY) -m pip install -q -e ".[tflite]"
	$(PY) scripts/fetch_assets.py --shared $(SHARED)

setup: setup-runtime ## setup-runtime + the export stage (TensorFlow) and test tools
	$(PY) -m pip install -q -e ".[tflite,train,dev]"

demo: setup-runtime ## the main job on embedded defaults (CPU, ONNX Runtime/TFLite, models/)
	$(PY) apps/demo.py --shared $(SHARED)

test: setup ## the test suite (tiny models; a few minutes on 2 cores)
	$(PY) -m pytest -q

# --- faces (docs/RESULTS_faces.md) -------------------------------------------------
faces-data: setup ## detect + align the training photos once, write held-out pairs (~1 min)
	$(PY) -m export faces prepare

faces-teacher: faces-data ## dlib teacher embeddings of every training face (~30 min, resumable; extra [teacher])
	$(PY) -m pip install -q -e ".[teacher]"
	$(PY) -m export faces teacher --per-identity 0

train-faces: setup ## train the face encoder in thirteen legs (60 + 80 + 95 + 80 + 80 + 85 + 85 + 60 + 85 + 85 + 85 + 85 + 85 min, checkpointed: rerun to resume)
	$(PY) -m export faces train --out runs/faces/run1 --minutes 60 --cls 1.0 --resume
	$(PY) -m export faces train --out runs/faces/run2 --init runs/faces/run1 --minutes 80 --cls 1.0 \
	    --distill 5 --distill-mode relational --lr 2e-3 --seed 1 --resume
	$(PY) -m export faces train --out runs/faces/run3 --init runs/faces/run2 --width 0.75 --minutes 95 \
	    --cls 1.0 --distill 5 --distill-mode relational --lr 2e-3 --seed 2 --resume
	$(PY) -m export faces train --out runs/faces/run6 --init runs/faces/run3 --minutes 80 --cls 1.0 \
	    --distill 10 --distill-mode projected --lr 2e-3 --seed 6 --resume
	$(PY) -m export faces train --out runs/faces/run7 --init runs/faces/run6 --width 0.875 --minutes 80 \
	    --cls 1.0 --distill 10 --distill-mode projected --lr 2e-3 --seed 7 --resume
	$(PY) -m export faces train --out runs/faces/run8 --init runs/faces/run7 --minutes 85 --cls 1.0 \
	    --distill 10 --distill-mode projected --lr 1e-3 --seed 8 --resume
	$(PY) -m export faces train --out runs/faces/run10 --init runs/faces/run8 --minutes 85 --cls 1.0 \
	    --cls-margin 0.35 --distill 10 --distill-mode projected --lr 1e-3 --seed 10 --resume
	$(PY) -m export faces train --out runs/faces/run12 --init runs/faces/run10 --imprint --fit-heads 0 \
	    --minutes 60 --cls 1.0 --cls-margin 0.4 --distill 10 --distill-mode projected --lr 1e-3 \
	    --seed 12 --resume
	$(PY) -m export faces train --out runs/faces/run13 --init runs/faces/run12 --minutes 85 --cls 1.0 \
	    --cls-margin 0.4 --distill 10 --distill-mode projected --lr 1e-3 --seed 13 \
	    --hard-identities 0.25 --hard-pool 24 --resume
	$(PY) -m export faces train --out runs/faces/run14 --init runs/faces/run13 --minutes 85 --cls 1.0 \
	    --cls-margin 0.4 --distill 10 --distill-mode projected --lr 1e-3 --seed 14 \
	    --hard-identities 0.25 --hard-pool 24 --resume
	$(PY) -m export faces train --out runs/faces/run16 --init runs/faces/run14 --minutes 85 --cls 1.0 \
	    --cls-margin 0.4 --distill 5 --distill-mode projected --lr 1e-3 --seed 16 \
	    --hard-identities 0.25 --hard-pool 24 --resume
	$(PY) -m export faces train --out runs/faces/run17 --init runs/faces/run16 --minutes 85 --cls 1.0 \
	    --cls-margin 0.4 --distill 2.5 --distill-mode projected --lr 1e-3 --seed 17 \
	    --hard-identities 0.25 --hard-pool 24 --resume
	$(PY) -m export faces train --out $(FACES_RUN) --init runs/faces/run17 --minutes 85 --cls 1.0 \
	    --cls-margin 0.4 --distill 2.5 --distill-mode projected --lr 1e-3 --seed 18 \
	    --hard-identities 0.25 --hard-pool 24 --dropout 0 --resume

release-faces: setup ## fp32/fp16/int8 TFLite + ONNX, accuracy gate, copy to models/faces
	$(PY) -m export faces release --model $(FACES_RUN)/model.keras --json runs/faces/release.json

eval-faces: setup ## every evaluation set (+ every pair of the held-out photos), ours next to the peer
	$(PY) -m export faces evaluate --standard --dense --time 100 --threads 1 \
	    --model models/faces/face_encoder_int8.tflite --model models/faces/face_encoder_int8.onnx \
	    --model peer --json runs/faces/eval_all.json --roc runs/faces/roc.png

# --- style (docs/RESULTS_style.md) ---------------------------------------------------
train-style: setup ## train the released udnie and wave students (5 + 11 legs, ~2.3 h / 3 h on one thread; checkpointed)
	$(PY) -m export style train --style udnie --run runs/style/udnie_shuffle --stages shuffle --steps 3000 --resume
	$(PY) -m export style train --style udnie --run runs/style/udnie_shuffle256 --init runs/style/udnie_shuffle \
	    --stages shuffle --crop 256 --steps 600 --lr 1e-3 --beta 1.28e4 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_shuffle --stages shuffle --steps 2600 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_shuffle256 --init runs/style/wave_shuffle \
	    --stages shuffle --crop 256 --steps 600 --lr 1e-3 --beta 1.28e4 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_shuffle256_b25 --init runs/style/wave_shuffle256 \
	    --stages shuffle --crop 256 --steps 400 --lr 1e-3 --beta 2.5e4 --resume
	$(PY) -m export style train --style udnie --run runs/style/udnie_grain --init runs/style/udnie_shuffle256 \
	    --stages shuffle --crop 256 --steps 400 --lr 5e-4 --beta 1.28e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_grain --init runs/style/wave_shuffle256_b25 \
	    --stages shuffle --crop 256 --steps 400 --lr 5e-4 --beta 2.5e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_grain_b3 --init runs/style/wave_grain \
	    --stages shuffle --crop 256 --steps 200 --lr 5e-4 --beta 3e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_grain_b35 --init runs/style/wave_grain_b3 \
	    --stages shuffle --crop 256 --steps 200 --lr 5e-4 --beta 3.5e4 --grain 1e5 --resume
	test -d runs/style/wave_recal || $(PY) -m export style recalibrate --run runs/style/wave_grain_b35 \
	    --out runs/style/wave_recal --batches 64 --seed 0
	$(PY) -m export style train --style wave --run runs/style/wave_scale --init runs/style/wave_recal \
	    --freeze-bn --scale 1,1.6 --stages shuffle --crop 256 --steps 400 --lr 5e-4 --beta 3.5e4 --grain 1e5 --resume
	$(PY) -m export style train --style udnie --run runs/style/udnie_multi --init runs/style/udnie_grain \
	    --freeze-bn --extra-crops 384 --stages shuffle --crop 256 --steps 400 --lr 5e-4 --beta 1.28e4 --grain 1e5 --resume
	$(PY) -m export style train --style udnie --run runs/style/udnie_384 --init runs/style/udnie_multi \
	    --freeze-bn --stages shuffle --crop 384 --balance-crop 256 --steps 400 --lr 5e-4 --beta 1.28e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_multi --init runs/style/wave_scale \
	    --freeze-bn --scale 1,1.6 --extra-crops 384 --stages shuffle --crop 256 --steps 400 --lr 5e-4 --beta 3.5e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_384 --init runs/style/wave_multi \
	    --freeze-bn --scale 1,1.6 --stages shuffle --crop 384 --balance-crop 256 --steps 400 --lr 5e-4 --beta 3.5e4 --grain 1e5 --resume
	$(PY) -m export style train --style wave --run runs/style/wave_384b --init runs/style/wave_384 \
	    --freeze-bn --scale 1,1.6 --stages shuffle --crop 384 --balance-crop 256 --steps 400 --lr 5e-4 --beta 3.5e4 --grain 1e5 --resume

eval-style: setup ## student vs optimiser costs and times, picture grid
	$(PY) -m export style evaluate

# --- exports ---------------------------------------------------------------------------
export-tflite: setup ## TFLite fp32/fp16/int8 of the released students (+ faces from $(FACES_RUN))
	$(PY) -m export style export --formats tflite
	test ! -f $(FACES_RUN)/model.keras || $(MAKE) release-faces

export-onnx: setup ## ONNX fp32 + int8 QDQ of the released students (+ faces from $(FACES_RUN))
	$(PY) -m export style export --formats onnx
	test ! -f $(FACES_RUN)/model.keras || $(MAKE) release-faces

jetson-check: setup ## check the released ONNX graphs against TensorRT's ONNX parser
	$(PY) -m export jetson --check models/faces/face_encoder_fp32.onnx \
	    models/style/udnie_fp32.onnx models/style/wave_fp32.onnx

device-bundle: setup ## download pycuda's sdist + wheels for a lent GPU into build/device (see docs/JETSON.md)
	$(PY) scripts/device_bundle.py --out build/device

export-jetson: setup ## TensorRT engines (on the Jetson), or the bundle to build them there
	$(PY) -m export jetson --models models --precision fp16 int8 \
	    --frame-sizes 256x256 480x640 720x1280 --out build/jetson

bench: setup ## latency/memory of every released model x backend x precision, with peers
	$(PY) apps/benchmark.py --peers --json build/bench.json --markdown build/bench.md \
	    --plot build/bench.png

# --- 1D / 3D and the visualiser (docs/ND.md, docs/VISUALIZE.md) ---------------------------
example-1d: setup ## speaker verification on espeak-ng voices (needs espeak-ng)
	$(PY) -m export nd speech --steps 1500

example-3d: setup ## identity verification on clips built from AT&T/ORL photos
	$(PY) -m export nd clips --steps 600

visualize: setup ## top-9 patch grids of the style loss network and the face encoder
	$(PY) -m export visualize --model squeezenet --layer fire3_concat \
	    --images $(SHARED)/data/style/content-train --max-images 300 --out build/viz/squeezenet_fire3.png
	$(PY) -m export visualize --model squeezenet --layer fire9_concat \
	    --images $(SHARED)/data/style/content-train --max-images 300 --out build/viz/squeezenet_fire9.png
	$(PY) -m export visualize --model models/faces/face_encoder.keras --layer b1_1_dw_relu \
	    --images $(SHARED)/data/faces/pins-14 --align-faces --max-images 300 --out build/viz/face_b1.png
	$(PY) -m export visualize --model models/faces/face_encoder.keras --layer head_relu \
	    --images $(SHARED)/data/faces/pins-14 --align-faces --max-images 300 --out build/viz/face_head.png

clean:
	rm -rf build .pytest_cache
