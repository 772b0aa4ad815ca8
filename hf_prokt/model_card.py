"""The student's model card: the `transformers` card's content, with a section and metadata saying how it was
distilled, laid out by `huggingface_hub.ModelCard.from_template`.

Metadata stays valid for the Hub (`huggingface_hub.ModelCard`): ``base_model`` (only when it is a Hub id),
``datasets``, ``tags`` (``knowledge-distillation``, ``prokt``), and a ``model-index`` with the student's
final evaluation metrics.
"""

from __future__ import annotations

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers.modelcard import TrainingSummary, make_markdown_table

from .compression import parameter_count
from .model_kinds import model_kind_of

_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch", "step"}


def _is_hub_dataset(name: str) -> bool:
    return "/" in name and hub_id(name) is not None


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it names a Hub repository (`huggingface_hub.utils.validate_repo_id`), None for local
    folders and empty names."""
    if not name_or_path or os.path.isdir(name_or_path) or os.path.isabs(name_or_path):
        return None
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return None
    return name_or_path


def _source(model: nn.Module | None) -> str | None:
    """Where the model's weights came from (``config._name_or_path``), if known."""
    return getattr(getattr(model, "config", None), "_name_or_path", None) or None


def _name(model: nn.Module | None) -> str | None:
    return _source(model) or (type(model).__name__ if model is not None else None)


def student_origin(student: nn.Module | None) -> str | None:
    """How the student was made, when `hf_prokt.student_from_teacher` built it (read from its config), e.g.
    ``"built from `bert-base-uncased` with student_from_teacher: 6 of the teacher's 12 layers (0, 2, 4, 6, 8, 10)"``
    and, for a narrower one, its widths against the teacher's and whether its weights were selected from the
    teacher's or initialised at random."""
    record = getattr(getattr(student, "config", None), "student_from_teacher", None)
    if not isinstance(record, dict):
        return None
    random_init = record.get("init") == "random"
    if not record.get("teacher_layers") and not random_init:
        return None
    teacher = f"`{record['teacher']}`" if record.get("teacher") else "its teacher"
    teacher_layers = record.get("teacher_num_layers", "?")
    sizes = ("hidden_size", "num_attention_heads", "intermediate_size")
    teacher_sizes = [record.get(f"teacher_{name}") for name in sizes]
    student_sizes = [record.get(f"student_{name}") for name in sizes]
    width = ""
    if None not in teacher_sizes and None not in student_sizes and student_sizes != teacher_sizes:
        width = (" narrowed to hidden size {}, {} attention heads, feed-forward size {} (the teacher's {}, {}, {}),"
                 .format(*student_sizes, *teacher_sizes))
    if random_init:
        num_layers = getattr(getattr(student, "config", None), "num_hidden_layers", None)
        depth = f"{num_layers} layers (the teacher has {teacher_layers})" if num_layers else "its config"
        return (f"built from {teacher}'s config with student_from_teacher: {depth},{width} every weight "
                "initialised at random (no teacher weight copied)")
    layers = list(record["teacher_layers"])
    copied = ("every weight selected from the teacher's (evenly spaced hidden, head and feed-forward indices)"
              if width else "every other weight copied")
    return (f"built from {teacher} with student_from_teacher: {len(layers)} of the teacher's "
            f"{teacher_layers} layers ({', '.join(map(str, layers))}),{width} {copied}")


# The Hub tasks of the kinds distilled before any task (no head, or the masked-LM head of pretraining): their
# distillation is general distillation (TinyBERT's first stage), whatever the data.
GENERAL_DISTILLATION_TASKS = ("feature-extraction", "fill-mask")


def _opening_sentence(trainer, student: nn.Module, dataset: str | None) -> str:
    """The card's first sentence: what the student is, how it was trained, and on what data; for a student
    without a task head (or with a masked-LM head) distilled from a teacher, that it is the general distillation
    of that teacher on that data."""
    origin = student_origin(student)
    source = _source(student)
    made = (f"a student {origin}" if origin else
            f"a student initialised from `{source}`" if source else "a student trained from scratch")
    teacher = trainer.teacher_model
    how = trainer.strategy.summary
    data = f"on {dataset}" if dataset else "on an unnamed dataset (pass dataset= to create_model_card to name it)"
    if teacher is not None and _name(teacher) and task_type(student) in GENERAL_DISTILLATION_TASKS:
        return f"This model is {made}, trained by general distillation of `{_name(teacher)}` {data} ({how})."
    if teacher is not None and _name(teacher):
        how += f" (`{_name(teacher)}`)"
    return f"This model is {made}, {how}, {data}."


def final_metrics(log_history: list[dict], prefix: str = "eval_") -> tuple[dict[str, float], dict[str, float]]:
    """The last evaluation's student and teacher metrics (``{"accuracy": ...}``), without speed entries."""
    student, teacher = {}, {}
    for entry in log_history:
        if f"{prefix}loss" not in entry and not any(k.startswith(prefix) for k in entry):
            continue
        current_student, current_teacher = {}, {}
        for key, value in entry.items():
            if not key.startswith(prefix) or not isinstance(value, (int, float)):
                continue
            name = key[len(prefix):]
            if name.startswith("teacher_"):
                if name[len("teacher_"):] not in _NOT_METRICS:
                    current_teacher[name[len("teacher_"):]] = float(value)
            elif name not in _NOT_METRICS:
                current_student[name] = float(value)
        if current_student:
            student, teacher = current_student, current_teacher
    return student, teacher


def distillation_section(trainer, inference_speedup: float | None = None, dataset: str | None = None,
                         compression=None) -> str:
    """Markdown: method and strategy, both models and their sizes, the hyper-parameters that matter and the
    final metrics of both models. ``compression`` (a `hf_prokt.CompressionReport`) adds the measured sizes,
    latencies and speed-ups; ``inference_speedup`` alone gives one speed-up figure."""
    args = trainer.args
    student, teacher = trainer.accelerator.unwrap_model(trainer.model), trainer.teacher_model
    student_params = parameter_count(student)
    teacher_params = parameter_count(teacher) if teacher is not None else None
    if teacher_params is None and compression is not None:
        teacher_params = compression.teacher_parameters
    student_metrics, teacher_metrics = final_metrics(trainer.state.log_history)
    method = trainer.strategy.card_description()
    lines = ["## Distillation", "", f"This model was trained with hf_prokt (`strategy=\"{args.strategy}\"`): "
             f"{method}.", ""]
    rows = [("student", _name(student), student_params)]
    if teacher is not None:
        rows.append(("teacher", _name(teacher), teacher_params))
    elif teacher_params is not None:
        rows.append(("teacher", "(measured for compression)", teacher_params))
    lines += ["| model | from | parameters |", "| --- | --- | --- |"]
    lines += [f"| {role} | {name} | {count:,} |" for role, name, count in rows]
    lines.append("")
    if teacher_params is not None and student_params:
        lines.append(f"- Compression: {teacher_params / student_params:.2f}x fewer parameters than the teacher.")
        if compression is not None:
            lines.append(f"- Weights on disk (safetensors): {compression.student_size_bytes / 2**20:.1f} MiB, against "
                         f"{compression.teacher_size_bytes / 2**20:.1f} MiB for the teacher "
                         f"({compression.size_ratio:.2f}x smaller).")
            lines += compression_table(compression)
        else:
            lines.append(f"- Inference speed-up over the teacher: {inference_speedup:.2f}x (measured)."
                         if inference_speedup else "- Inference speed-up over the teacher: not measured.")
    origin = student_origin(student)
    if origin:
        lines.append(f"- Student: {origin}.")
    if dataset:
        lines.append(f"- Data: {dataset}.")
    lines += ["", "### Distillation hyper-parameters", ""]
    lines += [f"- {name}: {value}" for name, value in trainer.strategy.hyperparameters().items()]
    if student_metrics:
        lines += ["", "### Final evaluation", "", "| metric | student | teacher |", "| --- | --- | --- |"]
        for name, value in student_metrics.items():
            teacher_value = teacher_metrics.get(name)
            lines.append(f"| {name} | {value:.4f} | {'-' if teacher_value is None else f'{teacher_value:.4f}'} |")
    return "\n".join(lines) + "\n"


def compression_table(compression) -> list[str]:
    """Markdown lines: the measured latencies of both models and the speed-up, per batch size."""
    length = f", sequence length {compression.sequence_length}" if compression.sequence_length else ""
    lines = [f"- Inference speed-up over the teacher, measured on {compression.device} ({compression.torch_threads} "
             f"threads{length}; median of {compression.repeats} forwards, the two models interleaved):", "",
             "| batch size | teacher (ms) | student (ms) | speed-up |", "| --- | --- | --- | --- |"]
    for size in compression.batch_sizes:
        lines.append(f"| {size} | {compression.teacher_latency_ms[size]:.2f} | "
                     f"{compression.student_latency_ms[size]:.2f} | {compression.speedup[size]:.2f}x |")
    return lines + [""]


def task_type(model: nn.Module) -> str | None:
    """The Hub task of the model's kind (``"text-classification"``...), or None."""
    return model_kind_of(model).card_task


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ opening }}
{%- if eval_lines %}

It achieves the following results on the evaluation set:
{% for line in eval_lines %}
- {{ line }}
{%- endfor %}
{%- endif %}

{{ distillation }}
{%- for title, text in sections.items() %}
## {{ title }}

{{ text }}
{% endfor %}
## Training procedure

### Training hyperparameters

The following hyperparameters were used during training:
{% for name, value in hyperparameters.items() %}
- {{ name }}: {{ value }}
{%- endfor %}
{%- if results_table %}

### Training results

{{ results_table }}
{%- endif %}

### Framework versions
{% for name, version in versions.items() %}
- {{ name }} {{ version }}
{%- endfor %}
"""
"""The card's layout (`huggingface_hub.ModelCard.from_template`): the student's name, what it is and how it was
trained, the distillation section, then the `transformers` card's training procedure and framework versions."""


def build_model_card(trainer, dataset: str | list[str] | None = None, tasks: str | list[str] | None = None,
                     inference_speedup: float | None = None, finetuned_from: str | None = None, compression=None,
                     pipeline_tag: str | None = None, sections: dict[str, str] | None = None,
                     **card_kwargs) -> ModelCard:
    """The student's card: `CARD_TEMPLATE` filled from the `transformers` `TrainingSummary` of ``trainer`` (its
    metadata, hyperparameters and results) and from how the student was distilled.

    ``pipeline_tag`` (e.g. ``"text-generation"``) goes into the metadata, where the Hub reads the widget it shows;
    ``sections`` (title: Markdown text) are added after the distillation section, in their order."""
    summary = TrainingSummary.from_trainer(trainer, dataset=dataset, tasks=tasks, finetuned_from=finetuned_from,
                                           **card_kwargs)
    data = ModelCardData(**summary.create_metadata())
    student = trainer.accelerator.unwrap_model(trainer.model)
    datasets_ = [dataset] if isinstance(dataset, str) else list(dataset or [])
    data.tags = list(dict.fromkeys([*(data.tags or []), *trainer.strategy.tags, "hf-prokt"]))
    base_model = hub_id(finetuned_from) or hub_id(_source(student))
    data.base_model = base_model or None
    if pipeline_tag:
        data.pipeline_tag = pipeline_tag
    # The metadata lists Hub datasets: those given as dataset_tags (already there), else the names of the form
    # owner/name; any other name (a local file, "GLUE SST2") is for the text only.
    if not data.datasets and any(_is_hub_dataset(name) for name in datasets_):
        data.datasets = [name for name in datasets_ if _is_hub_dataset(name)]
    student_metrics, _ = final_metrics(trainer.state.log_history)
    task = (tasks if isinstance(tasks, str) else (tasks or [None])[0]) or task_type(student)
    data.eval_results = None
    if student_metrics and task and datasets_:
        data.eval_results = [
            EvalResult(task_type=task, dataset_type=(data.datasets or datasets_)[0], dataset_name=datasets_[0],
                       metric_type=name, metric_value=value)
            for name, value in student_metrics.items() if name != "loss"
        ] or None
        data.model_name = data.model_name or os.path.basename(os.path.normpath(trainer.args.output_dir))
    dataset_text = ", ".join(datasets_) or None
    return ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, model_name=summary.model_name,
        opening=_opening_sentence(trainer, student, dataset_text),
        eval_lines=[f"{name}: {_rounded(value)}" for name, value in (summary.eval_results or {}).items()],
        distillation=distillation_section(trainer, inference_speedup, dataset_text, compression),
        sections=sections or {}, hyperparameters=summary.hyperparameters or {},
        results_table=make_markdown_table(summary.eval_lines) if summary.eval_lines else "",
        versions=_framework_versions(),
    )


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def _framework_versions() -> dict[str, str]:
    import datasets
    import tokenizers
    import torch
    import transformers

    return {"Transformers": transformers.__version__, "Pytorch": torch.__version__,
            "Datasets": datasets.__version__, "Tokenizers": tokenizers.__version__}


def write_model_card(trainer, folder: str, inference_speedup: float | None = None, compression=None,
                     **card_kwargs) -> None:
    """Write ``folder/README.md``: `build_model_card` of ``trainer``'s student (``card_kwargs``: ``language``,
    ``tags``, ``dataset``, ``tasks``, ``finetuned_from``... as `Trainer.create_model_card` takes them). Only the
    main process writes."""
    if not trainer.is_world_process_zero():
        return
    card_kwargs = {k: v for k, v in card_kwargs.items() if v is not None}
    card = build_model_card(trainer, inference_speedup=inference_speedup, compression=compression, **card_kwargs)
    os.makedirs(folder, exist_ok=True)
    card.save(os.path.join(folder, "README.md"))
