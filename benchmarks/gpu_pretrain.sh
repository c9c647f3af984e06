#!/usr/bin/env bash
# FRA on the FER+ Train images (labels unused) for as many steps as fit in MINUTES of device time, for a session
# lent a GPU: one short loan brings back a pre-trained trunk (and its region maps) under $OUT.
#   device run:  DATA=<FER2013Train folder> bash benchmarks/gpu_pretrain.sh
# It first times 30 steps, then plans the run's length (train.steps, so the cosine schedules end when the time
# does) to fill what is left of MINUTES, runs it with a checkpoint every 500 steps, and stops it with Ctrl-C's
# interrupt checkpoint if it overruns. $OUT/fra holds the run (checkpoints, metrics.jsonl, config.yaml);
# $OUT/summary.txt the steps, images/s and the heatmap sharpness at the last logged step (hm_maxprob: 1/8 = flat).
# On this CPU it runs as a smoke check with tiny settings (tests/test_benchmarks.py runs it so, on BUDGET_S=20: the
# timing run, then the 10 steps a run never goes below):
#   PY=.venv/bin/python DEVICE=cpu DATA=<folder of images> ARCH=resnet18 WIDTH=8 SIZE=32 BATCH=8 MINUTES=1 \
#     bash benchmarks/gpu_pretrain.sh
set -euo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:?set DATA to the FER2013Train image folder}
ARCH=${ARCH:-resnet18}
WIDTH=${WIDTH:-64}
SIZE=${SIZE:-112}       # 112 px without the stem max-pool: 7x7 region maps, where regions were seen to form
BATCH=${BATCH:-256}
MINUTES=${MINUTES:-8}
BUDGET_S=${BUDGET_S:-$(( MINUTES * 60 ))}   # the same budget in seconds, for a smoke run shorter than a minute
# weight decay on the trunk only, as configs/ferplus/pretrain_regions.yaml: the method's 1e-6 on every weight lets
# LARS shrink the facial queries to zero within ~1,000 steps at η 0.01, and the maps go flat (docs/results.md)
WD=${WD:-1e-4}
WD_SCOPE=${WD_SCOPE:-trunk}
OUT=${OUT:-/tmp/gpu_pretrain}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
start=$(date +%s)
recipe=(--config configs/ferplus/pretrain_cpu.yaml "data.root=$DATA" "data.image_size=$SIZE" "model.arch=$ARCH"
        "model.width=$WIDTH" "train.batch_size=$BATCH" train.precision=bf16 train.channels_last=true
        "optim.weight_decay=$WD" "optim.weight_decay_scope=$WD_SCOPE"
        "train.device=$DEVICE" "train.out_dir=$OUT" train.log_every=10 data.num_workers=4 train.tensorboard=false)

# 1. the step time, from 30 steps (the first 10 warm up)
"$PY" -m frafer pretrain "${recipe[@]}" train.name=timing train.steps=30 train.checkpoint_every=30 --overwrite \
    > "$OUT/timing.log" 2>&1
step_s=$("$PY" - "$OUT/timing/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
first, last = rows[0], rows[-1]
print((last["time"] - first["time"]) / max(1, last["step"] - first["step"]))
EOF
)
left=$(( BUDGET_S - ($(date +%s) - start) - 30 ))  # 30 s for start-up and the last checkpoint
steps=$("$PY" -c "print(max(10, int($left / $step_s)))")
echo "step ${step_s} s, ${left} s left: ${steps} steps" | tee "$OUT/plan.txt"

# 2. the run, stopped with an interrupt checkpoint if it overruns
limit=$(( left > 100 ? left + 20 : 120 ))
timeout -s INT "${limit}s" "$PY" -m frafer pretrain "${recipe[@]}" train.name=fra "train.steps=$steps" \
    train.checkpoint_every=500 optim.warmup_steps=$(( steps / 20 )) --overwrite > "$OUT/fra.log" 2>&1 \
    || { echo "the run stopped early (exit $?): the end of $OUT/fra.log:"; tail -5 "$OUT/fra.log"; }

# 3. what came back
"$PY" - "$OUT/fra/metrics.jsonl" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
last = rows[-1]
print(f"steps {last['step']}, images/s {last.get('img_per_s', float('nan')):.0f}, loss {last['loss']:.4f}, "
      f"hm_maxprob {last.get('hm_maxprob', float('nan')):.4f} (flat: 0.125), hm_entropy "
      f"{last.get('hm_entropy', float('nan')):.4f} (flat: 2.0794)")
EOF
