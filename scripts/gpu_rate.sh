#!/bin/sh
# Training rate of one showcase run alone on a lent GPU, then of N side by side under CUDA MPS
# (issue 13 §6: can an 8,000-iteration showcase run fit one 10-minute device call?).
#   sh scripts/gpu_rate.sh SECONDS N      # carry runs/bench/curves/source_only_d32/model.safetensors
# Prints the rate each run logged last (it/s, every 50 iterations).
set -u
SECONDS_EACH=${1:-50}
N=${2:-7}
python3 -m dida.data.synthcity --out data/synthcity --preset default --workers "$(nproc)" > /dev/null
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps/log
mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
nvidia-cuda-mps-control -d
ARGS="--method daformer --preset showcase --seed 0 --threads 1 --set iters=8000 --set snapshot_iters=[]
 --set model.init_weights=runs/bench/curves/source_only_d32/model.safetensors"
timeout "$SECONDS_EACH" python3 -m dida.train $ARGS --name alone --runs /tmp/rate1 > /tmp/alone.log 2>&1
echo "alone: $(grep 'it/s' /tmp/alone.log | tail -1)"
for i in $(seq "$N"); do
  timeout "$SECONDS_EACH" python3 -m dida.train $ARGS --seed "$i" --name "p$i" --runs /tmp/rateN \
    > "/tmp/p$i.log" 2>&1 &
done
wait
for i in $(seq "$N"); do echo "$N side by side, run $i: $(grep 'it/s' "/tmp/p$i.log" | tail -1)"; done
