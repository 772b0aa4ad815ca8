"""An offline demo: fine-tuning, KD and ProKT side by side on scikit-learn's bundled ``digits``.

Everything is local: the data ship with scikit-learn (1,797 grey 8x8 images of the digits 0-9, read as an
image dataset by `hf_prokt.vision.load_digits_images`) and both models are small
`ResNetForImageClassification`s built from configs, so nothing is downloaded. The
three recipes get the same data, student initialisation, seed and number of epochs:

- ``finetune``: the student learns from the labels alone;
- ``kd``: a teacher is first fine-tuned on the labels (same data and budget), then frozen, and the
  student learns from its predictions (classic Hinton distillation);
- ``prokt``: a fresh teacher and a fresh student are trained together, the teacher pulled back towards
  the student at every step (`METHOD.md`).

Use it from the shell (``hf-prokt demo``) or from Python (`run_demo`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import datasets
import torch
from tqdm.auto import tqdm
from transformers import logging as transformers_logging
from transformers.trainer_callback import ProgressCallback

from .arguments import ProKTTrainingArguments
from .strategies import strategy_class, strategy_names
from .trainer import ProKTTrainer
from .vision import (
    DIGITS_LABELS,
    collate_images,
    image_processor_for,
    load_digits_images,
    model_config,
    model_from_config,
    pixel_transform,
)

RESULTS_NAME = "demo_results.json"
PLOT_NAME = "prokt_curves.png"
DEFAULT_OUTPUT_DIR = "hf_prokt_demo"
DEFAULT_EPOCHS = 10
BATCH_SIZE = 32
IMAGE_SIZE = 32  # the 8x8 digits are resized to 32x32, where a ResNet's stages still see a few pixels
# Picked on the fine-tuning baselines alone (seed 0, 10 epochs, from {1e-3, 3e-3}): the best rate for the
# student trained on labels and for the teacher trained on labels. Nothing was tuned on KD or ProKT.
STUDENT_LEARNING_RATE = 3e-3
TEACHER_LEARNING_RATE = 1e-3
TEACHER_CONFIG = "resnet-small"  # 3 stages of 2 basic blocks, 32-64-128 channels (~0.7M parameters)
STUDENT_CONFIG = "resnet-tiny"   # 3 stages of 1 basic block, 16-32-64 channels (~0.08M parameters)


# ---------------------------------------------------------------------------- data


def load_digits_splits(seed: int = 0, max_train_samples: int | None = None,
                       validation_fraction: float = 0.2) -> tuple[datasets.Dataset, datasets.Dataset]:
    """scikit-learn's ``digits`` images (`hf_prokt.vision.load_digits_images`) as training and validation
    sets that yield ``pixel_values [3, 32, 32]`` (resized, normalised to [-1, 1]) and ``labels``, through
    the same transform as the image-classification example."""
    splits = load_digits_images(seed, validation_fraction, max_train_samples)
    transform = pixel_transform(image_processor_for(IMAGE_SIZE), "image", "label")
    for split in splits.values():
        split.set_transform(transform)
    return splits["train"], splits["validation"]


# ---------------------------------------------------------------------------- models


def build_digit_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A fresh ``(teacher, student)`` pair of ResNet classifiers for 32x32 RGB images, built from the named
    configs `TEACHER_CONFIG` and `STUDENT_CONFIG` with the labels "0".."9". Both return ``logits [B, 10]``.
    The same seed gives the same weights."""
    id2label = dict(enumerate(DIGITS_LABELS))
    label2id = {name: i for i, name in id2label.items()}

    def build(spec: str, model_seed: int):
        return model_from_config(model_config(spec, len(DIGITS_LABELS), id2label, label2id, IMAGE_SIZE), model_seed)

    return build(TEACHER_CONFIG, seed), build(STUDENT_CONFIG, seed + 1)


# ---------------------------------------------------------------------------- training


class _StrategyProgress(ProgressCallback):
    """The `Trainer`'s training bar, labelled with the run it tracks; no evaluation bar, no log dicts."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.description, dynamic_ncols=True)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def _train_and_evaluate(run_name: str, strategy: str, model, teacher, train_set, eval_set,
                        output_dir: str, epochs: float, seed: int, plot_path: str | None = None,
                        **overrides) -> dict[str, float]:
    """Train ``model`` with one strategy, evaluate it, and return the evaluation metrics (``eval_*``).

    With ``plot_path``, both models are evaluated and the losses logged every epoch, and the training
    curves are saved there as PNG (`hf_prokt.plot.plot_training`).
    """
    from .metrics import compute_image_classification_metrics as image_metrics  # the 'examples' extra

    settings = dict(
        output_dir=os.path.join(output_dir, run_name), strategy=strategy, num_train_epochs=epochs,
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=256,
        learning_rate=STUDENT_LEARNING_RATE, teacher_learning_rate=TEACHER_LEARNING_RATE,
        weight_decay=0.0, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=False, seed=seed, data_seed=seed, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), remove_unused_columns=False,
    )
    if plot_path is not None:
        settings.update(eval_strategy="epoch", logging_strategy="epoch")
    settings.update(overrides)
    trainer = ProKTTrainer(
        model=model, teacher_model=teacher, args=ProKTTrainingArguments(**settings),
        train_dataset=train_set, eval_dataset=eval_set, data_collator=collate_images,
        compute_metrics=image_metrics(len(DIGITS_LABELS)),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_StrategyProgress(run_name))
    trainer.train()
    metrics = trainer.evaluate()
    if plot_path is not None:
        from .plot import plot_training

        plot_training(trainer.state.log_history, plot_path, metric="accuracy", title=f"{run_name} on digits")
    return metrics


def run_strategy(strategy: str, train_set: datasets.Dataset, eval_set: datasets.Dataset, output_dir: str,
                 epochs: float = DEFAULT_EPOCHS, seed: int = 0, plot: bool = False) -> dict:
    """Run one recipe from fresh models and report it.

    Returns:
        ``{"student_accuracy", "teacher_accuracy" (None for finetune), "student_eval_loss",
        "wall_time_s"}``, accuracies and the student's cross-entropy on ``eval_set``. For ``kd`` the wall
        time includes fine-tuning the teacher (also reported alone as ``teacher_wall_time_s``).
    """
    recipe = strategy_class(strategy)  # raises for an unknown name, naming the known ones
    teacher, student = build_digit_models(seed)
    common = dict(train_set=train_set, eval_set=eval_set, output_dir=output_dir, epochs=epochs, seed=seed)
    teacher_accuracy, extra = None, {}
    start = time.perf_counter()
    if not recipe.needs_teacher:
        metrics = _train_and_evaluate(strategy, strategy, student, None, **common)
    elif not recipe.trains_teacher:  # a frozen teacher: fine-tuned first, and its time counted
        teacher_metrics = _train_and_evaluate(
            f"{strategy}-teacher", "finetune", teacher, None, learning_rate=TEACHER_LEARNING_RATE, **common
        )
        teacher_accuracy = teacher_metrics["eval_accuracy"]
        extra["teacher_wall_time_s"] = time.perf_counter() - start
        metrics = _train_and_evaluate(strategy, strategy, student, teacher, **common)
    else:
        plot_path = os.path.join(output_dir, PLOT_NAME) if plot else None
        metrics = _train_and_evaluate(strategy, strategy, student, teacher, plot_path=plot_path, **common)
        teacher_accuracy = metrics["eval_teacher_accuracy"]
    wall_time = time.perf_counter() - start
    return {"student_accuracy": metrics["eval_accuracy"], "teacher_accuracy": teacher_accuracy,
            "student_eval_loss": metrics["eval_loss"], "wall_time_s": wall_time, **extra}


def run_demo(output_dir: str = DEFAULT_OUTPUT_DIR, epochs: float = DEFAULT_EPOCHS,
             max_train_samples: int | None = None, seed: int = 0,
             strategies: Sequence[str] = ("finetune", "kd", "prokt"), plot: bool = False,
             threads: int | None = None) -> dict:
    """Run ``strategies`` on the digits split of ``seed`` and write ``demo_results.json`` in ``output_dir``.

    The same arguments and number of CPU threads give the same accuracies on a machine, run after run
    (data order, initialisation and dropout follow ``seed``; no data-loading workers). The thread count
    changes how sums are split, hence the last digits of every step and, after hundreds of steps, the
    accuracies: ``threads`` fixes it for the run (default: torch's, from ``OMP_NUM_THREADS`` or the cores),
    and the report records it.

    Returns:
        ``{"settings": {...}, "results": {strategy: run_strategy(...)}}``, as written to the JSON file.
    """
    unknown = [s for s in strategies if s not in strategy_names()]
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {', '.join(strategy_names())}; "
                         f"got {list(strategies)}.")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_demo(output_dir, epochs, max_train_samples, seed, strategies, plot)
    finally:
        torch.set_num_threads(previous_threads)


def _run_demo(output_dir: str, epochs: float, max_train_samples: int | None, seed: int, strategies: Sequence[str],
              plot: bool) -> dict:
    transformers_logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    train_set, eval_set = load_digits_splits(seed, max_train_samples)
    os.makedirs(output_dir, exist_ok=True)
    report = {
        "settings": {
            "dataset": "sklearn.datasets.load_digits", "train_examples": len(train_set),
            "validation_examples": len(eval_set), "epochs": epochs, "seed": seed, "batch_size": BATCH_SIZE,
            "learning_rate": STUDENT_LEARNING_RATE, "teacher_learning_rate": TEACHER_LEARNING_RATE,
            "image_size": IMAGE_SIZE, "teacher": TEACHER_CONFIG, "student": STUDENT_CONFIG,
            "torch_threads": torch.get_num_threads(),
            # ProKT and KD run with the library's defaults for these:
            **{name: ProKTTrainingArguments.__dataclass_fields__[name].default
               for name in ("prokt_lambda", "distill_alpha", "distill_temperature")},
        },
        "results": {},
    }
    for strategy in strategies:
        report["results"][strategy] = run_strategy(strategy, train_set, eval_set, output_dir, epochs, seed, plot)
    with open(os.path.join(output_dir, RESULTS_NAME), "w") as f:
        json.dump(report, f, indent=2)
    return report


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table, one row per strategy: ``strategy | student accuracy | teacher accuracy |
    wall time (s)`` (teacher accuracy ``-`` where there is no teacher)."""
    header = ("strategy", "student accuracy", "teacher accuracy", "wall time (s)")
    rows = [header]
    for strategy, result in results.items():
        teacher = result.get("teacher_accuracy")
        rows.append((
            strategy, f"{result['student_accuracy']:.4f}", "-" if teacher is None else f"{teacher:.4f}",
            f"{result['wall_time_s']:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)
