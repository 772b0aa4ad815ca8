"""Seconds per training step of ProKT against its floor, a naive implementation, KD and fine-tuning.

Everything is measured in ONE process, interleaved: for each sequence length the variants run in rounds
(round-robin, the order rotated each round); every block builds fresh optimizers (a fresh trainer) and
starts with ``--warmup`` untimed steps. The reported time is the median (and interquartile range) over
all timed steps of all rounds. A first, untimed round warms every variant up before anything is recorded.

Variants (teacher MiniLM-L6-H384, student its 2-layer copy; ``--tiny``: tiny BERT configs):

* ``floor``: the passes a faithful ProKT step cannot avoid, each timed on its own and summed per step:
  teacher forward+backward (train mode), teacher optimizer step (clip + AdamW step + scheduler step +
  zero_grad), teacher forward without graph (eval mode, ``torch.no_grad``), student forward+backward,
  student optimizer step (same). Run one after the other, so no two parts' memory is alive at once.
* ``naive``: a ProKT step written plainly, in the authors' order: a separate no-grad student forward
  for the teacher's target, the teacher step, the teacher's no-graph forward, the student step.
* ``manual_prokt`` (a diagnostic): `ProKTTrainer`'s passes in its order, written plainly without the
  Trainer: the student's forward (with graph) serves as the teacher's target, so its graph stays alive
  through the teacher's step. ``prokt / manual_prokt`` is the Trainer's overhead; ``manual_prokt /
  floor`` the cost of keeping the student's graph alive (memory) instead of a second forward.
* ``finetune``, ``kd``, ``prokt``, ``prokt_stale`` (``prokt_target="stale"``), ``prokt_hidden``
  (``hidden_distill_weight=1.0``, which also returns and matches hidden states, so it does more than the
  floor): real `ProKTTrainer` steps through the `Trainer` loop.

What a "step" includes. Trainer variants: from ``on_step_begin`` to ``on_step_end`` (a callback), i.e.
`training_step` (``_prepare_inputs``: moving the batch to the device; forwards, backwards, the teacher's
step), the Trainer's flop/token counting, gradient clipping, the student's optimizer and scheduler
steps and ``zero_grad``. It excludes fetching and collating the batch (``get_batch_samples`` runs before
``on_step_begin``) and the log/save/evaluate hook (after ``on_step_end``). The interval between two
``on_step_begin`` (which includes those, with ``logging_strategy="no"``) is reported as ``loop_s``.
``floor``, ``naive`` and ``manual_prokt`` run on a batch already built and on the device, so the data
side is outside every timed window alike. All variants use the same synthetic batches: random ids from
the real vocabulary (above the special tokens), a full attention mask, zero token types, random binary
labels. Optimizers: AdamW as the Trainer builds it for ``optim="adamw_torch"`` (decay / no-decay groups),
linear schedule, gradient clipping at 1.0 for both models; the models are reused across blocks.

Shared machines. A block during which other processes used more than ``--max_foreign_cpu`` of the CPUs
(from ``/proc/stat``) is measured again (``--max_attempts``); the table shows the most other processes
used during a kept block and the retries. On a small CPU, a second busy process slows torch's threads
many times over, so run this on an otherwise idle machine.

Memory. CUDA: ``torch.cuda.max_memory_allocated`` over the block (reset before it), and that peak minus
what was allocated when the block started. CPU: the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``gc`` and ``malloc_trim``) minus its resident set when the block started:
the extra memory the block touched (activations, gradients, optimizer states, the trainer), with both
models already resident. It is process-wide, so it counts anything else this process allocates meanwhile.
``faults/step`` counts the minor page faults of a timed step: with glibc's allocator, memory freed at the
end of a step goes back to the system and is faulted in again by the next one, a cost that grows with
the step's peak memory (CPU only; CUDA's caching allocator keeps its memory).

Run: ``python -m benchmarks.step_time`` (``--seq_lens 64 128 --batch_size 32``); ``--tiny`` for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, get_scheduler
from transformers.trainer_callback import PrinterCallback

from hf_prokt import ProKTTrainer, ProKTTrainingArguments, student_from_teacher
from hf_prokt.losses import student_loss, teacher_penalty_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "step_time.json")
TRAINER_VARIANTS = {
    "finetune": {"strategy": "finetune"},
    "kd": {"strategy": "kd"},
    "prokt": {"strategy": "prokt"},
    "prokt_stale": {"strategy": "prokt", "prokt_target": "stale"},
    "prokt_hidden": {"strategy": "prokt", "hidden_distill_weight": 1.0},
}
VARIANTS = ("floor", "naive", "manual_prokt", *TRAINER_VARIANTS)
PARTS = ("teacher_fwd_bwd", "teacher_optimizer", "teacher_fwd_nograd", "student_fwd_bwd", "student_optimizer")
RATIOS = {
    "prokt/floor": ("prokt", "floor"),
    "prokt/naive": ("prokt", "naive"),
    "prokt/kd": ("prokt", "kd"),
    "kd/finetune": ("kd", "finetune"),
    "prokt_stale/prokt": ("prokt_stale", "prokt"),
    "prokt_stale/floor": ("prokt_stale", "floor"),
    "naive/floor": ("naive", "floor"),
    "prokt_hidden/prokt": ("prokt_hidden", "prokt"),
    "manual_prokt/floor": ("manual_prokt", "floor"),
    "prokt/manual_prokt": ("prokt", "manual_prokt"),
}
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


# ---------------------------------------------------------------------------------------------- measuring


class Clock:
    """``perf_counter`` that first waits for the device (CUDA kernels are asynchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class StepTimer(TrainerCallback):
    """Records the clock at every ``on_step_begin`` and ``on_step_end``."""

    def __init__(self, clock: Clock):
        self.clock, self.begins, self.ends, self.faults = clock, [], [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.faults.append(_minor_faults())
        self.begins.append(self.clock())

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(self.clock())
        self.faults[-1] = _difference(_minor_faults(), self.faults[-1])


def _difference(after, before):
    return None if after is None or before is None else after - before


class MemoryMeter:
    """Peak memory of one block: see the module docstring for what the number means."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.libc = None
        with contextlib.suppress(OSError):
            self.libc = ctypes.CDLL("libc.so.6")
        self.can_reset = False
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.can_reset = _proc_status_kib("VmHWM") is not None
            except OSError:
                self.can_reset = False

    @property
    def description(self) -> str:
        if self.cuda:
            return ("torch.cuda.max_memory_allocated during the block (reset before it), MiB; delta: minus the "
                    "memory allocated when the block started (both models resident)")
        if self.can_reset:
            return ("CPU: the process's peak resident set during the block (VmHWM, reset before it) minus its "
                    "resident set when the block started (both models resident, after gc and malloc_trim), MiB; "
                    "process-wide, max over the rounds")
        return "unavailable (no /proc/self/clear_refs on this system)"

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        if self.libc is not None:
            self.libc.malloc_trim(0)
        if self.can_reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _proc_status_kib("VmRSS") * 1024

    def stop(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            return {"peak_mib": peak / 2**20, "delta_mib": (peak - self.base) / 2**20}
        if self.can_reset:
            peak = _proc_status_kib("VmHWM") * 1024
            return {"peak_rss_mib": peak / 2**20, "delta_mib": (peak - self.base) / 2**20}
        return {}


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class CpuActivity:
    """How busy the machine's CPUs were with *other* processes over a block (Linux ``/proc``): the
    jiffies all CPUs spent busy minus this process's own, as a fraction of the CPUs' time. Measured
    step times on a shared machine are only trusted when this stays small (see ``--max_foreign_cpu``)."""

    def __init__(self):
        self.available = self._machine() is not None and self._own() is not None

    @staticmethod
    def _machine():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
        return busy, sum(fields)

    @staticmethod
    def _own():
        try:
            with open("/proc/self/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        if self.available:
            self.begin = (self._machine(), self._own())

    def stop(self) -> float | None:
        """The share (0..1) of all CPUs' time that other processes used since `start`."""
        if not self.available:
            return None
        (busy0, total0), own0 = self.begin
        (busy1, total1), own1 = self._machine(), self._own()
        if total1 <= total0:
            return 0.0
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (total1 - total0)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (each maps a fresh page: on CPU, memory the allocator
    gave back to the system and takes again)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Bench:
    """Runs the blocks of one sequence length and collects their timings."""

    def __init__(self, teacher, student, batches, options, device, clock, meter, scratch):
        self.teacher, self.student, self.batches = teacher, student, batches
        self.options, self.device, self.clock, self.meter, self.scratch = options, device, clock, meter, scratch
        self.device_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.dataset = ExampleDataset(batches)
        self.activity = CpuActivity()
        self.times = {v: [] for v in VARIANTS}
        self.loop_times = {v: [] for v in TRAINER_VARIANTS}
        self.parts = {p: [] for p in PARTS}
        self.memory = {v: [] for v in VARIANTS}
        self.blocks = {v: [] for v in VARIANTS}

    def args(self, total_steps: int, **overrides) -> ProKTTrainingArguments:
        settings = dict(
            output_dir=self.scratch, per_device_train_batch_size=self.options.batch_size, max_steps=total_steps,
            report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=self.device.type == "cpu", seed=0, **HYPER,
        )
        settings.update(overrides)
        return ProKTTrainingArguments(**settings)

    def measure(self, variant: str, steps: int, warmup: int) -> dict:
        """One block: ``warmup`` untimed steps then ``steps`` timed ones, with fresh optimizers."""
        block = {"variant": variant, "load_1min": os.getloadavg()[0], "loops": [], "parts": {}}
        if variant in TRAINER_VARIANTS:
            timer = StepTimer(self.clock)
            trainer = self._make_trainer(variant, warmup + steps, timer)
            self.meter.start()
            self.activity.start()
            trainer.train()
            block["foreign_cpu"] = self.activity.stop()
            block["memory"] = self.meter.stop()
            block["times"] = [end - begin for begin, end in zip(timer.begins, timer.ends)][warmup:]
            block["loops"] = [b - a for a, b in zip(timer.begins, timer.begins[1:])][warmup:]
            block["faults"] = timer.faults[warmup:]
            del trainer, timer
        else:
            self.meter.start()
            self.activity.start()
            if variant == "floor":
                block["times"], block["faults"], block["parts"] = self._floor(warmup, steps)
            else:
                block["times"], block["faults"] = self._manual(MANUAL_STEPS[variant], warmup, steps)
            block["foreign_cpu"] = self.activity.stop()
            block["memory"] = self.meter.stop()
        gc.collect()
        return block

    def record(self, block: dict, attempts: int) -> None:
        variant = block["variant"]
        self.times[variant].extend(block["times"])
        if variant in self.loop_times:
            self.loop_times[variant].extend(block["loops"])
        for part, values in block["parts"].items():
            self.parts[part].extend(values)
        self.memory[variant].append(block["memory"])
        self.blocks[variant].append({"steps": len(block["times"]), "load_1min": block["load_1min"],
                                     "foreign_cpu": block["foreign_cpu"], "attempts": attempts,
                                     "minor_faults_per_step": _mean(block["faults"])})

    def _make_trainer(self, variant: str, total_steps: int, timer: StepTimer) -> ProKTTrainer:
        args = self.args(total_steps, **TRAINER_VARIANTS[variant])
        teacher = None if variant == "finetune" else self.teacher
        dataset = torch.utils.data.Subset(self.dataset, range(total_steps * self.options.batch_size))
        trainer = ProKTTrainer(model=self.student, teacher_model=teacher, args=args, train_dataset=dataset,
                               callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training metrics; no step hook
        return trainer

    def _floor(self, warmup: int, steps: int) -> tuple[list[float], list, dict[str, list[float]]]:
        teacher, student, clock, hyper = self.teacher, self.student, self.clock, HYPER
        args = self.args(warmup + steps)
        t_opt, t_sched = make_optimizer(args, teacher, hyper["teacher_learning_rate"], warmup + steps)
        s_opt, s_opt_sched = make_optimizer(args, student, hyper["learning_rate"], warmup + steps)
        student_logits = None
        totals, faults, parts = [], [], {part: [] for part in PARTS}
        for index in range(warmup + steps):
            batch = self.device_batches[index % len(self.device_batches)]
            inputs, labels = _split(batch)
            if student_logits is None:
                with torch.no_grad():
                    student_logits = student(**inputs).logits
            teacher.train()
            faults_before = _minor_faults()
            marks = [clock()]
            loss, _ = teacher_penalty_loss(teacher(**inputs).logits, student_logits, labels,
                                           hyper["prokt_lambda"], hyper["distill_temperature"])
            loss.backward()
            marks.append(clock())
            optimizer_step(teacher, t_opt, t_sched, hyper["max_grad_norm"])
            marks.append(clock())
            teacher.eval()
            with torch.no_grad():
                target = teacher(**inputs).logits
            teacher.train()
            marks.append(clock())
            logits = student(**inputs).logits
            loss, _ = student_loss(logits, target, labels, hyper["distill_alpha"], hyper["distill_temperature"])
            loss.backward()
            student_logits = logits.detach()
            marks.append(clock())
            optimizer_step(student, s_opt, s_opt_sched, hyper["max_grad_norm"])
            marks.append(clock())
            if index >= warmup:
                durations = [b - a for a, b in zip(marks, marks[1:])]
                for part, duration in zip(PARTS, durations):
                    parts[part].append(duration)
                totals.append(sum(durations))
                faults.append(_difference(_minor_faults(), faults_before))
        return totals, faults, parts

    def _manual(self, step, warmup: int, steps: int) -> tuple[list[float], list]:
        teacher, student, clock, hyper = self.teacher, self.student, self.clock, HYPER
        args = self.args(warmup + steps)
        t_opt, t_sched = make_optimizer(args, teacher, hyper["teacher_learning_rate"], warmup + steps)
        s_opt, s_sched = make_optimizer(args, student, hyper["learning_rate"], warmup + steps)
        student.train()
        times, faults = [], []
        for index in range(warmup + steps):
            batch = self.device_batches[index % len(self.device_batches)]
            faults_before = _minor_faults()
            start = clock()
            step(teacher, student, t_opt, t_sched, s_opt, s_sched, batch)
            end = clock()
            if index >= warmup:
                times.append(end - start)
                faults.append(_difference(_minor_faults(), faults_before))
        return times, faults


def _split(batch: dict) -> tuple[dict, torch.Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]


def naive_prokt_step(teacher, student, t_opt, t_sched, s_opt, s_sched, batch: dict) -> None:
    """One ProKT step as one would write it by hand, in the authors' order (4 forwards, 2 backwards)."""
    inputs, labels = _split(batch)
    with torch.no_grad():  # 1. the student's prediction, as the teacher's target
        student_logits = student(**inputs).logits
    teacher.train()  # 2. the teacher step
    loss, _ = teacher_penalty_loss(teacher(**inputs).logits, student_logits, labels,
                                   HYPER["prokt_lambda"], HYPER["distill_temperature"])
    loss.backward()
    optimizer_step(teacher, t_opt, t_sched, HYPER["max_grad_norm"])
    teacher.eval()  # 3. the local target
    with torch.no_grad():
        target = teacher(**inputs).logits
    teacher.train()
    loss, _ = student_loss(student(**inputs).logits, target, labels,  # 4. the student step
                           HYPER["distill_alpha"], HYPER["distill_temperature"])
    loss.backward()
    optimizer_step(student, s_opt, s_sched, HYPER["max_grad_norm"])


def manual_prokt_step(teacher, student, t_opt, t_sched, s_opt, s_sched, batch: dict) -> None:
    """The passes and order of `ProKTTrainer`'s step, without the Trainer: one student forward with a graph
    (its detached logits are the teacher's target), the teacher step, the teacher's no-graph forward, then
    the student's backward through the graph of its first forward (3 forwards, 2 backwards)."""
    inputs, labels = _split(batch)
    student_logits = student(**inputs).logits
    teacher.train()
    loss, _ = teacher_penalty_loss(teacher(**inputs).logits, student_logits.detach(), labels,
                                   HYPER["prokt_lambda"], HYPER["distill_temperature"])
    loss.backward()
    optimizer_step(teacher, t_opt, t_sched, HYPER["max_grad_norm"])
    teacher.eval()
    with torch.no_grad():
        target = teacher(**inputs).logits
    teacher.train()
    loss, _ = student_loss(student_logits, target, labels, HYPER["distill_alpha"], HYPER["distill_temperature"])
    loss.backward()
    optimizer_step(student, s_opt, s_sched, HYPER["max_grad_norm"])


MANUAL_STEPS = {"naive": naive_prokt_step, "manual_prokt": manual_prokt_step}


# ---------------------------------------------------------------------------------------------- report


def summarize(values: list[float]) -> dict:
    if not values:
        return {"median_s": None, "iqr_s": None, "n": 0}
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median_s": statistics.median(values), "iqr_s": q3 - q1, "q1_s": q1, "q3_s": q3, "n": len(values)}


def measure_seq_len(teacher, student, seq_len: int, options, device: torch.device, log) -> dict:
    clock, meter = Clock(device), MemoryMeter(device)
    rounds = max(1, min(options.rounds, options.repeats))
    per_round = [options.repeats // rounds + (1 if r < options.repeats % rounds else 0) for r in range(rounds)]
    batches = synthetic_batches(teacher.config.vocab_size, options.batch_size, seq_len,
                                count=options.warmup + max(per_round))
    scratch = tempfile.mkdtemp(prefix="prokt_step_time_")
    try:
        bench = Bench(teacher, student, batches, options, device, clock, meter, scratch)
        log(f"seq_len {seq_len}: warm-up round")
        for variant in VARIANTS:
            bench.measure(variant, steps=0, warmup=max(1, options.warmup))
        for r, steps in enumerate(per_round):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            log(f"seq_len {seq_len}: round {r + 1}/{rounds} ({steps} timed steps per variant)")
            for variant in order:
                for attempt in range(1, options.max_attempts + 1):
                    block = bench.measure(variant, steps=steps, warmup=options.warmup)
                    foreign = block["foreign_cpu"]
                    if foreign is None or foreign <= options.max_foreign_cpu or attempt == options.max_attempts:
                        break
                    log(f"  {variant}: other processes used {foreign:.0%} of the CPUs, measuring it again")
                    time.sleep(options.retry_pause)
                bench.record(block, attempt)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    variants = {}
    for variant in VARIANTS:
        entry = summarize(bench.times[variant])
        entry["samples_per_s"] = options.batch_size / entry["median_s"] if entry["median_s"] else None
        memories = bench.memory[variant]
        entry["memory_mib"] = {k: max(m[k] for m in memories) for k in memories[0]} if memories and memories[0] else {}
        faults = [b["minor_faults_per_step"] for b in bench.blocks[variant] if b["minor_faults_per_step"] is not None]
        entry["minor_faults_per_step_median"] = statistics.median(faults) if faults else None
        entry["times_s"] = bench.times[variant]
        entry["blocks"] = bench.blocks[variant]
        if variant in bench.loop_times:
            entry["loop_s"] = summarize(bench.loop_times[variant])["median_s"]
        variants[variant] = entry
    variants["floor"]["parts_median_s"] = {p: statistics.median(v) for p, v in bench.parts.items()}
    variants["floor"]["sum_of_part_medians_s"] = sum(variants["floor"]["parts_median_s"].values())
    ratios = {name: variants[a]["median_s"] / variants[b]["median_s"] for name, (a, b) in RATIOS.items()}
    return {"variants": variants, "ratios": ratios, "memory_meaning": meter.description}


def format_table(results: dict, batch_size: int) -> str:
    lines = []
    for seq_len, result in results.items():
        variants = result["variants"]
        floor = variants["floor"]["median_s"]
        lines.append(f"\nbatch {batch_size}, sequence length {seq_len}")
        lines.append(f"{'variant':<14}{'s/step':>10}{'IQR':>10}{'samples/s':>11}{'x floor':>9}{'mem MiB':>9}"
                     f"{'loop s':>9}{'faults/step':>12}{'other CPU':>11}{'retries':>9}")
        for name, entry in variants.items():
            memory = entry["memory_mib"].get("delta_mib")
            loop = entry.get("loop_s")
            foreign = [b["foreign_cpu"] for b in entry["blocks"] if b["foreign_cpu"] is not None]
            retries = sum(b["attempts"] - 1 for b in entry["blocks"])
            faults = entry["minor_faults_per_step_median"]
            lines.append(
                f"{name:<14}{entry['median_s']:>10.4f}{entry['iqr_s']:>10.4f}{entry['samples_per_s']:>11.1f}"
                f"{entry['median_s'] / floor:>9.3f}{'' if memory is None else f'{memory:.0f}':>9}"
                f"{'' if loop is None else f'{loop:.4f}':>9}{'' if faults is None else f'{faults / 1000:.0f}k':>12}"
                f"{f'{max(foreign):.0%}' if foreign else '':>11}{retries:>9}"
            )
        parts = variants["floor"]["parts_median_s"]
        lines.append("floor parts (median s): " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))
        lines.append("ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in result["ratios"].items()))
    lines.append("s/step: median over all timed steps (IQR: q3 - q1); mem: peak memory of a block above its start "
                 "(see memory_meaning in the JSON); loop s: median interval between step starts (adds batch fetch/"
                 "collation); faults/step: minor page faults per timed step (median over blocks); other CPU: the "
                 "most of the CPUs other processes used during a kept block.")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq_lens", type=int, nargs="+", default=None,
                        help="Sequence lengths (default: 64 128; --tiny: 16).")
    parser.add_argument("--batch_size", type=int, default=None, help="Batch size (default 32; --tiny: 8).")
    parser.add_argument("--repeats", type=int, default=None,
                        help="Timed steps per variant and sequence length, spread over the rounds (default 20; "
                        "--tiny: 2).")
    parser.add_argument("--rounds", type=int, default=None,
                        help="Interleaved rounds over the variants (default 4; --tiny: 1).")
    parser.add_argument("--warmup", type=int, default=None,
                        help="Untimed steps at the start of every block (default 2: on CPU the first two steps of a "
                        "block still grow the heap, more so for the variants with the higher peak); --tiny: 1.")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="Where to write the JSON results.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_foreign_cpu", type=float, default=None,
                        help="A block during which other processes used more than this share of the CPUs (0..1) is "
                        "measured again, up to --max_attempts times (default 0.1; --tiny: 1, i.e. never).")
    parser.add_argument("--max_attempts", type=int, default=4, help="Attempts per block (see --max_foreign_cpu).")
    parser.add_argument("--retry_pause", type=float, default=5.0, help="Seconds to wait before measuring again.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the run (default: torch's own choice); restored afterwards.")
    parser.add_argument("--tiny", action="store_true", help="Tiny BERT configs instead of MiniLM (a smoke run).")
    options = parser.parse_args(argv)
    tiny = options.tiny
    defaults = {"seq_lens": [16] if tiny else [64, 128], "batch_size": 8 if tiny else 32,
                "repeats": 2 if tiny else 20, "rounds": 1 if tiny else 4, "max_foreign_cpu": 1.0 if tiny else 0.1,
                "warmup": 1 if tiny else 2}
    for name, value in defaults.items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    if options.repeats < 1 or options.batch_size < 1 or options.warmup < 0 or options.max_attempts < 1:
        parser.error("--repeats, --batch_size and --max_attempts must be positive, --warmup non-negative")
    return options


def main(argv=None) -> dict:
    options = parse_args(argv)
    device = torch.device(options.device)
    import transformers

    transformers.logging.set_verbosity_error()

    def log(message: str) -> None:
        print(f"[step_time {time.strftime('%H:%M:%S')}] {message}", flush=True)

    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _run(options, device, log)
    finally:
        torch.set_num_threads(previous_threads)


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
            "batch_size": options.batch_size, "seq_lens": options.seq_lens, "repeats": options.repeats,
            "rounds": options.rounds, "warmup_per_block": options.warmup, "max_foreign_cpu": options.max_foreign_cpu,
            "max_attempts": options.max_attempts, "threads": torch.get_num_threads(), **HYPER,
        },
        "timed_window": "Trainer variants: on_step_begin -> on_step_end (excludes batch fetch/collation and the "
                        "log/save hook; loop_s is on_step_begin -> next on_step_begin). floor/naive/manual_prokt: "
                        "the passes on a batch already on the device.",
        "results": results,
    }
    print(format_table(results, options.batch_size))
    print(f"\nmachine: {report['machine']}; load average before {load_before}, after {report['load_average_after']}")
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    with open(options.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {options.output}")
    return report


if __name__ == "__main__":
    main()
