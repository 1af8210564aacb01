#!/usr/bin/env bash
# Run on a lent GPU machine (the `device` tool), from the repository root, with
# build/device carried (python scripts/device_bundle.py makes it):
#
#   bash scripts/device_check.sh            # logs and a summary under $OUT (or build/out)
#
# 1. builds pycuda from the carried sdist against that machine's CUDA (no network there),
# 2. runs the tests that need a real GPU: the TensorRT backend's pinned host / device
#    buffers, async copies and stream on real device memory, and pycuda itself.
# TensorRT is not installed there, so engines are neither built nor run (docs/JETSON.md).
set -u
OUT=${OUT:-build/out}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
exec > >(tee "$LOG") 2>&1
ROOT=$(pwd)
BUNDLE="$ROOT/build/device"
PY=${PYTHON:-python3}
summary() { echo "{\"step\": \"$1\", \"ok\": $2}" >> "$OUT/device_check.jsonl"; }

echo "== machine"; nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv || true
command -v nvcc && nvcc --version | tail -2
$PY --version

echo "== pycuda from the carried sdist"
ls "$BUNDLE"/pycuda-*.tar.gz >/dev/null 2>&1 || { echo "no pycuda sdist in $BUNDLE"; summary bundle false; exit 2; }
$PY -m pip install -q --no-index --find-links "$BUNDLE" pytools mako platformdirs
CUDA_ROOT=${CUDA_ROOT:-$(dirname "$(dirname "$(command -v nvcc)")")}
# the driver library: pycuda links -lcuda, and the driver's folder may hold only libcuda.so.1
LIBCUDA=$(ldconfig -p | awk '/libcuda\.so(\.1)? /{print $NF; exit}')
[ -z "$LIBCUDA" ] && LIBCUDA=$(find /usr/local/nvidia /usr/lib* -name 'libcuda.so*' 2>/dev/null | head -1)
mkdir -p /tmp/cudadrv && ln -sf "$LIBCUDA" /tmp/cudadrv/libcuda.so
# pycuda's optional cuRAND wrapper: off when the toolkit has no cuRAND library
CURAND=""
ls "$CUDA_ROOT"/lib64/libcurand.so* >/dev/null 2>&1 || CURAND="--no-cuda-enable-curand"
echo "CUDA_ROOT=$CUDA_ROOT libcuda=$LIBCUDA ${CURAND:-curand on}"
rm -rf /tmp/pycuda-src && mkdir -p /tmp/pycuda-src
tar xzf "$BUNDLE"/pycuda-*.tar.gz -C /tmp/pycuda-src --strip-components=1
(
  cd /tmp/pycuda-src &&
  $PY configure.py --cuda-root="$CUDA_ROOT" --cudadrv-lib-dir=/tmp/cudadrv \
      --cudart-lib-dir="$CUDA_ROOT/lib64" $CURAND &&
  $PY setup.py build_ext --inplace -j "$(nproc)"
) > "$OUT/pycuda_build.log" 2>&1
BUILD_RC=$?
tail -5 "$OUT/pycuda_build.log"
export PYTHONPATH="/tmp/pycuda-src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="/tmp/cudadrv:$CUDA_ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ $BUILD_RC -ne 0 ] || ! $PY -c "import pycuda.driver as d; d.init(); print('pycuda', d.get_version(), d.Device(0).name())"; then
  summary pycuda false; exit 3
fi
summary pycuda true

echo "== GPU tests"
$PY -m pytest -q -rs tests/test_jetson.py -k "real_gpu or tensorrt" 2>&1 | tee "$OUT/pytest_gpu.log"
RC=${PIPESTATUS[0]}
summary pytest "$([ "$RC" -eq 0 ] && echo true || echo false)"
exit "$RC"
