#!/usr/bin/env bash
# session 20: before/after the batch-norm re-release at 384x384 on every content sample (costs only)
cd /work/main
PY=.venv/bin/python
for c in amber chicago hoovertowernight; do for s in udnie wave; do for m in runs/style/old_models models/style; do
  echo "== $c $s $m"
  $PY -m export style bench --models $m --style $s --size 384 --threads 1 --runs 1 --no-johnson \
      --content ../shared/data/style/content-samples/$c.jpg --out runs/style/bench_s20_sizes/${c}_${s}_$(basename $m) 2>/dev/null \
      | grep -E "^\| ours .* (fp32|int8) tflite \| [0-9.]+e"
done; done; done
