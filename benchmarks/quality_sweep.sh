#!/usr/bin/env bash
# The investigation behind docs/benchmarks.md: one-factor-at-a-time changes to the default quality recipe
# (seed 0), the most promising one on seeds 1 and 2, and a longer budget. Each run writes its own JSON (and the
# ProKT curves) under benchmarks/results/sweep/. Run from the repository root; about 1.5 hours on 2 idle CPU cores.
#   bash benchmarks/quality_sweep.sh            # everything
#   bash benchmarks/quality_sweep.sh lambda_0.2 # only the named variants
set -euo pipefail
out=benchmarks/results/sweep
mkdir -p "$out"

declare -A variants=(
  # ProKT (penalty form) with one setting changed from the default recipe
  [teacher_lr_1e-4]="--strategies prokt --teacher_lr 1e-4"
  [no_zero_init]="--strategies finetune kd prokt --no-zero_init_classifier"
  [warmup_0.1]="--strategies finetune prokt --warmup_ratio 0.1"
  [lambda_0.2]="--strategies prokt --prokt_lambda 0.2"
  [lambda_1.0]="--strategies prokt --prokt_lambda 1.0"
  [alpha_0.5]="--strategies kd prokt --alpha 0.5"
  [temperature_2]="--strategies kd prokt --temperature 2"
  [student_lr_5e-5]="--strategies finetune prokt --student_lr 5e-5"
  [student_lr_3e-5]="--strategies finetune prokt --student_lr 3e-5"
  # the most promising change, on two more seeds
  [alpha_0.5_seed1]="--strategies kd prokt --alpha 0.5 --seeds 1"
  [alpha_0.5_seed2]="--strategies kd prokt --alpha 0.5 --seeds 2"
  # three times the budget (3 epochs of the 8,000 sentences, 750 steps)
  [epochs_3]="--strategies finetune prokt --epochs 3 --eval_steps 75"
)
order=(teacher_lr_1e-4 no_zero_init lambda_1.0 warmup_0.1 student_lr_5e-5 alpha_0.5 epochs_3 alpha_0.5_seed1
       alpha_0.5_seed2 lambda_0.2 temperature_2 student_lr_3e-5)
if [ $# -gt 0 ]; then order=("$@"); fi

for name in "${order[@]}"; do
  [ -f "$out/$name.json" ] && { echo "skip $name (done)"; continue; }
  echo "=== $name: ${variants[$name]}"
  # shellcheck disable=SC2086
  python -m benchmarks.quality --seeds 0 --eval_steps 50 ${variants[$name]} \
    --output "$out/$name.json" --plot "$out/prokt_curves_$name.png"
done
