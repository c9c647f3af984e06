#!/usr/bin/env bash
# Issue 13's GPU figures in one prepared run (about 5 minutes on an H200), for a session lent a device:
#   device run:  bash benchmarks/gpu_figures.sh        (the device's python3 holds torch; figures land in $OUT)
# On this CPU it runs as a smoke check with small settings:
#   PY=.venv/bin/python DEVICE=cpu ARCH=resnet18 SIZE=32 BATCH=4 COUNT=16 COMPILE=0 bash benchmarks/gpu_figures.sh
# It prints: the step of FRA, BYOL, MoCo v2 and supervised training at ResNet-50, 224 px, batch 128, bf16,
# channels_last, with images/s and MFU against the bf16 dense peak (989 TFLOP/s for an H100/H200 SXM); the same
# with torch.compile; the input pipeline per CPU core and the on-device colour half; and the CUDA test of
# tests/test_batch_augment.py.
set -euo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
ARCH=${ARCH:-resnet50}
SIZE=${SIZE:-224}
BATCH=${BATCH:-128}
COUNT=${COUNT:-512}
COMPILE=${COMPILE:-1}  # 0 leaves out the compiled step (minutes of compiling on a CPU)
PEAK=${PEAK:-989}
OUT=${OUT:-/tmp/gpu_figures}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
step="benchmarks/pretrain_step.py --arch $ARCH --size $SIZE --batch $BATCH --device $DEVICE --precision bf16"

{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  nproc; "$PY" -c 'import torch; print("torch", torch.__version__)'; } | tee "$OUT/machine.txt"
"$PY" $step --rounds 10 --set train.channels_last=true --peak-tflops "$PEAK" | tee "$OUT/step_eager.txt"
"$PY" benchmarks/data_pipeline.py --count "$COUNT" --size "$SIZE" --batch "$BATCH" --device "$DEVICE" \
    | tee "$OUT/data_pipeline.txt"
"$PY" -m pytest -q -p no:cacheprovider tests/test_batch_augment.py -k cuda | tee "$OUT/cuda_test.txt"
if [ "$COMPILE" = 1 ]; then
  "$PY" $step --rounds 10 --set train.channels_last=true train.compile=true --peak-tflops "$PEAK" \
      | tee "$OUT/step_compiled.txt"
fi
