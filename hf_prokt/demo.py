"""An offline demo: fine-tuning, KD and ProKT side by side on scikit-learn's bundled ``digits``.

Everything is local: the data ship with scikit-learn (1,797 grey 8x8 images of the digits 0-9) and
both models are small `ViTForImageClassification`s built from configs, so nothing is downloaded. The
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
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import EvalPrediction, ViTConfig, ViTForImageClassification
from transformers import logging as transformers_logging
from transformers.trainer_callback import ProgressCallback

from .arguments import STRATEGIES, ProKTTrainingArguments
from .trainer import ProKTTrainer

NUM_CLASSES = 10
IMAGE_SIZE = 8
RESULTS_NAME = "demo_results.json"
PLOT_NAME = "prokt_curves.png"
DEFAULT_OUTPUT_DIR = "hf_prokt_demo"
DEFAULT_EPOCHS = 10
BATCH_SIZE = 32
# Picked on the fine-tuning baselines alone (seed 0, 10 epochs, from {1e-3, 3e-3}): the best rate for the
# student trained on labels and for the teacher trained on labels. Nothing was tuned on KD or ProKT.
STUDENT_LEARNING_RATE = 3e-3
TEACHER_LEARNING_RATE = 1e-3
ID2LABEL = {i: str(i) for i in range(NUM_CLASSES)}
LABEL2ID = {name: i for i, name in ID2LABEL.items()}

TEACHER_SIZE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256}
STUDENT_SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


# ---------------------------------------------------------------------------- data


def digits_split_indices(labels: np.ndarray, seed: int = 0, validation_fraction: float = 0.2,
                         max_train_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, seeded split of ``range(len(labels))`` into sorted training and validation indices.

    Args:
        labels: ``[N]`` class ids.
        seed: the same seed always gives the same split.
        validation_fraction: share of the examples held out, in every class alike.
        max_train_samples: keep at most this many training indices (a stratified subset when there are
            at least as many as classes), for quick runs; the validation set is unchanged.

    Returns:
        ``(train_indices [N_train], validation_indices [N_val])``, disjoint, each sorted.
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, validation = train_test_split(
        indices, test_size=validation_fraction, stratify=labels, random_state=seed
    )
    if max_train_samples is not None and max_train_samples < len(train):
        if max_train_samples < 1:
            raise ValueError(f"max_train_samples must be at least 1, got {max_train_samples}.")
        stratify = labels[train] if NUM_CLASSES <= max_train_samples <= len(train) - NUM_CLASSES else None
        train, _ = train_test_split(train, train_size=max_train_samples, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(validation)


def load_digits_splits(seed: int = 0, max_train_samples: int | None = None,
                       validation_fraction: float = 0.2) -> tuple[datasets.Dataset, datasets.Dataset]:
    """scikit-learn's ``digits`` as a training and a validation `datasets.Dataset` (torch format).

    Pixels (integers 0-16) are scaled to [0, 1], then normalised with the mean and standard deviation
    of the training split (one number each, as the images are grey).

    Columns:
        ``pixel_values``: float32 ``[1, 8, 8]`` (``[B, 1, 8, 8]`` once batched);
        ``labels``: int64 class id in 0-9;
        ``index``: the row of the example in ``sklearn.datasets.load_digits()`` (the `Trainer` drops it).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8] in [0, 1]
    labels = digits.target.astype(np.int64)
    train_idx, val_idx = digits_split_indices(labels, seed, validation_fraction, max_train_samples)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std

    features = datasets.Features({
        "pixel_values": datasets.Array3D(shape=(1, IMAGE_SIZE, IMAGE_SIZE), dtype="float32"),
        "labels": datasets.ClassLabel(names=[ID2LABEL[i] for i in range(NUM_CLASSES)]),
        "index": datasets.Value("int64"),
    })

    def subset(idx: np.ndarray) -> datasets.Dataset:
        columns = {"pixel_values": images[idx], "labels": labels[idx], "index": idx}
        return datasets.Dataset.from_dict(columns, features=features).with_format("torch")

    return subset(train_idx), subset(val_idx)


# ---------------------------------------------------------------------------- models


def _vit(size: dict, seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE, patch_size=2, num_channels=1, num_labels=NUM_CLASSES,
        id2label=ID2LABEL, label2id=LABEL2ID, **size,
    )
    return ViTForImageClassification(config)


def build_digit_models(seed: int = 0) -> tuple[ViTForImageClassification, ViTForImageClassification]:
    """A fresh ``(teacher, student)`` pair of ViT classifiers for 8x8 grey images, built from configs.

    Both read ``pixel_values [B, 1, 8, 8]`` as 16 patches of 2x2 (17 tokens with [CLS]) and return
    ``logits [B, 10]`` with the labels "0".."9". The teacher has 4 layers of width 128 (~0.5M
    parameters), the student 2 layers of width 32 (~18k). The same seed gives the same weights.
    """
    return _vit(TEACHER_SIZE, seed), _vit(STUDENT_SIZE, seed + 1)


def compute_accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """``{"accuracy": ...}`` from ``predictions`` (logits ``[N, 10]``, or a tuple starting with them)
    and ``label_ids [N]``, with numpy."""
    logits = prediction.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float((predicted == np.asarray(prediction.label_ids)).mean())}


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
    settings = dict(
        output_dir=os.path.join(output_dir, run_name), strategy=strategy, num_train_epochs=epochs,
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=256,
        learning_rate=STUDENT_LEARNING_RATE, teacher_learning_rate=TEACHER_LEARNING_RATE,
        weight_decay=0.0, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=False, seed=seed, data_seed=seed, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    if plot_path is not None:
        settings.update(eval_strategy="epoch", logging_strategy="epoch")
    settings.update(overrides)
    trainer = ProKTTrainer(
        model=model, teacher_model=teacher, args=ProKTTrainingArguments(**settings),
        train_dataset=train_set, eval_dataset=eval_set, compute_metrics=compute_accuracy,
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
        ``{"student_accuracy", "teacher_accuracy" (None for finetune), "wall_time_s"}``, accuracies on
        ``eval_set``. For ``kd`` the wall time includes fine-tuning the teacher (also reported alone as
        ``teacher_wall_time_s``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    teacher, student = build_digit_models(seed)
    common = dict(train_set=train_set, eval_set=eval_set, output_dir=output_dir, epochs=epochs, seed=seed)
    teacher_accuracy, extra = None, {}
    start = time.perf_counter()
    if strategy == "finetune":
        metrics = _train_and_evaluate("finetune", "finetune", student, None, **common)
    elif strategy == "kd":
        teacher_metrics = _train_and_evaluate(
            "kd-teacher", "finetune", teacher, None, learning_rate=TEACHER_LEARNING_RATE, **common
        )
        teacher_accuracy = teacher_metrics["eval_accuracy"]
        extra["teacher_wall_time_s"] = time.perf_counter() - start
        metrics = _train_and_evaluate("kd", "kd", student, teacher, **common)
    else:
        plot_path = os.path.join(output_dir, PLOT_NAME) if plot else None
        metrics = _train_and_evaluate("prokt", "prokt", student, teacher, plot_path=plot_path, **common)
        teacher_accuracy = metrics["eval_teacher_accuracy"]
    wall_time = time.perf_counter() - start
    return {"student_accuracy": metrics["eval_accuracy"], "teacher_accuracy": teacher_accuracy,
            "wall_time_s": wall_time, **extra}


def run_demo(output_dir: str = DEFAULT_OUTPUT_DIR, epochs: float = DEFAULT_EPOCHS,
             max_train_samples: int | None = None, seed: int = 0,
             strategies: Sequence[str] = ("finetune", "kd", "prokt"), plot: bool = False) -> dict:
    """Run ``strategies`` on the digits split of ``seed`` and write ``demo_results.json`` in ``output_dir``.

    Returns:
        ``{"settings": {...}, "results": {strategy: run_strategy(...)}}``, as written to the JSON file.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {', '.join(STRATEGIES)}; got {list(strategies)}.")
    transformers_logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    train_set, eval_set = load_digits_splits(seed, max_train_samples)
    os.makedirs(output_dir, exist_ok=True)
    report = {
        "settings": {
            "dataset": "sklearn.datasets.load_digits", "train_examples": len(train_set),
            "validation_examples": len(eval_set), "epochs": epochs, "seed": seed, "batch_size": BATCH_SIZE,
            "learning_rate": STUDENT_LEARNING_RATE, "teacher_learning_rate": TEACHER_LEARNING_RATE,
            "teacher": TEACHER_SIZE, "student": STUDENT_SIZE, "torch_threads": torch.get_num_threads(),
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
