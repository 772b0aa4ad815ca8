"""Seconds per training step of ProKT against its floor, a naive implementation, KD and fine-tuning.

The variants it times; the harness that times them (interleaved rounds of blocks with fresh optimizers,
untimed warm-up steps, re-measuring blocks disturbed by other processes, memory and page faults, the
spread of every ratio over the rounds) is `benchmarks.timing`, whose docstring says what every number means.

Variants (teacher MiniLM-L6-H384, student its 2-layer copy; ``--tiny``: tiny BERT configs):

* ``floor``: the passes a faithful ProKT step with the default anchor (``prokt_anchor="eval"``) cannot
  avoid, each timed on its own and summed per step: student forward without graph (eval mode: the
  teacher's anchor), teacher forward+backward (train mode), teacher optimizer step (clip + AdamW step +
  scheduler step + zero_grad), teacher forward without graph (eval mode, ``torch.no_grad``), student
  forward+backward, student optimizer step (same). Run one after the other, so no two parts' memory is
  alive at once.
* ``floor_train_anchor``: the same without the anchor's forward (``prokt_anchor="train"`` reuses the
  student's training forward; here the previous step's student logits stand in for it).
* ``naive``: a ProKT step written plainly, in the authors' order: the student's eval-mode no-grad
  forward for the teacher's anchor, the teacher step, the teacher's no-graph forward, the student step.
  ``prokt / naive`` is the `Trainer`'s overhead with the eval anchor.
* ``manual_prokt``: the train anchor's fused step written plainly without the Trainer: the student's
  forward (with graph) gives the teacher's anchor, so its graph stays alive through the teacher's step.
  ``prokt_train_anchor / manual_prokt`` is the Trainer's overhead with the train anchor;
  ``manual_prokt / floor_train_anchor`` the cost of keeping the student's graph alive (memory).
* ``kd_cached``: `ProKTTrainer` ``strategy="kd"`` without a teacher model, from a training set whose
  ``teacher_logits`` column `hf_prokt.cache_teacher_logits` filled beforehand. The cache's own cost (one
  teacher pass over the block's examples, timed on the same clock) and its size on disk (``save_to_disk``)
  are reported beside the step times (``kd_cache`` in the JSON).
* ``finetune``, ``kd``, ``prokt``, ``prokt_train_anchor`` (``prokt_anchor="train"``), ``prokt_stale``
  (``prokt_target="stale"``), ``prokt_hidden`` (``hidden_distill_weight=1.0``, which also returns and
  matches hidden states, so it does more than the floor): real `ProKTTrainer` steps through the `Trainer`
  loop.

A new variant is one entry: `ProKTTrainer` arguments in ``TRAINER_VARIANTS``, or a step function
``step(models, batch, mark)`` in ``HAND_WRITTEN`` (with the names of its parts if it times them), and
the ratios it should be read against in ``RATIOS``.

What a "step" includes. Trainer variants: from ``on_step_begin`` to ``on_step_end`` (a callback), i.e.
`training_step` (``_prepare_inputs``: moving the batch to the device; forwards, backwards, the teacher's
step), the Trainer's flop/token counting, gradient clipping, the student's optimizer and scheduler
steps and ``zero_grad``. It excludes fetching and collating the batch (``get_batch_samples`` runs before
``on_step_begin``) and the log/save/evaluate hook (after ``on_step_end``). The interval between two
``on_step_begin`` (which includes those, with ``logging_strategy="no"``) is reported as ``loop_s``.
The hand-written variants run on a batch already built and on the device, so the data side is outside
every timed window alike. All variants use the same synthetic batches: random ids from the real
vocabulary (above the special tokens), a full attention mask, zero token types, random binary labels.
Optimizers: AdamW as the Trainer builds it for ``optim="adamw_torch"`` (decay / no-decay groups), linear
schedule, gradient clipping at 1.0 for both models; the models are reused across blocks.

Shared machines: on a small CPU, a second busy process slows torch's threads many times over, so run
this on an otherwise idle machine, and read every ratio with its spread over the rounds.

Run: ``python -m benchmarks.step_time`` (``--seq_lens 64 128 --batch_size 32``); ``--tiny`` for a smoke run;
``--variants kd kd_cached finetune`` times only those (the ratios between them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datasets
import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, get_scheduler
from transformers.trainer_callback import PrinterCallback

from benchmarks import timing
from hf_prokt import ProKTTrainer, ProKTTrainingArguments, cache_teacher_logits, student_from_teacher
from hf_prokt.losses import student_loss, teacher_penalty_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "step_time.json")
# The recipe of every variant (the authors' values; the learning rates do not change the cost).
HYPER = dict(learning_rate=1e-4, teacher_learning_rate=3e-5, prokt_lambda=0.4, distill_alpha=1.0,
             distill_temperature=1.0, max_grad_norm=1.0, optim="adamw_torch", lr_scheduler_type="linear")


# ---------------------------------------------------------------------------------------------- set-up


def build_models(tiny: bool):
    """``(teacher, student)``: MiniLM-L6 and its 2-layer copy, or (``tiny``) a 4-layer tiny BERT and its copy."""
    if tiny:
        torch.manual_seed(0)
        config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512, num_labels=2)
        teacher = BertForSequenceClassification(config)
    else:
        from benchmarks.common import load_teacher

        teacher = load_teacher(num_labels=2, seed=0)
    return teacher, student_from_teacher(teacher, 2)


def synthetic_batches(vocab_size: int, batch_size: int, seq_len: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` batches of random ids (never the first 1000 ids of a real vocabulary: special and unused
    tokens), full attention masks, zero token types and random binary labels."""
    generator = torch.Generator().manual_seed(seed)
    low = 1000 if vocab_size > 2000 else 5
    batches = []
    for _ in range(count):
        ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=generator)
        batches.append({
            "input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (batch_size,), generator=generator),
        })
    return batches


class ExampleDataset(Dataset):
    """The synthetic batches as single pre-tokenized examples (dicts of tensors) for the Trainer's collator."""

    def __init__(self, batches: list[dict]):
        self.examples = [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(len(batch["labels"]))]

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]


def make_optimizer(args: ProKTTrainingArguments, model: torch.nn.Module, lr: float, total_steps: int):
    """AdamW and a linear schedule, built as the Trainer builds them for ``optim="adamw_torch"``."""
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {**kwargs, "lr": lr}
    decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no trainer state
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": args.weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    optimizer = optimizer_cls([g for g in groups if g["params"]], **kwargs)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=0,
                              num_training_steps=total_steps)
    return optimizer, scheduler


def optimizer_step(model, optimizer, scheduler, max_grad_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class Models:
    """The teacher and the student with fresh optimizers, for one block of a hand-written variant.
    ``anchor`` carries what a step leaves for the next (the floor: the student's last detached logits)."""

    def __init__(self, teacher, student, args: ProKTTrainingArguments, total_steps: int):
        self.teacher, self.student, self.anchor = teacher, student, None
        self.teacher_optimizer = make_optimizer(args, teacher, HYPER["teacher_learning_rate"], total_steps)
        self.student_optimizer = make_optimizer(args, student, HYPER["learning_rate"], total_steps)

    def step_teacher(self) -> None:
        optimizer_step(self.teacher, *self.teacher_optimizer, HYPER["max_grad_norm"])

    def step_student(self) -> None:
        optimizer_step(self.student, *self.student_optimizer, HYPER["max_grad_norm"])


# ---------------------------------------------------------------------------------------------- hand-written steps


def _split(batch: dict) -> tuple[dict, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def _teacher_loss(models: Models, inputs: dict, anchor: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The teacher's penalty loss in train mode (with a graph), pulled toward ``anchor`` [B, C]."""
    models.teacher.train()
    loss, _ = teacher_penalty_loss(models.teacher(**inputs).logits, anchor, labels,
                                   HYPER["prokt_lambda"], HYPER["distill_temperature"])
    return loss


@torch.no_grad()
def _eval_logits(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """``model``'s logits [B, C] in eval mode, without a graph (the teacher's: the student's target; the
    student's: the teacher's anchor for ``prokt_anchor="eval"``); leaves the model in train mode."""
    model.eval()
    logits = model(**inputs).logits
    model.train()
    return logits


def _student_loss(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    loss, _ = student_loss(logits, target, labels, HYPER["distill_alpha"], HYPER["distill_temperature"])
    return loss


TRAIN_ANCHOR_FLOOR_PARTS = ("teacher_fwd_bwd", "teacher_optimizer", "teacher_fwd_nograd", "student_fwd_bwd",
                            "student_optimizer")
FLOOR_PARTS = ("student_fwd_nograd", *TRAIN_ANCHOR_FLOOR_PARTS)


def _floor_passes(models: Models, inputs: dict, labels: torch.Tensor, anchor: torch.Tensor, mark) -> torch.Tensor:
    """The teacher's step toward ``anchor``, its target and the student's step, a mark after each part;
    returns the student's detached logits [B, C]."""
    _teacher_loss(models, inputs, anchor, labels).backward()
    mark()
    models.step_teacher()
    mark()
    target = _eval_logits(models.teacher, inputs)
    mark()
    logits = models.student(**inputs).logits
    _student_loss(logits, target, labels).backward()
    mark()
    models.step_student()
    mark()
    return logits.detach()


def floor_step(models: Models, batch: dict, mark) -> None:
    """The unavoidable passes of a step with the eval anchor, each between two marks: the anchor's forward
    (student, eval mode, no graph), then those of the train anchor's floor."""
    inputs, labels = _split(batch)
    models.teacher.train()
    mark()
    anchor = _eval_logits(models.student, inputs)
    mark()
    _floor_passes(models, inputs, labels, anchor, mark)


def train_anchor_floor_step(models: Models, batch: dict, mark) -> None:
    """The unavoidable passes of a step with the train anchor, each between two marks. The anchor is the
    previous step's student logits (a no-grad forward before the first step, outside the timed window)."""
    inputs, labels = _split(batch)
    if models.anchor is None:
        with torch.no_grad():
            models.anchor = models.student(**inputs).logits
    models.teacher.train()
    mark()
    models.anchor = _floor_passes(models, inputs, labels, models.anchor, mark)


def naive_prokt_step(models: Models, batch: dict, mark) -> None:
    """One ProKT step as one would write it by hand, in the authors' order (4 forwards, 2 backwards)."""
    inputs, labels = _split(batch)
    anchor = _eval_logits(models.student, inputs)  # 1. the student's prediction (eval mode), the teacher's anchor
    _teacher_loss(models, inputs, anchor, labels).backward()  # 2. the teacher step
    models.step_teacher()
    target = _eval_logits(models.teacher, inputs)  # 3. the local target
    _student_loss(models.student(**inputs).logits, target, labels).backward()  # 4. the student step
    models.step_student()


def manual_prokt_step(models: Models, batch: dict, mark) -> None:
    """The train anchor's fused step, written without the Trainer: one student forward with a graph (its
    detached logits are the teacher's anchor), the teacher step, the teacher's no-graph forward, then the
    student's backward through the graph of its first forward (3 forwards, 2 backwards)."""
    inputs, labels = _split(batch)
    logits = models.student(**inputs).logits
    _teacher_loss(models, inputs, logits.detach(), labels).backward()
    models.step_teacher()
    target = _eval_logits(models.teacher, inputs)
    _student_loss(logits, target, labels).backward()
    models.step_student()


# ---------------------------------------------------------------------------------------------- the registry

# Real `ProKTTrainer` runs: the arguments that make each variant.
TRAINER_VARIANTS = {
    "finetune": {"strategy": "finetune"},
    "kd": {"strategy": "kd"},
    "kd_cached": {"strategy": "kd"},  # no teacher model: the training set's cached teacher_logits
    "prokt": {"strategy": "prokt"},
    "prokt_train_anchor": {"strategy": "prokt", "prokt_anchor": "train"},
    "prokt_stale": {"strategy": "prokt", "prokt_target": "stale"},
    "prokt_hidden": {"strategy": "prokt", "hidden_distill_weight": 1.0},
}
# Steps written by hand, without the Trainer: (step function, the parts it marks or ()).
HAND_WRITTEN = {
    "floor": (floor_step, FLOOR_PARTS),
    "floor_train_anchor": (train_anchor_floor_step, TRAIN_ANCHOR_FLOOR_PARTS),
    "naive": (naive_prokt_step, ()),
    "manual_prokt": (manual_prokt_step, ()),
}
VARIANTS = (*HAND_WRITTEN, *TRAINER_VARIANTS)
PARTS = HAND_WRITTEN["floor"][1]
RATIOS = (  # "a/b": variant a's median step time over variant b's
    "prokt/floor", "prokt_train_anchor/floor_train_anchor", "prokt/naive", "prokt_train_anchor/manual_prokt",
    "prokt_train_anchor/prokt", "floor_train_anchor/floor", "prokt/kd", "kd/finetune", "kd_cached/finetune",
    "kd_cached/kd", "prokt_stale/prokt", "prokt_hidden/prokt", "naive/floor", "manual_prokt/floor_train_anchor",
)


class Variants:
    """Builds the blocks of every variant on one sequence length's batches (`timing.Variant`)."""

    def __init__(self, teacher, student, batches: list[dict], options, device: torch.device, scratch: str):
        self.teacher, self.student, self.options, self.device, self.scratch = teacher, student, options, device, scratch
        self.clock = timing.Clock(device, options.clock)
        self.device_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.dataset = ExampleDataset(batches)
        self.cached_dataset, self.cache_report = None, None

    def all(self) -> dict[str, timing.Variant]:
        return {name: (lambda w, s, name=name: self.block(name, w, s)) for name in self.options.variants}

    def build_cache(self) -> dict:
        """The examples with cached ``teacher_logits`` (`hf_prokt.cache_teacher_logits`, batches of the
        training batch size), and what the cache cost: the teacher pass's time on this benchmark's clock, and
        its size on disk as ``save_to_disk`` writes it (all columns, and the logits column alone)."""
        examples = self.dataset.examples
        plain = datasets.Dataset.from_dict(
            {key: [example[key].tolist() for example in examples] for key in examples[0]}).with_format("torch")
        self.teacher.to(self.device)
        started = self.clock()
        self.cached_dataset = cache_teacher_logits(self.teacher, plain, batch_size=self.options.batch_size,
                                                   disable_tqdm=True)
        seconds = self.clock() - started
        sizes = {}
        for name, dataset in (("with_inputs", self.cached_dataset),
                              ("logits_only", self.cached_dataset.select_columns(["teacher_logits"]))):
            folder = os.path.join(self.scratch, f"cache_{name}")
            datasets.disable_progress_bars()
            dataset.save_to_disk(folder)
            sizes[name] = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder)
                              for f in files)
            shutil.rmtree(folder, ignore_errors=True)
        count = len(examples)
        self.cache_report = {
            "examples": count, "teacher_pass_s": seconds, "teacher_pass_s_per_1000_examples": 1000 * seconds / count,
            "bytes_on_disk": sizes["with_inputs"], "logits_bytes_on_disk": sizes["logits_only"],
            "logits_bytes_per_example": sizes["logits_only"] / count,
        }
        return self.cache_report

    def args(self, total_steps: int, **overrides) -> ProKTTrainingArguments:
        return ProKTTrainingArguments(
            output_dir=self.scratch, per_device_train_batch_size=self.options.batch_size, max_steps=total_steps,
            report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=self.device.type == "cpu", seed=0, **{**HYPER, **overrides},
        )

    def block(self, name: str, warmup: int, steps: int):
        """What one block of ``name`` needs, built before its measurement starts; returns its ``run()``."""
        if name in TRAINER_VARIANTS:
            timer = timing.StepTimer(self.clock)
            trainer = self._trainer(name, warmup + steps, timer)

            def run() -> timing.Block:
                trainer.train()
                return timer.block(warmup)

            return run
        step, parts = HAND_WRITTEN[name]
        models = Models(self.teacher, self.student, self.args(warmup + steps), warmup + steps)
        batches = self.device_batches

        def run() -> timing.Block:
            self.student.train()
            return timing.time_steps(lambda index, mark: step(models, batches[index % len(batches)], mark),
                                     steps, warmup, self.clock, parts)

        return run

    def _trainer(self, name: str, total_steps: int, timer: timing.StepTimer) -> ProKTTrainer:
        examples = range(total_steps * self.options.batch_size)
        if name == "kd_cached":
            if self.cached_dataset is None:
                self.build_cache()
            dataset = self.cached_dataset.select(examples)
        else:
            dataset = torch.utils.data.Subset(self.dataset, examples)
        teacher = None if name in ("finetune", "kd_cached") else self.teacher
        trainer = ProKTTrainer(model=self.student, teacher_model=teacher,
                               args=self.args(total_steps, **TRAINER_VARIANTS[name]), train_dataset=dataset,
                               callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training metrics; no step hook
        return trainer


# ---------------------------------------------------------------------------------------------- running


def measure_seq_len(teacher, student, seq_len: int, options, device: torch.device, log) -> dict:
    rounds = max(1, min(options.rounds, options.repeats))
    batches = synthetic_batches(teacher.config.vocab_size, options.batch_size, seq_len,
                                count=options.warmup + -(-options.repeats // rounds))
    scratch = tempfile.mkdtemp(prefix="prokt_step_time_")
    try:
        variants = Variants(teacher, student, batches, options, device, scratch)
        measured = timing.interleave(variants.all(), options, device, log, f"seq_len {seq_len}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = timing.summarize_blocks(measured, RATIOS, options.batch_size)
    if variants.cache_report is not None:
        result["kd_cache"] = variants.cache_report
        log(f"seq_len {seq_len}: kd cache {variants.cache_report}")
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq_lens", type=int, nargs="+", default=None,
                        help="Sequence lengths (default: 64 128; --tiny: 16).")
    parser.add_argument("--batch_size", type=int, default=None, help="Batch size (default 32; --tiny: 8).")
    timing.add_arguments(parser, DEFAULT_OUTPUT)
    parser.add_argument("--tiny", action="store_true", help="Tiny BERT configs instead of MiniLM (a smoke run).")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="The variants to time (default: all).")
    options = parser.parse_args(argv)
    if options.seq_lens is None:
        options.seq_lens = [16] if options.tiny else [64, 128]
    if options.batch_size is None:
        options.batch_size = 8 if options.tiny else 32
    if options.batch_size < 1:
        parser.error("--batch_size must be positive")
    timing.fill_defaults(parser, options, options.tiny)
    return options


def main(argv=None) -> dict:
    options = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    return timing.with_threads(options, lambda: _run(options, torch.device(options.device), timing.logger("step_time")))


def _run(options, device: torch.device, log) -> dict:
    from benchmarks.common import machine_description

    teacher, student = build_models(options.tiny)
    teacher.to(device)
    student.to(device)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    for seq_len in options.seq_lens:
        results[str(seq_len)] = measure_seq_len(teacher, student, seq_len, options, device, log)
    report = {
        "benchmark": "step_time",
        "machine": machine_description(),
        "device": str(device),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_time_s": time.perf_counter() - started,
        "settings": {
            "models": "tiny BERT 4 layers -> 2" if options.tiny else "MiniLM-L6-H384 -> 2-layer copy",
            "batch_size": options.batch_size, "seq_lens": options.seq_lens, "variants": options.variants,
            **timing.settings(options), **HYPER,
        },
        "timed_window": "Trainer variants: on_step_begin -> on_step_end (excludes batch fetch/collation and the "
                        "log/save hook; loop_s is on_step_begin -> next on_step_begin). Hand-written variants (floors, "
                        "naive, manual_prokt): the passes on a batch already on the device.",
        "results": results,
    }
    print(timing.format_table(results, lambda seq_len: f"batch {options.batch_size}, sequence length {seq_len}",
                              reference="floor" if "floor" in options.variants else options.variants[0]))
    print(f"\nmachine: {report['machine']}; load average before {load_before}, after {report['load_average_after']}")
    timing.write_report(report, options.output)
    return report


if __name__ == "__main__":
    main()
