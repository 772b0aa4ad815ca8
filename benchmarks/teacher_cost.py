"""What the teacher costs: memory and step time of each way of holding it, against a fully trained teacher.

Variants (teacher MiniLM-L6-H384, student its 2-layer copy, batch 32, sequence length 64; ``--tiny``:
tiny BERT configs), all real `ProKTTrainer` runs on the same synthetic batches as `benchmarks.step_time`:

* ``finetune``: no teacher (the reference);
* ``kd``: a frozen fp32 teacher (eval mode, no optimizer, no gradients);
* ``kd_bf16``: the same teacher cast to bfloat16 (``teacher_dtype="bfloat16"``);
* ``prokt``: the teacher trained with the student, every weight in its AdamW optimizer;
* ``prokt_lora``: the teacher wrapped by PEFT LoRA (r=8 on query/value, the classifier trained too):
  only its adapter and head are in its optimizer; its base weights stay frozen.

Every variant runs in a fresh Python process, so that one's allocations never count for another. Reported
per variant: the teacher's resident weights (bytes of its parameters), its trainable parameters, the bytes
of optimizer state the teacher's and the student's optimizers hold after training, the peak memory of
the training steps beyond what was resident before them (CPU: peak resident set ``VmHWM`` minus the
resident set at the start, after ``gc`` and ``malloc_trim``; CUDA: ``max_memory_allocated`` minus the
allocated memory at the start) and the median seconds per step after ``--warmup`` untimed steps.

Run: ``python -m benchmarks.teacher_cost`` (about 3 minutes on 2 idle CPU cores); ``--tiny`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

if __package__ in (None, ""):  # run as `python benchmarks/teacher_cost.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_description  # noqa: E402
from benchmarks.step_time import HYPER, ExampleDataset, build_models, synthetic_batches  # noqa: E402
from benchmarks.timing import Clock, MemoryMeter, StepTimer  # noqa: E402
from hf_prokt import ProKTTrainer, ProKTTrainingArguments  # noqa: E402

VARIANTS = {
    "finetune": dict(strategy="finetune"),
    "kd": dict(strategy="kd"),
    "kd_bf16": dict(strategy="kd", teacher_dtype="bfloat16"),
    "prokt": dict(strategy="prokt"),
    "prokt_lora": dict(strategy="prokt"),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "teacher_cost.json")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--lora_rank", type=int, default=8)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--tiny", action="store_true", help="tiny BERTs (no model package): the smoke test")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    return parser.parse_args(argv)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor the optimizer keeps per parameter (AdamW: step, exp_avg, exp_avg_sq)."""
    if optimizer is None:
        return 0
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return sum(_tensor_bytes(state.values()) for state in optimizer.state.values())


def lora_teacher(teacher, rank: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=2 * rank, target_modules=["query", "value"])
    return get_peft_model(teacher, config)


def run_one(options: argparse.Namespace) -> dict:
    """Train one variant for ``warmup + steps`` steps in this process and measure it."""
    variant = options.one
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher, student = build_models(options.tiny)
    if variant == "prokt_lora":
        teacher = lora_teacher(teacher, options.lora_rank)
    total = options.warmup + options.steps
    vocab = student.config.vocab_size
    dataset = ExampleDataset(synthetic_batches(vocab, options.batch_size, options.seq_len, total))
    timer = StepTimer(Clock(device))
    with tempfile.TemporaryDirectory() as scratch:
        args = ProKTTrainingArguments(
            output_dir=scratch, per_device_train_batch_size=options.batch_size, max_steps=total, report_to=[],
            save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=device.type == "cpu", seed=0, **HYPER, **VARIANTS[variant],
        )
        trainer = ProKTTrainer(model=student, teacher_model=None if variant == "finetune" else teacher, args=args,
                               train_dataset=dataset, callbacks=[timer])
        meter = MemoryMeter(device)
        meter.start()
        trainer.train()
        memory = meter.stop()
    held = trainer.teacher_model
    times = [end - begin for begin, end in zip(timer.begins, timer.ends)][options.warmup:]
    return {
        "variant": variant,
        "seconds_per_step": statistics.median(times),
        "step_times": times,
        "memory": memory,
        "teacher_weights_mib": _tensor_bytes(held.parameters()) / 2**20 if held is not None else 0.0,
        "teacher_trainable_parameters": (sum(p.numel() for p in held.parameters() if p.requires_grad)
                                         if held is not None and variant.startswith("prokt") else 0),
        "teacher_trainable_tensors": (sum(1 for p in held.parameters() if p.requires_grad)
                                      if held is not None and variant.startswith("prokt") else 0),
        "teacher_optimizer_state_mib": optimizer_state_bytes(trainer.teacher_optimizer) / 2**20,
        "student_optimizer_state_mib": optimizer_state_bytes(trainer.optimizer) / 2**20,
    }


def format_table(rows: list[dict]) -> str:
    header = ("variant", "s/step", "x finetune", "teacher weights MiB", "teacher trainable", "teacher optim MiB",
              "peak extra MiB")
    reference = next((r["seconds_per_step"] for r in rows if r["variant"] == "finetune"), None)
    lines = [header]
    for r in rows:
        ratio = f"{r['seconds_per_step'] / reference:.2f}" if reference else "-"
        lines.append((r["variant"], f"{r['seconds_per_step']:.3f}", ratio, f"{r['teacher_weights_mib']:.1f}",
                      f"{r['teacher_trainable_parameters']:,}", f"{r['teacher_optimizer_state_mib']:.1f}",
                      f"{r['memory'].get('delta_mib', float('nan')):.0f}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = [" | ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv=None) -> int:
    options = parse_args(argv)
    if options.one:
        print("RESULT " + json.dumps(run_one(options)))
        return 0
    rows = []
    for variant in options.variants:
        command = [sys.executable, "-m", "benchmarks.teacher_cost", "--one", variant,
                   "--batch_size", str(options.batch_size), "--seq_len", str(options.seq_len),
                   "--steps", str(options.steps), "--warmup", str(options.warmup),
                   "--lora_rank", str(options.lora_rank)] + (["--tiny"] if options.tiny else [])
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"variant {variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        print(f"{variant}: {rows[-1]['seconds_per_step']:.3f} s/step", flush=True)
    print(format_table(rows))
    report = {"machine": machine_description(),
              "settings": {k: v for k, v in vars(options).items() if k not in ("one", "output")},
              "command": ["python", "-m", "benchmarks.teacher_cost", *(argv if argv is not None else sys.argv[1:])],
              "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
    with open(options.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
