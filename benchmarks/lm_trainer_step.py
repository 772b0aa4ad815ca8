"""Peak memory and time of a `ProKTTrainer` optimizer step on a causal LM: the chunked output terms
(``chunked_lm_loss``, the default for causal LMs) against the terms from the full logits.

The measured step is the trainer's own (`Trainer.train`, AdamW, one micro-batch): the student's forward and
backward and, for ProKT, the anchor, the teacher's step and its post-step prediction. Models: GPT-2 configs
built at random (no download), a teacher of ``teacher_layers x teacher_hidden`` and a student of
``student_layers x student_hidden``, vocabulary ``V``; batch ``B`` rows of ``L`` tokens, every token labelled.
Default sizes: ``V = 32000``, ``L = 512``, ``B = 4`` (2044 predicted positions: the full logits of one model
are 250 MiB in fp32), teacher 4 x 256, student 2 x 128, so that the logits dominate the step as they do for
real LMs.

Memory: each (strategy, variant) runs in a fresh subprocess, which builds the trainer and runs two optimizer
steps; the peak resident set size (``VmHWM``) is reset to the current size at the end of the first step (the
optimizer states then exist), and the *extra peak* is the peak during the second step minus the size before
it (the method of ``benchmarks/chunked_loss.py``).

Time: in this process, variants interleaved: for each of ``--rounds`` rounds, each variant trains a fresh
trainer for ``--steps`` steps and the median of its steps after the first is taken; reported per strategy:
the chunked/plain ratio of each round and their median. One torch thread by default; the machine's load is
recorded (on a shared machine the ratios are indicative).

Run: ``python -m benchmarks.lm_trainer_step`` (writes benchmarks/results/lm_trainer_step.json); ``--tiny``
for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import datasets
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainerCallback

from benchmarks.chunked_loss import _peak_rss_bytes, _reset_peak_rss, _status_bytes
from benchmarks.common import machine_description
from hf_prokt import ProKTTrainer, ProKTTrainingArguments

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "results", "lm_trainer_step.json")
FULL = dict(vocab_size=32000, seq_len=512, batch_size=4, teacher_layers=4, teacher_hidden=256, student_layers=2,
            student_hidden=128)
TINY = dict(vocab_size=300, seq_len=16, batch_size=2, teacher_layers=2, teacher_hidden=16, student_layers=1,
            student_hidden=16)
STRATEGIES = ("kd", "prokt")
VARIANTS = {"plain": False, "chunked": True}
TARGET = dict(memory_ratio_at_most=0.25, time_ratio_at_most=1.1)


def gpt2(layers: int, hidden: int, settings: dict, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=settings["vocab_size"], n_embd=hidden, n_layer=layers,
                                      n_head=max(1, hidden // 64), n_positions=settings["seq_len"]))


def make_trainer(strategy: str, chunked: bool, settings: dict, steps: int, callbacks=(), output_dir: str = ""):
    generator = torch.Generator().manual_seed(0)
    rows = steps * settings["batch_size"]
    ids = torch.randint(0, settings["vocab_size"], (rows, settings["seq_len"]), generator=generator)
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    args = ProKTTrainingArguments(
        output_dir=output_dir, strategy=strategy, chunked_lm_loss=chunked, max_steps=steps,
        per_device_train_batch_size=settings["batch_size"], distill_alpha=0.5, learning_rate=1e-4,
        teacher_learning_rate=1e-4, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        logging_steps=10**6, dataloader_num_workers=0, seed=0)
    teacher = gpt2(settings["teacher_layers"], settings["teacher_hidden"], settings, seed=1)
    student = gpt2(settings["student_layers"], settings["student_hidden"], settings, seed=0)
    return ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset,
                        callbacks=list(callbacks))


class StepClock(TrainerCallback):
    """The wall time of every optimizer step; with ``reset_peak``, the peak RSS reset after the first."""

    def __init__(self, reset_peak: bool = False):
        self.reset_peak, self.times, self.rss_before_second = reset_peak, [], None
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)
        if self.reset_peak and state.global_step == 1:
            self.rss_before_second = _status_bytes("VmRSS")
            if not _reset_peak_rss():
                self.rss_before_second = None


def memory_child(strategy: str, variant: str, settings: dict) -> dict:
    torch.set_num_threads(settings["threads"])
    clock = StepClock(reset_peak=True)
    with tempfile.TemporaryDirectory() as folder:
        trainer = make_trainer(strategy, VARIANTS[variant], settings, steps=2, callbacks=[clock], output_dir=folder)
        assert trainer.strategy.chunked is VARIANTS[variant]
        trainer.train()
    if clock.rss_before_second is None:
        raise RuntimeError("the peak RSS cannot be reset here (Linux /proc/self/clear_refs)")
    return {"extra_peak_bytes": _peak_rss_bytes() - clock.rss_before_second}


def _run_memory_child(strategy: str, variant: str, settings: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(settings["threads"]), MKL_NUM_THREADS=str(settings["threads"]))
    command = [sys.executable, "-m", "benchmarks.lm_trainer_step", "--_memory_child", strategy, variant,
               json.dumps(settings)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if completed.returncode != 0:
        raise RuntimeError(f"memory run of {strategy}/{variant} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory_repeats", type=int, default=2)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--_memory_child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options._memory_child:
        strategy, variant, settings = options._memory_child
        print(json.dumps(memory_child(strategy, variant, json.loads(settings))))
        return {}

    settings = dict(TINY if options.tiny else FULL, threads=options.threads)
    torch.set_num_threads(options.threads)
    log = lambda message: print(message, flush=True)  # noqa: E731
    report = {"settings": settings, "target": TARGET, "machine": machine_description(),
              "command": "python -m benchmarks.lm_trainer_step " + " ".join(argv or sys.argv[1:]),
              "load_before": list(os.getloadavg()), "strategies": {}}
    for strategy in STRATEGIES:
        entry = {"memory": {}, "time": {}}
        for variant in VARIANTS:
            runs = [_run_memory_child(strategy, variant, settings)["extra_peak_bytes"]
                    for _ in range(options.memory_repeats)]
            entry["memory"][variant] = {"extra_peak_mib": _mib(statistics.median(runs)),
                                        "runs_mib": [_mib(r) for r in runs]}
            log(f"{strategy} {variant}: extra peak {entry['memory'][variant]}")
        entry["memory"]["ratio"] = round(entry["memory"]["chunked"]["extra_peak_mib"]
                                         / entry["memory"]["plain"]["extra_peak_mib"], 3)
        times = {variant: [] for variant in VARIANTS}
        for round_index in range(options.rounds):
            order = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                clock = StepClock()
                with tempfile.TemporaryDirectory() as folder:
                    make_trainer(strategy, VARIANTS[variant], settings, options.steps, [clock], folder).train()
                times[variant].append(statistics.median(clock.times[1:]))
        ratios = [c / p for c, p in zip(times["chunked"], times["plain"], strict=True)]
        entry["time"] = {"step_s": {v: [round(t, 4) for t in ts] for v, ts in times.items()},
                         "ratio_per_round": [round(r, 3) for r in ratios],
                         "ratio_median": round(statistics.median(ratios), 3)}
        log(f"{strategy}: memory ratio {entry['memory']['ratio']}, time ratio {entry['time']['ratio_median']} "
            f"(rounds {entry['time']['ratio_per_round']})")
        report["strategies"][strategy] = entry
    report["load_after"] = list(os.getloadavg())
    if not options.tiny:
        os.makedirs(os.path.dirname(options.output), exist_ok=True)
        with open(options.output, "w") as file:
            json.dump(report, file, indent=1)
    return report


if __name__ == "__main__":
    main()
