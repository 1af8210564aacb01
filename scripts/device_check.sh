#!/usr/bin/env bash
# Run on a lent GPU machine (the `device` tool), from the repository root, with
# build/device carried (python scripts/device_bundle.py makes it):
#
#   bash scripts/device_check.sh            # logs and a summary under $OUT (or build/out)
#
# 1. builds pycuda from the carried sdist against that machine's CUDA (no network there),
# 2. runs the one test that needs a real GPU (GPU_TEST: the TensorRT backend's pinned
#    host / device buffers, async copies and stream on real device memory, through pycuda)
#    and passes only when pytest reports exactly "1 passed": a skip is a failure here.
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
GPU_TEST=tests/test_jetson.py::test_tensorrt_backend_buffers_and_stream_on_a_real_gpu
# gpu_verdict RC LOG: success only when pytest exited 0 and its summary line is "1 passed"
# with nothing skipped, failed or deselected (pytest exits 0 when its only test skips)
gpu_verdict() {
  local last outcomes='passed|failed|skipped|errors?|deselected|xfailed|xpassed'
  last=$(grep -E "[0-9]+ ($outcomes)" "$2" | tail -1)
  echo "pytest summary: ${last:-none}"
  [ "$1" -eq 0 ] || return 1
  echo "$last" | grep -Eq '(^|[^0-9])1 passed' || return 1
  ! echo "$last" | grep -Eq 'skipped|failed|error|deselected|xfailed|xpassed'
}

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

echo "== GPU test"
$PY -m pytest -q -rs "$GPU_TEST" 2>&1 | tee "$OUT/pytest_gpu.log"
RC=${PIPESTATUS[0]}
if gpu_verdict "$RC" "$OUT/pytest_gpu.log"; then
  summary pytest true
  exit 0
fi
echo "the GPU test did not run and pass (a skip counts as a failure here)"
summary pytest false
[ "$RC" -ne 0 ] && exit "$RC"
exit 4
