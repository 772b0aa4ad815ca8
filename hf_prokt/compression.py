"""What distillation bought: the student's size and speed against its teacher, measured.

`measure_compression` counts parameters, writes both models as safetensors to learn their size on disk, and
times their inference on the same inputs, on the same device, in one process: forwards interleaved between
the two models (so that a machine that slows down slows both), in eval mode, without a graph, after a
warm-up, taking the median of the repeats.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from accelerate import PartialState
from torch import nn
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

_LABEL_KEYS = ("labels", "label", "label_ids")


@dataclass
class CompressionReport:
    """Sizes and latencies of a teacher and its student. Ratios are teacher over student (2.0: half the size,
    twice as fast).

    Attributes:
        teacher_parameters, student_parameters: parameter counts (shared weights counted once).
        parameter_ratio: ``teacher_parameters / student_parameters``.
        teacher_size_bytes, student_size_bytes: bytes of the safetensors weights ``save_pretrained`` writes.
        size_ratio: ``teacher_size_bytes / student_size_bytes``.
        batch_sizes: the batch sizes timed; ``sequence_length`` the inputs' length (None for images).
        teacher_latency_ms, student_latency_ms: median milliseconds of one forward, per batch size.
        speedup: ``teacher_latency_ms / student_latency_ms`` per batch size.
        device, repeats, warmup, torch_threads: how it was measured.
    """

    teacher_parameters: int
    student_parameters: int
    teacher_size_bytes: int
    student_size_bytes: int
    batch_sizes: list[int]
    sequence_length: int | None
    teacher_latency_ms: dict[int, float]
    student_latency_ms: dict[int, float]
    device: str
    repeats: int
    warmup: int
    torch_threads: int
    parameter_ratio: float = field(init=False)
    size_ratio: float = field(init=False)
    speedup: dict[int, float] = field(init=False)

    def __post_init__(self):
        self.parameter_ratio = self.teacher_parameters / self.student_parameters
        self.size_ratio = self.teacher_size_bytes / self.student_size_bytes
        self.speedup = {b: self.teacher_latency_ms[b] / self.student_latency_ms[b] for b in self.batch_sizes}

    def to_dict(self) -> dict:
        """A flat dict for ``all_results.json``: every field, latencies and speed-ups as ``*_bs{N}`` per batch
        size, and ``teacher_latency_ms`` / ``student_latency_ms`` / ``speedup`` at the first batch size."""
        values = asdict(self)
        per_batch = {name: values.pop(name) for name in ("teacher_latency_ms", "student_latency_ms", "speedup")}
        headline = self.batch_sizes[0]
        for name, by_batch in per_batch.items():
            values[name] = by_batch[headline]
            values.update({f"{name}_bs{b}": value for b, value in by_batch.items()})
        return values


def measure_compression(teacher: nn.Module, student: nn.Module, example_batch: dict,
                        batch_sizes: tuple[int, ...] = (1, 32), repeats: int = 20, warmup: int = 3,
                        device: str | torch.device | None = None) -> CompressionReport:
    """Parameters, size on disk and inference latency of ``teacher`` and ``student``, and their ratios.

    Args:
        teacher, student: models that read the same inputs.
        example_batch: a collated batch of model inputs (``input_ids [B, L]`` and ``attention_mask [B, L]``,
            or ``pixel_values [B, C, H, W]``, ...). Labels are dropped. Rows are repeated (or cut) to make each
            of ``batch_sizes``; the sequence length is the batch's own (pad it to the length you care about).
        batch_sizes: the batch sizes to time.
        repeats: timed forwards per model and batch size; the median is reported.
        warmup: untimed forwards per model and batch size first.
        device: where to time (default: the current process's device, accelerate's ``PartialState().device``).
            Both models are moved there for the measurement and put back afterwards.

    Returns:
        A `CompressionReport`. Latency depends on the machine and its load: report the device and thread
        count with the numbers (the report carries them).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0 (got repeats={repeats}, warmup={warmup}).")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}.")
    inputs = {k: v for k, v in example_batch.items() if k not in _LABEL_KEYS and isinstance(v, torch.Tensor)}
    if not inputs:
        raise ValueError("example_batch holds no input tensors: pass a collated batch such as a data collator returns.")
    rows = next(iter(inputs.values())).shape[0]
    device = torch.device(device) if device is not None else PartialState().device
    sizes = {"teacher": _safetensors_bytes(teacher), "student": _safetensors_bytes(student)}
    latencies: dict[str, dict[int, float]] = {"teacher": {}, "student": {}}
    models = {"teacher": teacher, "student": student}
    with _measured(models, device):
        for batch_size in batch_sizes:
            index = torch.arange(int(batch_size)) % rows
            batch = {k: v[index].to(device) for k, v in inputs.items()}
            times = _interleaved_times(models, batch, repeats, warmup, device)
            for name in models:
                latencies[name][int(batch_size)] = 1000 * statistics.median(times[name])
    sequence = inputs.get("input_ids", inputs.get("attention_mask"))
    return CompressionReport(
        teacher_parameters=parameter_count(teacher), student_parameters=parameter_count(student),
        teacher_size_bytes=sizes["teacher"], student_size_bytes=sizes["student"],
        batch_sizes=[int(b) for b in batch_sizes],
        sequence_length=int(sequence.shape[1]) if sequence is not None and sequence.dim() > 1 else None,
        teacher_latency_ms=latencies["teacher"], student_latency_ms=latencies["student"], device=str(device),
        repeats=repeats, warmup=warmup, torch_threads=torch.get_num_threads(),
    )


def record_compression(trainer, teacher: nn.Module, example_batch: dict, batch_sizes: tuple[int, ...],
                       repeats: int) -> dict:
    """`measure_compression` of ``teacher`` against the trainer's (unwrapped) student on ``example_batch``, on
    the training device, recorded where a training script reports it: ``compression_results.json`` and
    ``all_results.json`` (`Trainer.save_metrics`) and the model card (``trainer.compression_report``, read
    by `ProKTTrainer.create_model_card`; call this before the card is written). Returns the flat figures."""
    report = measure_compression(teacher, trainer.accelerator.unwrap_model(trainer.model), example_batch,
                                 batch_sizes=tuple(batch_sizes), repeats=repeats, device=trainer.args.device)
    logger.info(f"Student against teacher: {report.parameter_ratio:.2f}x fewer parameters, "
                f"{report.speedup[report.batch_sizes[0]]:.2f}x faster at batch {report.batch_sizes[0]}.")
    trainer.compression_report = report
    metrics = report.to_dict()
    trainer.save_metrics("compression", metrics, combined=True)
    return metrics


def parameter_count(model: nn.Module) -> int:
    """Parameters of ``model``, shared (tied) weights counted once: `PreTrainedModel.num_parameters` for a
    `transformers` model, the same count for any other module (a PEFT wrapper, a plain `nn.Module`)."""
    if isinstance(model, PreTrainedModel):
        return model.num_parameters()
    return sum(p.numel() for p in model.parameters())


def _safetensors_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as safetensors: what ``save_pretrained`` writes for a `transformers`
    model (shards summed), ``safetensors.torch.save_model`` for any other module."""
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, PreTrainedModel):
            model.save_pretrained(folder, safe_serialization=True)
        else:
            from safetensors.torch import save_model

            save_model(model, os.path.join(folder, "model.safetensors"))
        return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
                   if name.endswith(".safetensors"))


class _measured:
    """Both models on ``device`` in eval mode for the measurement; their devices and modes restored after."""

    def __init__(self, models: dict[str, nn.Module], device: torch.device):
        self.models, self.device = models, device

    def __enter__(self):
        self.saved = {}
        for name, model in self.models.items():
            parameter = next(model.parameters(), None)
            self.saved[name] = (model.training, parameter.device if parameter is not None else None)
            model.to(self.device).eval()

    def __exit__(self, *exc):
        for name, model in self.models.items():
            training, home = self.saved[name]
            if home is not None:
                model.to(home)
            model.train(training)


@torch.no_grad()
def _interleaved_times(models: dict[str, nn.Module], batch: dict, repeats: int, warmup: int,
                       device: torch.device) -> dict[str, list[float]]:
    """Seconds per forward of each model, alternating models (and which goes first) at every repeat."""
    names = list(models)
    for _ in range(warmup):
        for name in names:
            models[name](**batch)
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in (names if repeat % 2 == 0 else names[::-1]):
            _synchronize(device)
            start = time.perf_counter()
            models[name](**batch)
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
