#!/usr/bin/env bash
# CoNLL-2003 with examples/token_classification/run_ner.py: the packaged MiniLM-L6 teacher and a 2-layer
# student built from it; fine-tuning, KD (from a teacher fine-tuned first by the same script) and ProKT
# (teacher from the pretrained checkpoint), each 63 steps at batch 32 over the first 2,000 training
# sentences (1 epoch), scored on the full validation set (3,250 sentences). One CPU thread.
#
#   bash benchmarks/ner_conll.sh [DATA_DIR] [RUN_DIR]
# Run outputs (models included) go to RUN_DIR; the small JSON results are copied to benchmarks/results/ner/.
set -euo pipefail
DATA=${1:-../shared/data/conll2003}
RUNS=${2:-/tmp/bench/ner}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
MINILM=$(python -c "from benchmarks.common import minilm_path; print(minilm_path())")
RESULTS=benchmarks/results/ner
mkdir -p "$RUNS" "$RESULTS"

common=(--train_file "$DATA/train.txt" --validation_file "$DATA/validation.txt"
        --max_train_samples 2000 --num_train_epochs 1 --per_device_train_batch_size 32
        --per_device_eval_batch_size 128 --max_seq_length 128 --lr_scheduler_type linear --warmup_steps 0
        --weight_decay 0.0 --max_grad_norm 1.0 --do_train --do_eval --eval_strategy no --save_strategy no
        --logging_steps 21 --report_to none --seed 42 --use_cpu true --disable_tqdm true)

run() {  # name, then the run's own flags
    local name=$1; shift
    local start=$SECONDS
    python examples/token_classification/run_ner.py "${common[@]}" --output_dir "$RUNS/$name" "$@"
    echo "$name: $((SECONDS - start)) s wall"
    cp "$RUNS/$name/all_results.json" "$RESULTS/$name.json"
}

run teacher_finetune --model_name_or_path "$MINILM" --strategy finetune --learning_rate 1e-4
run student_finetune --teacher_model_name_or_path "$MINILM" --student_num_layers 2 --strategy finetune \
    --learning_rate 3e-4
run student_kd --teacher_model_name_or_path "$RUNS/teacher_finetune" --student_num_layers 2 --strategy kd \
    --learning_rate 3e-4 --distill_alpha 1.0 --distill_temperature 1.0
run student_prokt --teacher_model_name_or_path "$MINILM" --student_num_layers 2 --strategy prokt \
    --learning_rate 3e-4 --teacher_learning_rate 1e-4 --prokt_lambda 0.4 --distill_alpha 1.0 \
    --distill_temperature 1.0 --zero_init_classifier true
