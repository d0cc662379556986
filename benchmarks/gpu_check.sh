#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes on one GPU): every stage's smoke run on CUDA with small
# params, a torchrun launch, and the three benchmarks. Figures (images/s, the fraction of training
# time spent waiting for data, ratios) go to $OUT/gpu_check.json, logs to $OUT/*.log.
#   bash benchmarks/gpu_check.sh          # on a GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu    # small CPU rehearsal of the same parts (slow on 2 cores)
#   bash benchmarks/gpu_check.sh --cpu --tiny   # the smallest rehearsal (a minute or two; the test suite runs it)
# Without CUDA and without --cpu it stops at once with a message saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
cpu=false
for argument in "$@"; do [[ "$argument" == "--cpu" ]] && cpu=true; done
# the probe tells "no python/torch here" (exit 3) apart from "torch sees no CUDA device" (exit 2)
if ! cuda=$(python -c "import torch; print(torch.cuda.is_available())"); then
  echo "gpu_check: 'python' on PATH cannot import torch; activate the project's environment first" >&2
  exit 3
fi
if [[ "$cpu" == false && "$cuda" != "True" ]]; then
  echo "gpu_check: no CUDA device visible to torch; run on a GPU machine, or pass --cpu for a CPU rehearsal" >&2
  exit 2
fi
if [[ "$cpu" == false ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; fi
limit=480                      # 8 minutes: the parts' own limits add up to less; this is the backstop
if [[ "$cpu" == true ]]; then limit=3600; fi
exec timeout "$limit" python -m benchmarks.gpu_check "$@"
