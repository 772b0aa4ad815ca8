"""The student's model card: the `transformers` card plus a section and metadata saying how it was distilled.

Metadata stays valid for the Hub (`huggingface_hub.ModelCard`): ``base_model`` (only when it is a Hub id),
``datasets``, ``tags`` (``knowledge-distillation``, ``prokt``), and a ``model-index`` with the student's
final evaluation metrics.
"""

from __future__ import annotations

import os
import re

from huggingface_hub import EvalResult, ModelCard
from torch import nn
from transformers.modelcard import TrainingSummary

_TASK_BY_CLASS = (("SequenceClassification", "text-classification"),
                  ("TokenClassification", "token-classification"),
                  ("ImageClassification", "image-classification"))
_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch", "step"}
_OPENING = re.compile(r"^This model (was trained from scratch|is a fine-tuned version of).*$", re.M)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _is_hub_dataset(name: str) -> bool:
    return "/" in name and hub_id(name) is not None


def parameter_count(model: nn.Module | None) -> int | None:
    return None if model is None else sum(p.numel() for p in model.parameters())


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it names a Hub repository, None for local folders and empty names."""
    if not name_or_path or os.path.isdir(name_or_path) or os.path.isabs(name_or_path):
        return None
    return name_or_path if _HUB_ID.match(name_or_path) else None


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


def _opening_sentence(trainer, student: nn.Module, dataset: str | None) -> str:
    """The card's first sentence: what the student is, how it was trained, and on what data."""
    origin = student_origin(student)
    source = _source(student)
    made = (f"a student {origin}" if origin else
            f"a student initialised from `{source}`" if source else "a student trained from scratch")
    teacher = trainer.teacher_model
    how = {"prokt": "distilled with ProKT from a teacher trained alongside it",
           "kd": "distilled from a frozen teacher",
           "finetune": "fine-tuned on labels (no teacher)"}[trainer.args.strategy]
    if teacher is not None and _name(teacher):
        how += f" (`{_name(teacher)}`)"
    data = f"on {dataset}" if dataset else "on an unnamed dataset (pass dataset= to create_model_card to name it)"
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
    student_params, teacher_params = parameter_count(student), parameter_count(teacher)
    if teacher_params is None and compression is not None:
        teacher_params = compression.teacher_parameters
    student_metrics, teacher_metrics = final_metrics(trainer.state.log_history)
    method = {
        "prokt": "ProKT (Shi et al., *Follow Your Path: a Progressive Method for Knowledge Distillation*, "
                 "ECML-PKDD 2021): the teacher was trained with the student and pulled back towards it at every "
                 "step; the student learned from the teacher after each of its steps",
        "kd": "knowledge distillation from a frozen teacher (Hinton et al., 2015)",
        "finetune": "plain fine-tuning on labels (no teacher)",
    }[args.strategy]
    if getattr(trainer, "uses_cached_teacher_logits", False):
        method += ", from its logits cached once over the training set"
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
    lines += [f"- {name}: {value}" for name, value in distillation_hyperparameters(args).items()]
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


def distillation_hyperparameters(args) -> dict:
    """The arguments that define the recipe (only those that apply to the strategy)."""
    values = {"strategy": args.strategy, "learning_rate (student)": args.learning_rate}
    if args.strategy == "finetune":
        return values
    if args.strategy == "prokt":
        values.update({"teacher_learning_rate": args.teacher_learning_rate, "prokt_target": args.prokt_target,
                       "prokt_constraint": args.prokt_constraint})
        if args.prokt_constraint == "dual":
            values.update({"prokt_epsilon": args.prokt_epsilon, "dual_lr": args.dual_lr, "dual_init": args.dual_init})
        else:
            values["prokt_lambda"] = args.prokt_lambda
    values.update({"distill_temperature": args.distill_temperature, "distill_alpha": args.distill_alpha})
    for name in ("distill_alpha_warmup_steps", "prokt_lambda_warmup_steps"):
        if getattr(args, name):
            values[name] = getattr(args, name)
    for name in ("hidden_distill_weight", "embedding_distill_weight", "attention_distill_weight"):
        if getattr(args, name) > 0:
            values[name] = getattr(args, name)
    if args.uses_intermediate_terms:
        values["layer_map"] = args.layer_map
    values["zero_init_classifier"] = args.zero_init_classifier
    return values


def task_type(model: nn.Module) -> str | None:
    name = type(model).__name__
    for suffix, task in _TASK_BY_CLASS:
        if suffix in name:
            return task
    return None


def add_distillation_to_card(card_text: str, trainer, dataset: str | list[str] | None = None,
                             tasks: str | list[str] | None = None, inference_speedup: float | None = None,
                             finetuned_from: str | None = None, compression=None) -> str:
    """Extend a `transformers` model card (text with YAML metadata) with the distillation section and metadata."""
    card = ModelCard(card_text)
    data = card.data
    student = trainer.accelerator.unwrap_model(trainer.model)
    datasets_ = [dataset] if isinstance(dataset, str) else list(dataset or [])
    strategy_tags = {"prokt": ["knowledge-distillation", "prokt"], "kd": ["knowledge-distillation"],
                     "finetune": []}[trainer.args.strategy]
    data.tags = list(dict.fromkeys([*(data.tags or []), *strategy_tags, "hf-prokt"]))
    base_model = hub_id(finetuned_from) or hub_id(_source(student))
    if base_model:
        data.base_model = base_model
    # The metadata lists Hub datasets: those given as dataset_tags (already there), else the names of the form
    # owner/name; any other name (a local file, "GLUE SST2") is for the text only.
    if not data.datasets and any(_is_hub_dataset(name) for name in datasets_):
        data.datasets = [name for name in datasets_ if _is_hub_dataset(name)]
    student_metrics, _ = final_metrics(trainer.state.log_history)
    task = (tasks if isinstance(tasks, str) else (tasks or [None])[0]) or task_type(student)
    if student_metrics and task and datasets_:
        data.eval_results = [
            EvalResult(task_type=task, dataset_type=(data.datasets or datasets_)[0], dataset_name=datasets_[0],
                       metric_type=name,
                       metric_value=value)
            for name, value in student_metrics.items() if name != "loss"
        ] or None
        data.model_name = data.model_name or os.path.basename(os.path.normpath(trainer.args.output_dir))
    # The transformers card says "trained from scratch" or "a fine-tuned version of" a base model, and names
    # no dataset unless given one: say what the student is, how it was trained, and on what, instead.
    opening = _opening_sentence(trainer, student, ", ".join(datasets_) or None)
    body = _OPENING.sub(lambda _: opening, card.text, count=1)
    section = distillation_section(trainer, inference_speedup, ", ".join(datasets_) or None, compression)
    anchor = "## Model description"
    body = body.replace(anchor, section + "\n" + anchor, 1) if anchor in body else body.rstrip() + "\n\n" + section
    return f"---\n{data.to_yaml()}\n---\n{body}"


def write_model_card(trainer, folder: str, inference_speedup: float | None = None, compression=None,
                     **card_kwargs) -> None:
    """Write ``folder/README.md``: the `transformers` card of ``trainer``'s student (built from its
    ``card_kwargs``: ``language``, ``tags``, ``dataset``, ``tasks``, ``finetuned_from``...) with how it was
    distilled. Only the main process writes."""
    if not trainer.is_world_process_zero():
        return
    card_kwargs = {k: v for k, v in card_kwargs.items() if v is not None}
    card = TrainingSummary.from_trainer(trainer, **card_kwargs).to_model_card()
    card = add_distillation_to_card(card, trainer, dataset=card_kwargs.get("dataset"),
                                    tasks=card_kwargs.get("tasks"), inference_speedup=inference_speedup,
                                    finetuned_from=card_kwargs.get("finetuned_from"), compression=compression)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
