"""One run of the SST-2 protocol: one recipe, one seed, one student depth, written to its own JSON.

The protocol (docs/benchmarks.md, "SST-2, the authors' protocol") compares fine-tuning, KD and ProKT on
the full GLUE SST-2 training set (60,614 sentences) and its 872-sentence dev set:

- every student is ``student_from_teacher(<pretrained MiniLM-L6>, N)``, the same weights for every recipe
  (``--student_init`` replaces the checkpoint);
- ``finetune``: the student on the labels;
- ``kd``: the student distilled from a frozen teacher fine-tuned beforehand (``--kd_teacher``, a folder
  written by ``examples/glue/run_glue.py --strategy finetune``);
- ``prokt``: the student trained with a teacher from the pretrained checkpoint (``--prokt_teacher`` for a
  warm start from a fine-tuned one), the teacher's anchor chosen by ``--prokt_anchor``;
- the same number of student optimizer steps for every recipe (default one epoch at batch 32: 1,895 steps),
  the authors' hyper-parameters (student lr 1e-4, teacher lr 3e-5, lambda 0.4, T 1, no warm-up, no weight
  decay, clipping 1.0, zeroed classification heads, length 64), dev accuracy every ``--eval_steps`` steps
  and at the end; the last and the best-dev accuracy are reported.

Data order: the `Trainer` draws the batches with accelerate's seedable sampler, seeded by ``data_seed``
(here the run's seed) and the epoch alone, so runs with the same seed read the same batches in the same
order whatever the recipe. Each JSON holds a SHA-1 of the training batches as they were consumed
(``data_order_sha1``), which `benchmarks.protocol_summary` compares across paired runs.

The JSON (``<output_dir>/<name>.json``, written when the run ends, atomically) holds the dev-accuracy curve
of the student (and of the co-trained teacher for prokt), the last and best-dev accuracy, the training logs,
the training time (evaluations excluded), every hyper-parameter and the machine.

Run from the repository root (``pip install -e ".[bench]"``)::

    python -m benchmarks.sst2_protocol --recipe finetune --seed 0 --student_layers 2
    python -m benchmarks.sst2_protocol --recipe kd --alpha 0.5 --kd_teacher runs/kd_teacher_minilm_sst2
    python -m benchmarks.sst2_protocol --recipe prokt --prokt_anchor eval --alpha 0.5
    python -m benchmarks.sst2_protocol --tiny --recipe prokt   # tiny BERTs on synthetic sentences, seconds

``bash benchmarks/protocol_plan.sh`` runs the whole plan, one command per run;
``python -m benchmarks.protocol_summary`` tabulates and plots what has landed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import datasets
import torch
import transformers
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel
from transformers import logging as transformers_logging
from transformers.trainer_callback import PrinterCallback, ProgressCallback

if __package__ in (None, ""):  # run as `python benchmarks/sst2_protocol.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common, quality  # noqa: E402
from hf_prokt import ProKTTrainer, ProKTTrainingArguments, student_from_teacher  # noqa: E402
from hf_prokt.heads import classification_layer, zero_classification_layer  # noqa: E402

RECIPES = ("finetune", "kd", "prokt")
ANCHORS = ("eval", "train")
DEFAULT_OUTPUT_DIR = os.path.join(quality.RESULTS_DIR, "protocol")
TINY_DEFAULTS = dict(output_dir=os.path.join(quality.RESULTS_DIR, "protocol_tiny"), train_samples=64,
                     eval_samples=48, max_steps=24, batch_size=16, eval_batch_size=48, eval_steps=10,
                     logging_steps=2, student_lr=3e-3, teacher_lr=3e-3, max_length=16)
# Settings whose value, when not the default, goes into the run's name (two different runs never share a file).
# The width of the pretrained MiniLM-L6 every student comes from; a run name shows any other width.
MINILM_HIDDEN_SIZE = 384
NAMED_SETTINGS = ("student_lr", "teacher_lr", "prokt_lambda", "temperature", "warmup_ratio", "weight_decay",
                  "max_grad_norm", "batch_size", "max_length", "zero_init_classifier", "subset_seed",
                  "hidden_distill_weight", "alpha_warmup_steps", "lambda_warmup_steps")


# ---------------------------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--recipe", required=True, choices=RECIPES, help="what trains the student")
    add("--seed", type=int, default=0, help="model initialisation, dropout and data order (paired across recipes)")
    add("--student_layers", type=int, default=2, help="student depth (uniformly spaced layers of --student_init)")
    add("--alpha", type=float, default=None,
        help="kd and prokt: student loss = alpha * KL + (1 - alpha) * cross-entropy (default 1: no labels)")
    add("--prokt_anchor", choices=ANCHORS, default=None,
        help="prokt: the student prediction that pulls the teacher back, from an eval-mode forward ('eval') or "
        "the training forward ('train'). Default: the library's default.")
    add("--kd_teacher", default=None, help="kd: folder of the fine-tuned teacher (required, except with --tiny)")
    add("--prokt_teacher", default=None,
        help="prokt: the teacher's starting checkpoint (default: the pretrained MiniLM-L6; a fine-tuned folder "
        "gives a warm start, its head kept)")
    add("--student_init", default=None,
        help="checkpoint the student's layers are copied from (default: the pretrained MiniLM-L6)")
    add("--student_source_layers", default=None,
        help="comma-separated 0-based layers of --student_init the student's layers are copied from, one per "
        "student layer, e.g. 3,5 (default: uniformly spaced from the first: 0,3 for 2 of 6 layers)")
    add("--student_hidden_size", type=int, default=None,
        help="a narrower student: its width (weights selected from --student_init's, see student_from_teacher; "
        "default: --student_init's width)")
    add("--student_intermediate_size", type=int, default=None,
        help="with --student_hidden_size: the feed-forward width (default: the source's ratio)")
    add("--student_num_attention_heads", type=int, default=None,
        help="with --student_hidden_size: the heads (default: the source's head size kept when it divides)")
    add("--student_weight_init", choices=("teacher", "random"), default="teacher",
        help="'teacher': the student's weights copied (and selected) from --student_init; 'random': the same "
        "student shape freshly initialised (the baseline weight selection is compared with)")
    add("--hidden_distill_weight", type=float, default=0.0,
        help="kd and prokt: weight of the hidden-state MSE between the student's layers and the teacher's "
        "(layer map uniform)")
    add("--alpha_warmup_steps", type=int, default=0,
        help="kd and prokt: ramp alpha from 0 (labels only) to --alpha over this many steps (0: no ramp)")
    add("--prokt_constraint", choices=("penalty", "dual"), default=None,
        help="prokt: 'penalty' (a fixed --prokt_lambda, the default) or 'dual' (a multiplier that keeps the "
        "teacher's KL to the student near --prokt_epsilon, the authors' KDDualCriterion)")
    add("--prokt_epsilon", type=float, default=None, help="prokt, dual: the KL budget (default: the library's)")
    add("--dual_lr", type=float, default=None, help="prokt, dual: the multiplier's step size (default: the library's)")
    add("--dual_init", type=float, default=None, help="prokt, dual: the multiplier's start (default: the library's)")
    add("--lambda_warmup_steps", type=int, default=0,
        help="prokt: ramp the teacher's lambda from 0 to --prokt_lambda over this many steps (0: no ramp)")
    add("--tag", default=None, help="appended to the run's name, for changes the name does not show")
    add("--data_dir", default=common.DEFAULT_SST2_DIR, help="folder with SST-2 train.tsv and validation.tsv")
    add("--train_samples", type=int, default=None, help="a fixed random training subset (default: all sentences)")
    add("--subset_seed", type=int, default=0, help="seed of the training subset (the same for every run)")
    add("--eval_samples", type=int, default=None, help="dev subset (default: all 872 sentences)")
    add("--max_steps", type=int, default=None,
        help="student optimizer steps (default: one epoch of the training set, 1,895 at batch 32 on all of SST-2)")
    add("--eval_steps", type=int, default=200, help="evaluate every this many steps (0: only at the end)")
    add("--logging_steps", type=int, default=50, help="training-log interval (loss, KL) in steps")
    add("--batch_size", type=int, default=32, help="training batch size (one device, no accumulation)")
    add("--eval_batch_size", type=int, default=128)
    add("--max_length", type=int, default=64, help="tokens per sentence (truncation; padding is per batch)")
    add("--student_lr", type=float, default=1e-4, help="student learning rate, every recipe (authors: 1e-4)")
    add("--teacher_lr", type=float, default=3e-5, help="prokt: the teacher's learning rate (authors: 3e-5)")
    add("--prokt_lambda", type=float, default=0.4, help="prokt: move-back weight (authors: 0.4)")
    add("--temperature", type=float, default=1.0, help="softmax temperature of the KL terms")
    add("--warmup_ratio", type=float, default=0.0, help="linear warm-up, fraction of the steps (authors: none)")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (authors: none)")
    add("--max_grad_norm", type=float, default=1.0, help="gradient clipping, both models (authors: 1.0)")
    add("--zero_init_classifier", action=argparse.BooleanOptionalAction, default=True,
        help="zero the student's classification layer, and a ProKT teacher's when it is freshly initialised")
    add("--output_dir", default=DEFAULT_OUTPUT_DIR, help="where <name>.json is written")
    add("--name", default=None, help="the JSON's name (default: from the recipe and settings, see run_name)")
    add("--skip_existing", action="store_true", help="do nothing when <output_dir>/<name>.json exists")
    add("--tiny", action="store_true",
        help="tiny BERTs, a local tokenizer and synthetic sentences (no data, no model package): the smoke test")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check everything that can be checked before any model or data is loaded."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.tiny:
        parser.set_defaults(**TINY_DEFAULTS)
    args = parser.parse_args(argv)
    args.defaults = {key: parser.get_default(key) for key in NAMED_SETTINGS}

    if args.recipe == "finetune" and args.alpha is not None:
        parser.error("--alpha weighs the distillation term: finetune has none (leave --alpha out).")
    if args.alpha is None:
        args.alpha = 1.0
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha {args.alpha} is outside [0, 1].")
    for flag, recipe in (("kd_teacher", "kd"), ("prokt_teacher", "prokt"), ("prokt_anchor", "prokt")):
        if getattr(args, flag) is not None and args.recipe != recipe:
            parser.error(f"--{flag} applies to --recipe {recipe} only, not {args.recipe}.")
    if args.recipe == "kd" and args.kd_teacher is None and not args.tiny:
        parser.error("--recipe kd needs --kd_teacher: a folder of MiniLM-L6 fine-tuned on SST-2 (see "
                     "benchmarks/protocol_plan.sh for the command that trains it).")
    for flag in ("kd_teacher", "prokt_teacher", "student_init"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(os.path.join(path, "config.json")):
            parser.error(f"--{flag} {path}: no config.json there; give a folder written by save_pretrained.")
    if args.recipe == "finetune":
        for flag in ("hidden_distill_weight", "alpha_warmup_steps"):
            if getattr(args, flag):
                parser.error(f"--{flag} weighs or ramps a teacher's term: finetune has none (leave it out).")
    for flag in ("prokt_constraint", "prokt_epsilon", "dual_lr", "dual_init"):
        if getattr(args, flag) is not None and args.recipe != "prokt":
            parser.error(f"--{flag} shapes ProKT's teacher step: it applies to --recipe prokt only.")
    for flag in ("prokt_epsilon", "dual_lr", "dual_init"):
        if getattr(args, flag) is not None and args.prokt_constraint != "dual":
            parser.error(f"--{flag} sets the dual constraint: give --prokt_constraint dual too.")
    if args.lambda_warmup_steps and args.recipe != "prokt":
        parser.error("--lambda_warmup_steps ramps ProKT's lambda: it applies to --recipe prokt only.")
    for flag in ("hidden_distill_weight", "alpha_warmup_steps", "lambda_warmup_steps"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} must be >= 0.")
    if args.student_source_layers is not None:
        try:
            args.student_source_layers = [int(part) for part in args.student_source_layers.split(",")]
        except ValueError:
            parser.error(f"--student_source_layers {args.student_source_layers!r}: write 0-based layer numbers "
                         "separated by commas, e.g. 3,5.")
        if len(args.student_source_layers) != args.student_layers:
            parser.error(f"--student_source_layers names {len(args.student_source_layers)} layers for a "
                         f"{args.student_layers}-layer student (--student_layers): name one per student layer.")
    if args.student_weight_init == "random" and args.student_source_layers is not None:
        parser.error("--student_source_layers names layers to copy, and --student_weight_init random copies none.")
    for flag in ("student_intermediate_size", "student_num_attention_heads"):
        if getattr(args, flag) is not None and args.student_hidden_size is None:
            parser.error(f"--{flag} shapes a narrower student: give --student_hidden_size too.")
    for flag in ("student_layers", "batch_size", "eval_batch_size", "logging_steps", "max_length",
                 "student_hidden_size", "student_intermediate_size", "student_num_attention_heads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1.")
    if args.eval_steps < 0 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--eval_steps must be >= 0 and --max_steps >= 1.")
    if args.train_samples is not None and args.train_samples < 1:
        parser.error("--train_samples must be at least 1.")
    try:
        args.anchor = resolve_anchor(args.prokt_anchor) if args.recipe == "prokt" else None
    except ValueError as error:
        parser.error(str(error))
    if args.name is None:
        args.name = run_name(args)
    return args


def resolve_anchor(requested: str | None) -> dict:
    """``{"requested", "used", "passed"}``: the anchor this run uses, and whether `ProKTTrainingArguments` has
    the ``prokt_anchor`` field it is passed to. Without the field, the library's only anchor is the student's
    training forward ("train")."""
    fields = {f.name: f for f in dataclasses.fields(ProKTTrainingArguments)}
    if "prokt_anchor" in fields:
        return {"requested": requested, "used": requested or fields["prokt_anchor"].default, "passed": True}
    if requested == "eval":
        raise ValueError("this hf_prokt has no ProKTTrainingArguments.prokt_anchor: its teacher is anchored on "
                         "the student's training forward. Pass --prokt_anchor train, or update hf_prokt.")
    return {"requested": requested, "used": "train", "passed": False}


def run_name(args: argparse.Namespace) -> str:
    """``<variant>_<setting>_s<seed>``, e.g. ``prokt-eval_a0.5_L2_s0``, ``finetune_L4_s1``.

    The variant is the recipe (with the anchor for prokt), alpha, a non-default student or ProKT teacher
    checkpoint, every non-default setting of `NAMED_SETTINGS` and ``--tag``; the setting is the student depth
    and a non-default budget or training subset. Runs pair across recipes within one setting.
    """
    return f"{run_variant(args)}_{run_setting(args)}_s{args.seed}"


def run_variant(args: argparse.Namespace) -> str:
    parts = [f"prokt-{args.anchor['used']}" if args.recipe == "prokt" else args.recipe]
    if args.recipe != "finetune":
        parts.append(f"a{args.alpha:g}")
    if args.student_init is not None:
        parts.append(f"init-{_folder_name(args.student_init)}")
    if args.prokt_teacher is not None:
        parts.append(f"teacher-{_folder_name(args.prokt_teacher)}")
    if args.student_source_layers is not None:
        parts.append("layers" + "-".join(str(i) for i in args.student_source_layers))
    if args.student_weight_init == "random":
        parts.append("random-init")
    if args.prokt_constraint == "dual":
        parts.append("dual" + "".join(f"_{key}{value:g}" for key, value in (
            ("eps", args.prokt_epsilon), ("dlr", args.dual_lr), ("dinit", args.dual_init)) if value is not None))
    for key in NAMED_SETTINGS:
        value = getattr(args, key)
        if value != args.defaults[key]:
            parts.append(key if value is True else f"no-{key}" if value is False else f"{key}{value:g}")
    if args.tag:
        parts.append(args.tag)
    return "_".join(parts)


def run_setting(args: argparse.Namespace) -> str:
    parts = [f"L{args.student_layers}"]
    width = student_width(args)
    if width is not None:
        parts.append(f"H{width}")
    if args.max_steps is not None:
        parts.append(f"steps{args.max_steps}")
    if args.train_samples is not None:
        parts.append(f"n{args.train_samples}")
    return "_".join(parts)


def student_width(args: argparse.Namespace) -> int | None:
    """The student's hidden size when it is not MiniLM-L6's 384 (None then): from --student_hidden_size, else
    from --student_init's config (a narrow pre-trained student keeps its own width). Runs of one width pair."""
    width = args.student_hidden_size
    if width is None and args.student_init is not None:
        with open(os.path.join(args.student_init, "config.json")) as f:
            width = json.load(f).get("hidden_size")
    return None if width in (None, MINILM_HIDDEN_SIZE) else width


def _folder_name(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


# ---------------------------------------------------------------------------------------------- models


def load_classifier(path: str, seed: int) -> tuple[torch.nn.Module, bool]:
    """``(model, head_loaded)``: a 2-label classifier from ``path``; ``head_loaded`` is False when the checkpoint
    has no classification layer (a pretrained encoder: the layer is freshly initialised, from ``seed``)."""
    transformers.set_seed(seed)
    model, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, output_loading_info=True)
    head = classification_layer(model)
    head_name = next(name for name, module in model.named_modules() if module is head)
    head_loaded = f"{head_name}.weight" not in info["missing_keys"]
    return model, head_loaded


def set_labels(model: torch.nn.Module, id2label: dict) -> None:
    model.config.id2label = {int(i): str(name) for i, name in id2label.items()}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}


def build_models(args: argparse.Namespace, pretrained: str, kd_teacher: str | None) -> dict:
    """The run's ``student`` and ``teacher`` (None for finetune) and how each was made.

    The student is `student_from_teacher` of ``--student_init`` (default ``pretrained``) for every recipe.
    Labels: those of a fine-tuned teacher when there is one (its head fixes their order), else SST-2's.
    """
    teacher, teacher_info = None, None
    labels = common.SST2_LABELS
    if args.recipe != "finetune":
        path = kd_teacher if args.recipe == "kd" else (args.prokt_teacher or pretrained)
        teacher, head_loaded = load_classifier(path, args.seed)
        if args.recipe == "kd" and not head_loaded:
            raise SystemExit(f"--kd_teacher {path} has no classification head: give a teacher fine-tuned on SST-2.")
        if head_loaded:
            labels = teacher.config.id2label
        else:
            set_labels(teacher, labels)
        zero_teacher = args.recipe == "prokt" and args.zero_init_classifier and not head_loaded
        if zero_teacher:
            zero_classification_layer(teacher)
        teacher_info = {"checkpoint": os.path.abspath(path),
                        "head": "loaded from the checkpoint" if head_loaded else "freshly initialised",
                        "head_zeroed": zero_teacher, "trained": args.recipe == "prokt",
                        "parameters": sum(p.numel() for p in teacher.parameters())}
    source_path = args.student_init or pretrained
    source, source_head_loaded = load_classifier(source_path, args.seed)
    set_labels(source, labels)
    student = student_from_teacher(
        source, args.student_layers, args.student_source_layers, hidden_size=args.student_hidden_size,
        intermediate_size=args.student_intermediate_size, num_attention_heads=args.student_num_attention_heads,
        init=args.student_weight_init)
    del source
    if args.zero_init_classifier:
        zero_classification_layer(student)
    student_info = {"checkpoint": os.path.abspath(source_path), "layers": args.student_layers,
                    "hidden_size": student.config.hidden_size,
                    "intermediate_size": student.config.intermediate_size,
                    "num_attention_heads": student.config.num_attention_heads,
                    "weight_init": args.student_weight_init,
                    "source_layers": student.config.student_from_teacher["teacher_layers"],
                    "head": "copied from the checkpoint" if source_head_loaded else "freshly initialised",
                    "head_zeroed": args.zero_init_classifier, "labels": student.config.id2label,
                    "parameters": sum(p.numel() for p in student.parameters())}
    return {"student": student, "teacher": teacher, "student_info": student_info, "teacher_info": teacher_info}


def tiny_pretrained(tokenizer, workdir: str) -> str:
    """A 4-layer, 32-wide BERT encoder (no classification head, like a pretrained checkpoint) saved in ``workdir``."""
    path = os.path.join(workdir, "tiny_pretrained")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------- training


class ProtocolTrainer(quality.TimedTrainer):
    """`ProKTTrainer` that times its evaluations (wall and CPU) and fingerprints the training batches in the order
    it reads them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_order = hashlib.sha1()
        self.eval_cpu_seconds = 0.0

    def evaluate(self, *args, **kwargs):
        start = time.process_time()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_cpu_seconds += time.process_time() - start

    def training_step(self, model, inputs, num_items_in_batch=None):
        for key in ("input_ids", "labels"):
            self.data_order.update(inputs[key].detach().cpu().numpy().tobytes())
        return super().training_step(model, inputs, num_items_in_batch)


def training_arguments(args: argparse.Namespace, workdir: str, strategy: str, max_steps: int,
                       **overrides) -> ProKTTrainingArguments:
    """The settings every run shares. Heads are zeroed by `build_models` (a warm-started teacher keeps its own)."""
    settings = dict(
        output_dir=os.path.join(workdir, "trainer"), strategy=strategy, seed=args.seed, data_seed=args.seed,
        max_steps=max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size, gradient_accumulation_steps=1,
        learning_rate=args.student_lr, teacher_learning_rate=args.teacher_lr, optim="adamw_torch",
        weight_decay=args.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        lr_scheduler_type="linear", warmup_steps=args.warmup_ratio, max_grad_norm=args.max_grad_norm,
        prokt_lambda=args.prokt_lambda, distill_alpha=args.alpha, distill_temperature=args.temperature,
        hidden_distill_weight=args.hidden_distill_weight if strategy != "finetune" else 0.0,
        distill_alpha_warmup_steps=args.alpha_warmup_steps if strategy != "finetune" else 0,
        prokt_lambda_warmup_steps=args.lambda_warmup_steps if strategy == "prokt" else 0,
        zero_init_classifier=False, evaluate_teacher=strategy == "prokt",
        eval_strategy="steps" if args.eval_steps else "no", eval_steps=args.eval_steps or None,
        logging_strategy="steps", logging_steps=args.logging_steps, save_strategy="no", report_to=[],
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    if strategy == "prokt" and args.anchor["passed"]:
        settings["prokt_anchor"] = args.anchor["used"]
    if strategy == "prokt" and args.prokt_constraint is not None:
        settings["prokt_constraint"] = args.prokt_constraint
        for key in ("prokt_epsilon", "dual_lr", "dual_init"):
            if getattr(args, key) is not None:
                settings[key] = getattr(args, key)
    settings.update(overrides)
    return ProKTTrainingArguments(**settings)


def quiet(trainer: ProKTTrainer, name: str) -> ProKTTrainer:
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(quality.Progress(name))
    return trainer


def train(args: argparse.Namespace, setup: quality.Setup, models: dict, max_steps: int, workdir: str) -> dict:
    """Train the student (and a ProKT teacher), evaluate along the way and at the end."""
    trainer = quiet(ProtocolTrainer(
        model=models["student"], teacher_model=models["teacher"],
        args=training_arguments(args, workdir, args.recipe, max_steps), train_dataset=setup.train,
        eval_dataset=setup.validation, data_collator=setup.collator, compute_metrics=quality.compute_accuracy,
    ), args.name)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    train_seconds = time.perf_counter() - start - trainer.eval_seconds
    train_cpu_seconds = time.process_time() - cpu_start - trainer.eval_cpu_seconds
    evaluated = [h["step"] for h in trainer.state.log_history if "eval_accuracy" in h]
    if not evaluated or evaluated[-1] != trainer.state.global_step:
        trainer.evaluate()
    return {"trainer": trainer, "train_s": train_seconds, "eval_s": trainer.eval_seconds,
            "train_cpu_s": train_cpu_seconds, "eval_cpu_s": trainer.eval_cpu_seconds}


def evaluate_alone(args: argparse.Namespace, setup: quality.Setup, model, workdir: str) -> float:
    """Dev accuracy of one model (the frozen KD teacher)."""
    trainer = quiet(ProKTTrainer(
        model=model, args=training_arguments(args, workdir, "finetune", 1), eval_dataset=setup.validation,
        data_collator=setup.collator, compute_metrics=quality.compute_accuracy,
    ), "teacher")
    return trainer.evaluate()["eval_accuracy"]


def tiny_kd_teacher(args: argparse.Namespace, setup: quality.Setup, pretrained: str, max_steps: int,
                    workdir: str) -> str:
    """--tiny without --kd_teacher: fine-tune the tiny pretrained model on the tiny data and save it."""
    model, _ = load_classifier(pretrained, seed=0)
    set_labels(model, common.SST2_LABELS)
    trainer = quiet(ProKTTrainer(
        model=model, args=training_arguments(args, workdir, "finetune", max_steps, eval_strategy="no",
                                             learning_rate=args.student_lr, seed=0, data_seed=0),
        train_dataset=setup.train, data_collator=setup.collator,
    ), "tiny kd teacher")
    trainer.train()
    path = os.path.join(workdir, "tiny_kd_teacher")
    trainer.save_model(path)
    return path


# ---------------------------------------------------------------------------------------------- report


def curve(log_history: list[dict]) -> list[dict]:
    """``[{"step", "student_accuracy", "teacher_accuracy" (prokt)}]``, one entry per evaluation."""
    points = []
    for entry in log_history:
        if "eval_accuracy" in entry:
            point = {"step": entry["step"], "student_accuracy": entry["eval_accuracy"]}
            if "eval_teacher_accuracy" in entry:
                point["teacher_accuracy"] = entry["eval_teacher_accuracy"]
            points.append(point)
    return points


def training_logs(log_history: list[dict]) -> list[dict]:
    keys = ("loss", "teacher_loss", "kl_student_teacher", "student_kl", "grad_norm", "learning_rate",
            "teacher_learning_rate", "student_hidden_loss", "distill_alpha", "prokt_lambda")
    return [{"step": h["step"], **{k: h[k] for k in keys if k in h}}
            for h in log_history if "loss" in h and not any(k.startswith("eval_") for k in h)]


def last_and_best(points: list[dict], key: str) -> dict:
    """Accuracy after the last step, and the best over the evaluations (the first step reaching it)."""
    best = max(points, key=lambda p: p[key])  # max keeps the first of equal values
    return {"last_accuracy": points[-1][key], "last_step": points[-1]["step"],
            "best_accuracy": best[key], "best_step": best["step"]}


def git_commit() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json_atomically(report: dict, path: str) -> None:
    """Write to a temporary file next to ``path``, then rename: a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as f:
            json.dump(report, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def hyperparameters(args: argparse.Namespace, max_steps: int, train_examples: int) -> dict:
    return {
        "recipe": args.recipe, "steps": max_steps, "epochs": max_steps * args.batch_size / train_examples,
        "batch_size": args.batch_size, "gradient_accumulation_steps": 1, "max_length": args.max_length,
        "padding": "dynamic (per batch)", "student_learning_rate": args.student_lr,
        "teacher_learning_rate": args.teacher_lr if args.recipe == "prokt" else None,
        "optimizer": "AdamW (adamw_torch, betas 0.9/0.999, eps 1e-8), the same recipe for both models",
        "lr_scheduler": "linear decay to 0 over the steps", "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm,
        "distill_alpha": args.alpha if args.recipe != "finetune" else None,
        "distill_temperature": args.temperature if args.recipe != "finetune" else None,
        "prokt_lambda": args.prokt_lambda if args.recipe == "prokt" else None,
        **constraint_settings(args),
        "prokt_target": "updated" if args.recipe == "prokt" else None,
        "prokt_anchor": args.anchor, "zero_init_classifier": args.zero_init_classifier,
        "hidden_distill_weight": args.hidden_distill_weight if args.recipe != "finetune" else None,
        "alpha_warmup_steps": args.alpha_warmup_steps if args.recipe != "finetune" else None,
        "lambda_warmup_steps": args.lambda_warmup_steps if args.recipe == "prokt" else None,
        "student_source_layers": args.student_source_layers,
        "eval_steps": args.eval_steps, "eval_batch_size": args.eval_batch_size, "logging_steps": args.logging_steps,
        "seed": args.seed, "data_seed": args.seed, "subset_seed": args.subset_seed,
    }


def constraint_settings(args: argparse.Namespace) -> dict:
    """ProKT's constraint as the run used it, library defaults filled in (None for other recipes)."""
    if args.recipe != "prokt":
        return {"prokt_constraint": None}
    fields = {f.name: f.default for f in dataclasses.fields(ProKTTrainingArguments)}
    used = args.prokt_constraint or fields["prokt_constraint"]
    settings = {"prokt_constraint": used}
    if used == "dual":
        for key in ("prokt_epsilon", "dual_lr", "dual_init"):
            settings[key] = getattr(args, key) if getattr(args, key) is not None else fields[key]
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output = os.path.join(args.output_dir, f"{args.name}.json")
    if args.skip_existing and os.path.exists(output):
        print(f"{output} exists: skipped")
        return 0
    transformers_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    start, load_at_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="hf_prokt_protocol_") as workdir:
        setup = quality.Setup(args)
        pretrained = tiny_pretrained(setup.tokenizer, workdir) if args.tiny else common.minilm_path()
        max_steps = args.max_steps or math.ceil(len(setup.train) / args.batch_size)
        kd_teacher = args.kd_teacher
        if args.recipe == "kd" and kd_teacher is None:  # --tiny only (parse_args requires it otherwise)
            kd_teacher = tiny_kd_teacher(args, setup, pretrained, max_steps, workdir)
        models = build_models(args, pretrained, kd_teacher)
        print(f"{args.name}: {args.recipe}, {len(setup.train)} training sentences, {len(setup.validation)} dev, "
              f"{max_steps} steps, seed {args.seed}, torch threads {torch.get_num_threads()}", flush=True)
        kd_teacher_accuracy = None
        if args.recipe == "kd":
            kd_teacher_accuracy = evaluate_alone(args, setup, models["teacher"], workdir)
            print(f"  kd teacher dev accuracy {kd_teacher_accuracy:.4f}", flush=True)
        run = train(args, setup, models, max_steps, workdir)
        trainer = run["trainer"]
        history = trainer.state.log_history
        points = curve(history)
        teacher = None
        if args.recipe == "prokt":
            teacher = last_and_best(points, "teacher_accuracy")
        elif args.recipe == "kd":
            teacher = {"last_accuracy": kd_teacher_accuracy, "best_accuracy": kd_teacher_accuracy, "frozen": True}
        report = {
            "name": args.name, "variant": run_variant(args), "setting": run_setting(args), "recipe": args.recipe,
            "seed": args.seed, "student_layers": args.student_layers,
            "alpha": args.alpha if args.recipe != "finetune" else None,
            "prokt_anchor": args.anchor["used"] if args.anchor else None,
            "student": last_and_best(points, "student_accuracy"), "teacher": teacher, "curve": points,
            "steps": trainer.state.global_step, "train_time_s": run["train_s"], "eval_time_s": run["eval_s"],
            "seconds_per_step": run["train_s"] / max(1, trainer.state.global_step),
            "train_cpu_time_s": run["train_cpu_s"], "eval_cpu_time_s": run["eval_cpu_s"],
            "total_time_s": time.perf_counter() - start,
            "data": {"dataset": "synthetic sentiment sentences" if args.tiny else "GLUE SST-2",
                     "train_examples": len(setup.train), "validation_examples": len(setup.validation),
                     **setup.token_stats(), "data_order_sha1": trainer.data_order.hexdigest()},
            "models": {"student": models["student_info"], "teacher": models["teacher_info"]},
            "hyperparameters": hyperparameters(args, max_steps, len(setup.train)),
            "arguments": {k: v for k, v in vars(args).items() if k not in ("defaults", "anchor")},
            "training_logs": training_logs(history),
            "machine": {**common.machine_description(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                        "load_average_1min": {"start": load_at_start[0], "end": os.getloadavg()[0]}},
            "hf_prokt_commit": git_commit(),
            "command": ["python", "-m", "benchmarks.sst2_protocol", *(sys.argv[1:] if argv is None else argv)],
            "notes": [
                "best_accuracy is the best dev accuracy over the evaluations (the authors' best-dev checkpoint, "
                "selected on the dev set itself); last_accuracy is after the last step.",
                "train_time_s excludes the evaluations; seconds_per_step = train_time_s / steps. The *_cpu_time_s "
                "are the process's CPU seconds (all threads): close to the wall time of a one-thread run on an "
                "idle core, whatever else the machine runs.",
                "data_order_sha1 fingerprints the training batches (input_ids, labels) in the order they were "
                "read: equal across recipes for the same seed and setting.",
            ],
        }
    write_json_atomically(report, output)
    student = report["student"]
    print(f"  -> student last {student['last_accuracy']:.4f} (step {student['last_step']}), best "
          f"{student['best_accuracy']:.4f} (step {student['best_step']})"
          + ("" if teacher is None else f"; teacher last {teacher['last_accuracy']:.4f}")
          + f"; {run['train_s']:.0f} s training, {run['eval_s']:.0f} s evaluating\nwrote {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
