"""Generative-LM distillation, small and offline: a GPT-2 teacher trained from scratch on the offline text, then
distilled into 2 layers by fine-tuning, KD and ProKT (full teacher and LoRA teacher), scored by held-out
perplexity (docs/benchmarks.md, "Causal LMs: a small GPT-2, distilled").

No pretrained causal LM installs here, so the teacher is made first. It is a small-scale check of the pipeline
(next-token terms, a co-trained LM teacher, the chunked output terms), not a claim about large models.

- Text: every SST-2 and CoNLL-2003 *training* sentence (`benchmarks.general_distillation_corpus`) for training;
  every SST-2 and CoNLL-2003 *validation* sentence for the held-out perplexity. Tokenizer: MiniLM-L6's (BERT
  WordPiece, 30,522 tokens; each sentence is wrapped in ``[CLS] ... [SEP]``, which mark where one ends), sentences
  concatenated and cut into blocks of ``--block_size`` tokens (`hf_prokt.scripting.text_blocks`).
- Teacher: GPT-2, ``--teacher_layers`` x ``--teacher_hidden`` (default 6 x 384, 6 heads), trained with
  ``strategy="finetune"`` (the plain `Trainer` loss).
- Students: `student_from_teacher(teacher, 2)` (layers 0 and 3 of the teacher, its embeddings and head), trained
  for ``--epochs`` with ``finetune``, ``kd`` or ``prokt`` (``--lora_teacher``: the ProKT teacher is a LoRA adapter
  on the frozen teacher). α, λ and the learning rates are pinned here, so the library's defaults do not change
  what is measured.
- Held-out perplexity: exp of the mean next-token cross-entropy over every predicted position of the held-out
  blocks, for the student and (for ``prokt``) the teacher it co-trained; the frozen teacher's is in the teacher's
  JSON.

Steps, each its own command, each writing its JSON when it ends:

    python -m benchmarks.lm_demo teacher                          # runs/lm_demo/teacher + results/lm_demo/teacher.json
    python -m benchmarks.lm_demo student --recipe kd --seed 0     # results/lm_demo/kd_s0.json
    python -m benchmarks.lm_demo student --recipe prokt --lora_teacher --seed 1
    python -m benchmarks.lm_demo student --recipe kd --teacher_topk 64 --seed 0   # KD from the cached top-64
    python -m benchmarks.lm_demo teacher --tiny                   # a smoke run: tiny models, a few steps

One torch thread unless ``OMP_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from types import SimpleNamespace

import datasets
import torch

if __package__ in (None, ""):  # run as `python benchmarks/lm_demo.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, default_data_collator  # noqa: E402

from benchmarks.common import DEFAULT_SST2_DIR, load_tokenizer, machine_description  # noqa: E402
from benchmarks.general_distillation_corpus import DEFAULT_CONLL_DIR, build_corpus  # noqa: E402
from hf_prokt import ProKTTrainer, ProKTTrainingArguments, load_or_cache_teacher_topk, student_from_teacher  # noqa: E402
from hf_prokt.scripting.text_blocks import tokenize_into_blocks  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results", "lm_demo")
RECIPES = ("finetune", "kd", "prokt")
# Pinned hyperparameters of the student runs (one set for every recipe; α and λ as the SST-2 protocol's ProKT).
STUDENT = dict(learning_rate=5e-4, distill_alpha=0.5, distill_temperature=1.0, prokt_lambda=0.4,
               teacher_learning_rate=1e-4, lora_teacher_learning_rate=5e-4, lora_rank=16)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("teacher", "student"))
    parser.add_argument("--recipe", choices=RECIPES, default="kd")
    parser.add_argument("--lora_teacher", action="store_true", help="prokt: train a LoRA adapter on the teacher")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher_topk", type=int, default=None,
                        help="kd: learn from the teacher's top-k log-probabilities cached once (hf_prokt."
                             "cache_teacher_topk, computed at k=64 and cut to the first k) instead of the live teacher")
    parser.add_argument("--runs", default="runs/lm_demo", help="where the teacher's weights go (not committed)")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--block_size", type=int, default=64)
    parser.add_argument("--teacher_layers", type=int, default=6)
    parser.add_argument("--teacher_hidden", type=int, default=384)
    parser.add_argument("--teacher_epochs", type=float, default=1.0)
    parser.add_argument("--teacher_lr", type=float, default=1e-3)
    parser.add_argument("--student_layers", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=0.5, help="the students' budget")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_steps", type=int, default=-1, help="cut a run short (for timing)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data: a smoke run of the pipeline")
    return parser.parse_args(argv)


def text_splits(tiny: bool) -> dict:
    """``{"train": Dataset, "validation": Dataset}`` of ``text``: training sentences and held-out sentences."""
    train, _ = build_corpus(os.path.join(DEFAULT_SST2_DIR, "train.tsv"), os.path.join(DEFAULT_CONLL_DIR, "train.txt"))
    held_out, _ = build_corpus(os.path.join(DEFAULT_SST2_DIR, "validation.tsv"),
                               os.path.join(DEFAULT_CONLL_DIR, "validation.txt"))
    if tiny:
        train, held_out = train[:600], held_out[:200]
    return {"train": datasets.Dataset.from_dict({"text": train}),
            "validation": datasets.Dataset.from_dict({"text": held_out})}


def blocks(args, tokenizer) -> dict:
    """Both splits tokenized (no token types: GPT-2 would embed them as words) and cut into blocks, labelled."""
    options = SimpleNamespace(streaming=False, preprocessing_num_workers=None)
    tokenizer.model_input_names = ["input_ids"]
    out = {}
    for split, dataset in text_splits(args.tiny).items():
        cut = tokenize_into_blocks(dataset, tokenizer, "text", args.block_size, options, split)
        out[split] = cut.map(lambda batch: {"labels": batch["input_ids"]}, batched=True)
    return out


@torch.no_grad()
def held_out_perplexity(model, dataset: datasets.Dataset, batch_size: int = 64) -> tuple[float, int]:
    """``(perplexity, predicted positions)``: exp of the mean next-token cross-entropy over every position."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        ids = torch.tensor(dataset[start:start + batch_size]["input_ids"])
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = ids[:, 1:]
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
        count += target.numel()
    return math.exp(total / count), count


def new_teacher(args, vocab_size: int) -> GPT2LMHeadModel:
    layers, hidden = (2, 32) if args.tiny else (args.teacher_layers, args.teacher_hidden)
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=args.block_size, n_embd=hidden,
                                      n_layer=layers, n_head=max(1, hidden // 64), bos_token_id=101,
                                      eos_token_id=102, pad_token_id=0))


def training_arguments(args, output_dir: str, **fields) -> ProKTTrainingArguments:
    return ProKTTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size,
        max_steps=6 if args.tiny and args.max_steps <= 0 else args.max_steps, lr_scheduler_type="linear",
        warmup_steps=0.05, weight_decay=0.0, max_grad_norm=1.0, save_strategy="no", eval_strategy="no", report_to=[],
        use_cpu=True,
        disable_tqdm=True, logging_steps=50, dataloader_num_workers=0, data_seed=args.seed, **fields)


def timed_train(trainer) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    result = trainer.train()
    return {"steps": result.global_step, "train_loss": result.training_loss,
            "train_time_s": round(time.perf_counter() - wall, 1),
            "train_cpu_time_s": round(time.process_time() - cpu, 1)}


def train_teacher(args, tokenizer, data) -> dict:
    teacher = new_teacher(args, len(tokenizer))
    output_dir = os.path.join(args.runs, "teacher")
    trainer = ProKTTrainer(model=teacher, args=training_arguments(
        args, output_dir, strategy="finetune", num_train_epochs=args.teacher_epochs, learning_rate=args.teacher_lr,
        seed=0), train_dataset=data["train"])
    timing = timed_train(trainer)
    trainer.save_model(output_dir)
    tokenizer.save_pretrained(output_dir)
    perplexity, positions = held_out_perplexity(teacher, data["validation"])
    return {"name": "teacher", "teacher": {"layers": teacher.config.n_layer, "hidden": teacher.config.n_embd,
                                           "parameters": teacher.num_parameters(), "held_out_perplexity": perplexity},
            "held_out_positions": positions, **timing, "epochs": args.teacher_epochs, "learning_rate": args.teacher_lr}


def lora(teacher):
    import peft

    return peft.get_peft_model(teacher, peft.LoraConfig(
        r=STUDENT["lora_rank"], lora_alpha=2 * STUDENT["lora_rank"], target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True, lora_dropout=0.0))


def train_student(args, data) -> dict:
    teacher_dir = os.path.join(args.runs, "teacher")
    if not os.path.isfile(os.path.join(teacher_dir, "config.json")):
        raise SystemExit(f"no teacher in {teacher_dir}: run `python -m benchmarks.lm_demo teacher` first")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = student_from_teacher(teacher, args.student_layers)
    if args.recipe == "prokt" and args.lora_teacher:
        teacher = lora(teacher)
    fields = dict(strategy=args.recipe, num_train_epochs=args.epochs, learning_rate=STUDENT["learning_rate"],
                  seed=args.seed)
    if args.recipe != "finetune":
        fields.update(distill_alpha=STUDENT["distill_alpha"], distill_temperature=STUDENT["distill_temperature"])
    if args.recipe == "prokt":
        fields.update(prokt_lambda=STUDENT["prokt_lambda"], teacher_learning_rate=STUDENT[
            "lora_teacher_learning_rate" if args.lora_teacher else "teacher_learning_rate"])
    cache = {}
    train = data["train"]
    if args.teacher_topk:
        if args.recipe != "kd":
            raise SystemExit("--teacher_topk caches a frozen teacher: use it with --recipe kd")
        train, cache = topk_cache(args, teacher, train)
    name = f"{args.recipe}{'-lora' if args.lora_teacher else ''}{f'-top{args.teacher_topk}' if cache else ''}"
    name += f"_s{args.seed}"
    trainer = ProKTTrainer(model=student, teacher_model=None if args.recipe == "finetune" or cache else teacher,
                           args=training_arguments(args, os.path.join(args.runs, name), **fields),
                           train_dataset=train)
    timing = timed_train(trainer)
    perplexity, positions = held_out_perplexity(trainer.model, data["validation"])
    result = {"name": name, "recipe": args.recipe, "lora_teacher": args.lora_teacher, "seed": args.seed,
              "student": {"layers": args.student_layers, "parameters": student.num_parameters(),
                          "held_out_perplexity": perplexity},
              "held_out_positions": positions, **timing, "epochs": args.epochs, "hyperparameters": fields}
    if cache:
        result["teacher_topk_cache"] = cache
    if args.recipe == "prokt":
        result["teacher"] = {"held_out_perplexity": held_out_perplexity(trainer.teacher_model, data["validation"])[0]}
    return result


CACHED_K = 64


def topk_cache(args, teacher, train: datasets.Dataset) -> tuple[datasets.Dataset, dict]:
    """The training blocks with the teacher's top-``args.teacher_topk`` log-probabilities, and what they cost.

    The cache is computed once at k = 64 over every training block (`load_or_cache_teacher_topk`, kept in
    ``runs/``) and cut to its first k columns: the entries are sorted, so they are exactly the top k."""
    if args.teacher_topk > CACHED_K:
        raise SystemExit(f"--teacher_topk {args.teacher_topk}: at most {CACHED_K}")
    path = os.path.join(args.runs, f"teacher_top{CACHED_K}{'_tiny' if args.tiny else ''}")
    computed = not os.path.exists(path)
    wall = time.perf_counter()
    cached = load_or_cache_teacher_topk(path, teacher, train, k=CACHED_K, temperature=STUDENT["distill_temperature"],
                                        batch_size=64, data_collator=default_data_collator, disable_tqdm=True)
    cache_time = time.perf_counter() - wall
    k = args.teacher_topk
    if k < CACHED_K:
        cached = cached.map(lambda batch: {name: [[row[:k] for row in rows] for rows in batch[name]]
                                           for name in ("teacher_topk_logprobs", "teacher_topk_indices")},
                            batched=True, desc=f"Top-{k} of the top-{CACHED_K}")
    table = cached.select_columns(["teacher_topk_logprobs", "teacher_topk_indices", "teacher_topk_positions"]).data
    positions = sum(len(rows) for rows in cached["teacher_topk_positions"])
    stored = sum(chunk.nbytes for column in table.columns for chunk in column.chunks)
    vocab = teacher.config.vocab_size
    return cached, {"k": k, "dtype": "float16", "predicted_positions": positions,
                    "bytes_per_token": round(stored / positions, 1), "full_logits_bytes_per_token_fp16": 2 * vocab,
                    "full_logits_bytes_per_token_fp32": 4 * vocab,
                    "cache_time_s": round(cache_time, 1) if computed else None,
                    "computed_at_k": CACHED_K}


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokenizer = load_tokenizer()
    data = blocks(args, tokenizer)
    result = train_teacher(args, tokenizer, data) if args.step == "teacher" else train_student(args, data)
    result.update(block_size=args.block_size, batch_size=args.batch_size, train_blocks=len(data["train"]),
                  held_out_blocks=len(data["validation"]), tiny=args.tiny, machine=machine_description(),
                  command="python -m benchmarks.lm_demo " + " ".join(argv if argv is not None else sys.argv[1:]))
    results = os.path.join(args.results, "tiny") if args.tiny else args.results
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, f"{result['name']}.json")
    with open(path + ".partial", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".partial", path)
    print(json.dumps({key: value for key, value in result.items() if key != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
