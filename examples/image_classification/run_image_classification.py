#!/usr/bin/env python
"""Distil an image classifier with ProKT, KD or plain fine-tuning: any `datasets` image-classification set,
your own image folders, or (the offline default) scikit-learn's bundled digits.

    # offline, from scratch: a small ResNet teacher trained with a smaller ResNet student on digits
    python examples/image_classification/run_image_classification.py \\
        --teacher_config resnet-small --student_config resnet-tiny --strategy prokt \\
        --do_train --do_eval --output_dir runs/digits-prokt

    # a pretrained teacher and student on a Hub dataset (network), new heads for its labels
    python examples/image_classification/run_image_classification.py --dataset_name uoft-cs/cifar100 \\
        --label_column_name fine_label --teacher_model_name_or_path microsoft/resnet-50 \\
        --model_name_or_path microsoft/resnet-18 --ignore_mismatched_sizes --strategy prokt \\
        --do_train --do_eval --output_dir runs/cifar100-prokt

    # your own images: one sub-folder per class (datasets' imagefolder)
    python examples/image_classification/run_image_classification.py --train_dir data/train \\
        --validation_dir data/val ...

Arguments are those of `ModelArguments` and `DataTrainingArguments` below and of
`hf_prokt.ProKTTrainingArguments`; a JSON config may come first, with flags that override it. Outputs follow
the GLUE example: `train_results.json`, `eval_results.json`, `all_results.json`, the student and its image
processor in `output_dir` (reload with `AutoModelForImageClassification.from_pretrained`), a model card, and
with `--plot` the training curves.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    set_seed,
)

from hf_prokt import ProKTTrainer, ProKTTrainingArguments, load_or_cache_teacher_logits
from hf_prokt.compression import record_compression
from hf_prokt.metrics import compute_image_classification_metrics
from hf_prokt.scripting.arguments import (
    CompressionArguments,
    HubLoadingArguments,
    RunOutputArguments,
    parse_config_and_flags,
)
from hf_prokt.scripting.final_evaluation import final_evaluation
from hf_prokt.scripting.run_folder import replace_previous_run, start_of_run
from hf_prokt.scripting.shutdown import run_script
from hf_prokt.strategies import strategy_class
from hf_prokt.vision import (
    AUGMENTATIONS,
    NAMED_CONFIGS,
    collate_images,
    image_processor_for,
    load_digits_images,
    model_config,
    model_from_config,
    pixel_transform,
)

logger = logging.getLogger(__name__)
DIGITS_IMAGE_SIZE = 32


@dataclass
class ModelArguments(CompressionArguments, HubLoadingArguments):
    """Both models' checkpoints or configs, and the image processor; how checkpoints are loaded
    (`HubLoadingArguments`) and the compression measurement (`CompressionArguments`): see
    `hf_prokt.scripting.arguments`."""

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained (or fine-tuned, for kd) teacher: Hub id or local folder."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained student: Hub id or local folder."}
    )
    teacher_config: str | None = field(
        default=None,
        metadata={"help": "Build the teacher from scratch: a named size "
                  f"({', '.join(NAMED_CONFIGS)}), a JSON config with a model_type, or a config folder."},
    )
    student_config: str | None = field(
        default=None, metadata={"help": "Build the student from scratch, as --teacher_config."}
    )
    image_processor_name: str | None = field(
        default=None,
        metadata={"help": "Image processor (resize, normalisation) for both models; default: the teacher's, else "
                  "the student's, else resize to --image_size and normalise to [-1, 1]."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": f"Side of the input images for models built from configs (default: "
                  f"{DIGITS_IMAGE_SIZE} for digits, else 224)."},
    )


@dataclass
class DataTrainingArguments(RunOutputArguments):
    dataset_name: str | None = field(
        default=None, metadata={"help": "A datasets image-classification set (Hub id or local dataset script)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    train_dir: str | None = field(default=None, metadata={"help": "Training images, one folder per class."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation images, one folder per class."})
    train_val_split: float = field(
        default=0.15, metadata={"help": "Share of the training set held out when there is no validation split."}
    )
    image_column_name: str = field(default="image", metadata={"help": "Column with the images."})
    label_column_name: str = field(default="label", metadata={"help": "Column with the class labels."})
    augmentation: str = field(
        default="none",
        metadata={"help": "Training augmentation: none, crop (reflect-pad and random crop), crop_flip (and a "
                  "random horizontal flip; not for digits or text)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation images."})
    cache_teacher_logits: str | None = field(
        default=None,
        metadata={"help": "strategy kd, --augmentation none: a folder for the teacher's logits on the training "
                  "images. The first run preprocesses the images once (stored as pixel values: mind the disk for "
                  "large images), computes the logits and saves both there; later runs with the same teacher and "
                  "data reuse them. A cache made from another teacher or other data is refused."},
    )

    def __post_init__(self):
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"--augmentation {self.augmentation!r} is unknown; use one of {', '.join(AUGMENTATIONS)}.")
        if self.dataset_name and (self.train_dir or self.validation_dir):
            raise ValueError("give either --dataset_name or --train_dir/--validation_dir, not both.")
        if self.cache_teacher_logits and self.augmentation != "none":
            raise ValueError(
                f"--cache_teacher_logits with --augmentation {self.augmentation}: the augmented images differ at "
                "every epoch, so logits cached for one version would be the teacher's answer to another image. "
                "Use --augmentation none with the cache, or train without it."
            )

    @property
    def uses_digits(self) -> bool:
        return not (self.dataset_name or self.train_dir or self.validation_dir)


def parse_arguments(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, ProKTTrainingArguments))
    return parse_config_and_flags(parser, argv)


# --------------------------------------------------------------------------------------------------- data


def load_raw_data(data_args: DataTrainingArguments, model_args: ModelArguments, seed: int) -> datasets.DatasetDict:
    """``train`` and ``validation`` splits with an image and a label column."""
    if data_args.uses_digits:
        return load_digits_images()
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name,
                                    cache_dir=model_args.cache_dir, token=model_args.token,
                                    trust_remote_code=model_args.trust_remote_code)
    else:
        files = {split: os.path.join(folder, "**") for split, folder in
                 (("train", data_args.train_dir), ("validation", data_args.validation_dir)) if folder}
        raw = datasets.load_dataset("imagefolder", data_files=files, cache_dir=model_args.cache_dir)
    if "validation" not in raw:
        for name in ("val", "valid", "test"):
            if name in raw:
                raw["validation"] = raw.pop(name)
                break
        else:
            if "train" not in raw:
                raise ValueError(f"the dataset has no train split (splits: {list(raw)}).")
            split = raw["train"].train_test_split(test_size=data_args.train_val_split, seed=seed)
            raw["train"], raw["validation"] = split["train"], split["test"]
    for column in (data_args.image_column_name, data_args.label_column_name):
        if column not in raw["train"].column_names:
            raise ValueError(f"no column {column!r} in the data (columns: {raw['train'].column_names}); set "
                             "--image_column_name / --label_column_name.")
    return raw


def label_names_of(raw: datasets.DatasetDict, label_column: str) -> list[str]:
    """Class names in class-id order: the `ClassLabel` names, else the sorted distinct values (then the column
    is re-encoded as ids)."""
    feature = raw["train"].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = sorted({str(v) for split in raw.values() for v in split[label_column]})
    return values


def encode_labels(raw: datasets.DatasetDict, label_column: str, names: list[str]) -> datasets.DatasetDict:
    """Make ``label_column`` hold ids in the order of ``names`` (which may be a teacher's order)."""
    feature = raw["train"].features[label_column]
    current = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if current == names:
        return raw
    index = {name: i for i, name in enumerate(names)}

    def to_ids(batch):
        values = batch[label_column]
        return {label_column: [index[current[v] if current else str(v)] for v in values]}

    return raw.map(to_ids, batched=True, features=None, desc="Encoding labels")


# ------------------------------------------------------------------------------------------------- models


def labels_of_pretrained(name_or_path: str, model_args: ModelArguments, data_names: list[str]) -> list[str] | None:
    """The label order of a fine-tuned checkpoint on the data's classes, None when it has other classes (it
    then needs --ignore_mismatched_sizes) or unnamed ones."""
    config = AutoConfig.from_pretrained(name_or_path, cache_dir=model_args.cache_dir, token=model_args.token,
                                        trust_remote_code=model_args.trust_remote_code)
    names = [str(config.id2label[i]) for i in range(len(config.id2label))] if config.id2label else []
    if names and not all(n.startswith("LABEL_") for n in names) and sorted(names) == sorted(data_names):
        return names
    if not model_args.ignore_mismatched_sizes and config.num_labels != len(data_names):
        raise ValueError(
            f"{name_or_path} classifies {config.num_labels} classes but the data has {len(data_names)}. Pass "
            "--ignore_mismatched_sizes to give it a new head for the data's labels."
        )
    return None


def load_pretrained(name_or_path: str, model_args: ModelArguments, names: list[str]):
    id2label = dict(enumerate(names))
    return AutoModelForImageClassification.from_pretrained(
        name_or_path, num_labels=len(names), id2label=id2label, label2id={n: i for i, n in id2label.items()},
        cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
        trust_remote_code=model_args.trust_remote_code, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
    )


def build_models(model_args: ModelArguments, training_args: ProKTTrainingArguments, names: list[str],
                 image_size: int):
    """``(teacher or None, student)`` with the label order ``names``."""
    recipe = strategy_class(training_args.strategy)
    needs_teacher = recipe.needs_teacher
    id2label = dict(enumerate(names))
    label2id = {n: i for i, n in id2label.items()}

    def from_config(spec: str, seed: int):
        return model_from_config(model_config(spec, len(names), id2label, label2id, image_size), seed)

    teacher = None
    if needs_teacher:
        if model_args.teacher_model_name_or_path:
            teacher = load_pretrained(model_args.teacher_model_name_or_path, model_args, names)
        elif model_args.teacher_config:
            if not recipe.trains_teacher:
                raise ValueError(
                    "--strategy kd learns from a trained, frozen teacher, but --teacher_config builds an untrained "
                    "one. Train it first (--strategy finetune --student_config <its config> --output_dir T) and "
                    "pass --teacher_model_name_or_path T; or use --strategy prokt, which trains the teacher too."
                )
            teacher = from_config(model_args.teacher_config, training_args.seed + 1)
        else:
            raise ValueError(f"--strategy {training_args.strategy} needs a teacher: --teacher_model_name_or_path, "
                             "or --teacher_config for prokt from scratch.")
    if model_args.model_name_or_path:
        student = load_pretrained(model_args.model_name_or_path, model_args, names)
    elif model_args.student_config:
        student = from_config(model_args.student_config, training_args.seed)
    else:
        raise ValueError("give the student: --model_name_or_path, or --student_config to build it from scratch.")
    return teacher, student


def load_image_processor(model_args: ModelArguments, image_size: int, needs_teacher: bool):
    source = model_args.image_processor_name or (
        model_args.teacher_model_name_or_path if needs_teacher else None) or model_args.model_name_or_path
    if source is None:
        return image_processor_for(image_size)
    return AutoImageProcessor.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token,
                                              trust_remote_code=model_args.trust_remote_code)


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    recipe = strategy_class(training_args.strategy)
    if data_args.cache_teacher_logits and not recipe.accepts_cached_logits:
        raise ValueError(f"--cache_teacher_logits serves --strategy kd (a frozen teacher), not "
                         f"{training_args.strategy!r}. Remove it, or use --strategy kd.")
    if model_args.measure_compression and not recipe.needs_teacher:
        raise ValueError("--measure_compression compares the student with its teacher: use --strategy kd or prokt.")
    resume_from = start_of_run(training_args, data_args.overwrite_output_dir)
    # The images are transformed on the fly: the Trainer must not drop the image column first.
    training_args.remove_unused_columns = False

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    raw = load_raw_data(data_args, model_args, training_args.seed)
    names = label_names_of(raw, data_args.label_column_name)
    needs_teacher = recipe.needs_teacher
    if needs_teacher and model_args.teacher_model_name_or_path:  # a fine-tuned teacher fixes the label order
        names = labels_of_pretrained(model_args.teacher_model_name_or_path, model_args, names) or names
    if model_args.model_name_or_path:
        labels_of_pretrained(model_args.model_name_or_path, model_args, names)
    raw = encode_labels(raw, data_args.label_column_name, names)

    image_size = model_args.image_size or (DIGITS_IMAGE_SIZE if data_args.uses_digits else 224)
    teacher, student = build_models(model_args, training_args, names, image_size)
    image_processor = load_image_processor(model_args, image_size, needs_teacher)

    def select(split, limit):
        dataset = raw[split]
        return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    image_column, label_column = data_args.image_column_name, data_args.label_column_name
    train_dataset = eval_dataset = None
    training_teacher = teacher
    if training_args.do_train:
        train_dataset = select("train", data_args.max_train_samples)
        transform = pixel_transform(image_processor, image_column, label_column, data_args.augmentation)
        if data_args.cache_teacher_logits:
            # Cached logits need fixed inputs: the deterministic preprocessing is applied once and stored.
            with training_args.main_process_first(desc="preprocessing images and caching teacher logits"):
                train_dataset = train_dataset.map(transform, batched=True, remove_columns=train_dataset.column_names,
                                                  desc="Preprocessing images").with_format("torch")
                train_dataset = load_or_cache_teacher_logits(
                    data_args.cache_teacher_logits, teacher, train_dataset,
                    batch_size=training_args.per_device_eval_batch_size, data_collator=collate_images,
                    precision="bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None,
                    disable_tqdm=training_args.disable_tqdm,
                ).with_format("torch")
            if not training_args.should_evaluate_teacher:
                training_teacher = None
        else:
            train_dataset.set_transform(transform)
    if training_args.do_eval:
        eval_dataset = select("validation", data_args.max_eval_samples)
        eval_dataset.set_transform(pixel_transform(image_processor, image_column, label_column))

    trainer = ProKTTrainer(
        model=student, teacher_model=training_teacher, args=training_args, train_dataset=train_dataset,
        eval_dataset=eval_dataset, processing_class=image_processor, data_collator=collate_images,
        compute_metrics=compute_image_classification_metrics(len(names)),
    )

    previous_run = replace_previous_run(trainer, data_args.overwrite_output_dir, logger.info)  # every check passed

    results = {}
    if training_args.do_train:
        with previous_run.kept_until_saved():  # the earlier run is deleted once the student is saved
            train_result = trainer.train(resume_from_checkpoint=resume_from)
            metrics = {**train_result.metrics, "train_samples": len(train_dataset)}
            if model_args.measure_compression:  # before save_model, so that the card carries the figures
                results.update(measure(trainer, teacher, train_dataset, model_args))
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if model_args.measure_compression and not training_args.do_train:
        results.update(measure(trainer, teacher, eval_dataset, model_args))
    if training_args.do_eval:  # the evaluation of the last training step, when there was one, is reused
        metrics = {**final_evaluation(trainer, trained=training_args.do_train), "eval_samples": len(eval_dataset)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics, combined=True)
        results.update(metrics)
    dataset_label = data_args.dataset_name or ("scikit-learn digits" if data_args.uses_digits else
                                               f"the image folders {data_args.train_dir or data_args.validation_dir}")
    card = {"dataset": dataset_label, "tasks": "image-classification",
            "finetuned_from": model_args.model_name_or_path or model_args.teacher_model_name_or_path}
    if training_args.do_train:  # after the final evaluation, so that the card carries its metrics
        trainer.create_model_card(**card)
    if data_args.plot and trainer.is_world_process_zero():
        from hf_prokt.plot import plot_training

        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
                      metric="accuracy", title=f"{training_args.strategy} on {dataset_label}")
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    return results


def measure(trainer, teacher, dataset, model_args) -> dict:
    """`hf_prokt.compression.record_compression` on a batch of images, on the training device."""
    rows = [dataset[i] for i in range(min(len(dataset), max(model_args.compression_batch_sizes)))]
    return record_compression(trainer, teacher, {"pixel_values": collate_images(rows)["pixel_values"]},
                              model_args.compression_batch_sizes, model_args.compression_repeats)


if __name__ == "__main__":
    # under torchrun: every process done, then an exit without the teardown race (docs/distributed.md); on
    # SIGTERM: exit 143 with one line naming the checkpoint (docs/robustness.md)
    run_script(main)
