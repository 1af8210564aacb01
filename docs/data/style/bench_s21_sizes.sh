#!/usr/bin/env bash
# session 21: costs at 384x384 of every style on every content sample, for the frame-size half of
# the frozen-statistics rule: bash bench_s21_sizes.sh MODELS_DIR OUT_DIR (OUT_DIR/<content>_<style>/)
set -e
cd "$(dirname "$0")/../../.."
PY=.venv/bin/python
for c in amber chicago hoovertowernight; do for s in udnie wave; do
  [ -f "$1/${s}_fp32.tflite" ] || continue
  echo "== $c $s $1"
  $PY -m export style bench --models "$1" --style $s --size 384 --threads 1 --runs 1 --no-johnson \
      --content ../shared/data/style/content-samples/$c.jpg --out "$2/${c}_${s}" 2>/dev/null \
      | grep -E "^\| ours .* (fp32|int8) tflite \| [0-9.]+e"
done; done
