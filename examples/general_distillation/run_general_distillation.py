#!/usr/bin/env python
"""General distillation (TinyBERT's first stage): distil a teacher into a smaller student on unlabelled text, from
the teacher's embeddings, hidden states (and attention maps) alone, or, with masked-LM heads, also from its
predictions on the masked tokens.

    python examples/general_distillation/run_general_distillation.py \\
        --teacher_model_name_or_path google-bert/bert-base-uncased \\
        --student_num_layers 4 --student_hidden_size 312 \\
        --dataset_name Salesforce/wikitext --dataset_config_name wikitext-103-raw-v1 \\
        --max_steps 20000 --do_train --do_eval --output_dir tinybert-general

    python examples/general_distillation/run_general_distillation.py \\
        --teacher_model_name_or_path /models/bert-base-uncased --student_num_layers 4 --student_hidden_size 312 \\
        --train_file corpus.txt --validation_split_percentage 1 --head mlm \\
        --max_steps 20000 --do_train --do_eval --output_dir tinybert-general-mlm

Arguments are those of three dataclasses: `ModelArguments` and `DataTrainingArguments` below, and
`hf_prokt.ProKTTrainingArguments` (every `TrainingArguments` field plus the distillation ones), whose defaults
this script changes to those of general distillation: ``--strategy kd``, ``--hidden_distill_weight 1`` and
``--embedding_distill_weight 1`` (``--attention_distill_weight`` stays 0: above 0 both models are loaded with
``attn_implementation="eager"``). The text is tokenized with the teacher's tokenizer and cut into blocks of
``--block_size`` tokens, documents concatenated, as `transformers`' masked-LM example does.

Outputs: `train_results.json`, `eval_results.json` (``eval_loss``: the distillation loss on the held-out blocks;
no perplexity, the student is not trained on a likelihood), `all_results.json`, and in `output_dir` the student
alone (a plain `AutoModel` / `AutoModelForMaskedLM` checkpoint, without the learned projections) with the
tokenizer and its model card.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from hf_prokt.pair_checks import check_distillation_pair
from hf_prokt.scripting.arguments import (
    CompressionArguments,
    HubLoadingArguments,
    RunOutputArguments,
    TeacherStudentArguments,
    build_teacher_and_student,
    measure_text_compression,
    parse_config_and_flags,
)
from hf_prokt.scripting.final_evaluation import final_evaluation
from hf_prokt.scripting.run_folder import replace_previous_run, start_of_run
from hf_prokt.scripting.shutdown import run_script
from hf_prokt.scripting.text_blocks import (
    STRUCTURED_EXTENSIONS,
    check_not_empty,
    first_blocks,
    load_raw_text,
    rows_for_compression,
    tokenize_into_blocks,
)

logger = logging.getLogger(__name__)

# ProKTTrainingArguments' defaults that this script changes: general distillation learns from a frozen teacher's
# embeddings and hidden states. A flag or a JSON config overrides them.
GENERAL_DISTILLATION_DEFAULTS = {"strategy": "kd", "hidden_distill_weight": 1.0, "embedding_distill_weight": 1.0}
DEFAULT_BLOCK_SIZE = 128


@dataclass
class ModelArguments(CompressionArguments, HubLoadingArguments, TeacherStudentArguments):
    """The teacher and student checkpoints (`TeacherStudentArguments`), how they are loaded
    (`HubLoadingArguments`) and the compression measurement (`CompressionArguments`): see
    `hf_prokt.scripting.arguments`. The teacher is needed: it is what the student learns from."""

    head: Literal["none", "mlm"] = field(
        default="none",
        metadata={"help": "'none': both models loaded as AutoModel (no head), the student learns from the "
                          "intermediate terms alone; 'mlm': both loaded as AutoModelForMaskedLM, tokens masked by "
                          "DataCollatorForLanguageModeling, and the KL of the two heads on the masked tokens adds "
                          "to the intermediate terms."},
    )


@dataclass
class DataTrainingArguments(RunOutputArguments):
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets` dataset (e.g. Salesforce/wikitext); or give text files."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    text_column_name: str = field(default="text", metadata={"help": "The dataset's column of text."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training text: a plain text file, one document per line (blank lines "
                                        "skipped)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation text, same format."})
    validation_split_percentage: int | None = field(
        default=None,
        metadata={"help": "Without validation data (no --validation_file, no 'validation' split): hold out the "
                          "first N%% of the training documents for evaluation (not with --streaming)."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the data as it is used (a `datasets` IterableDataset) instead of tokenizing it all "
                          "first, for corpora larger than memory or disk; needs --max_steps."},
    )
    shuffle_buffer_size: int = field(
        default=10_000,
        metadata={"help": "With --streaming: the training blocks are shuffled within a buffer of this many blocks "
                          "(0: read in the corpus's order)."},
    )
    block_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per training block: the tokenized documents are concatenated and cut into blocks "
                          "of this length, the remainder dropped (default: the smaller of 128 and the models' "
                          "position limit; refused above that limit)."},
    )
    mlm_probability: float = field(
        default=0.15, metadata={"help": "With --head mlm: the fraction of tokens masked (as BERT's pretraining)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation blocks."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes tokenizing the data (not with --streaming)."}
    )

    def __post_init__(self):
        if self.dataset_name is None and not (self.train_file or self.validation_file):
            raise ValueError("Give the text: --dataset_name (a `datasets` dataset), or --train_file / "
                             "--validation_file (plain text files, one document per line).")
        if self.dataset_name and (self.train_file or self.validation_file):
            raise ValueError("Give --dataset_name or --train_file / --validation_file, not both.")
        for path in (self.train_file, self.validation_file):
            if path and path.lower().endswith(STRUCTURED_EXTENSIONS):
                raise ValueError(f"{path}: --train_file and --validation_file are read as plain text, one document "
                                 "per line. Write the text column to a .txt file, or pass a folder holding the file "
                                 "(named train.jsonl, validation.jsonl...) as --dataset_name, with "
                                 "--text_column_name.")
        if self.streaming and self.validation_split_percentage:
            raise ValueError("--validation_split_percentage holds out part of a dataset read in full; with "
                             "--streaming give --validation_file (or a dataset with a 'validation' split).")
        if self.validation_split_percentage is not None and not 0 < self.validation_split_percentage < 100:
            raise ValueError(f"--validation_split_percentage {self.validation_split_percentage}: give a "
                             "percentage between 1 and 99.")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability {self.mlm_probability}: give a fraction between 0 and 1.")


# ------------------------------------------------------------------------------------------------- checks


def check_arguments(model_args: ModelArguments, data_args: DataTrainingArguments,
                    training_args: ProKTTrainingArguments) -> None:
    """Refuse, before anything is loaded or written, flags that cannot make a general distillation run."""
    if not model_args.teacher_model_name_or_path:
        raise ValueError("General distillation learns from a teacher: give --teacher_model_name_or_path.")
    if data_args.streaming and training_args.do_train and training_args.max_steps <= 0:
        raise ValueError("--streaming reads the data without knowing its length, so the run has no epochs to "
                         "count: give --max_steps N.")
    if data_args.streaming and data_args.preprocessing_num_workers:
        raise ValueError("--preprocessing_num_workers tokenizes a dataset read in full; with --streaming the "
                         "text is tokenized as it is read: leave it out.")
    if model_args.head == "mlm" and training_args.strategy != "kd":
        # With a masked-LM head the library would accept them, but as another recipe: prokt co-trains the teacher
        # on the masked-LM loss, finetune trains the student on it without a teacher.
        raise ValueError(f"--strategy {training_args.strategy} with --head mlm is not general distillation (a "
                         "frozen teacher): use --strategy kd.")


def position_limit(model_args: ModelArguments) -> tuple[int, str]:
    """The longest input the teacher and the student take (their configs' ``max_position_embeddings``), and
    which checkpoint sets it. Only the configs are read."""
    limits = []
    for path in (model_args.teacher_model_name_or_path, model_args.student_init_from, model_args.model_name_or_path):
        if not path:
            continue
        config = AutoConfig.from_pretrained(path, cache_dir=model_args.cache_dir, revision=model_args.model_revision,
                                            token=model_args.token, trust_remote_code=model_args.trust_remote_code)
        limit = getattr(config, "max_position_embeddings", None)
        if limit:
            limits.append((limit, path))
    return min(limits) if limits else (DEFAULT_BLOCK_SIZE, "")


def block_size_for(data_args: DataTrainingArguments, model_args: ModelArguments) -> int:
    limit, source = position_limit(model_args)
    if data_args.block_size is None:
        return min(DEFAULT_BLOCK_SIZE, limit)
    if data_args.block_size > limit:
        raise ValueError(f"--block_size {data_args.block_size} is above the position limit of {source} "
                         f"(max_position_embeddings {limit}): give --block_size {limit} or less.")
    if data_args.block_size < 1:
        raise ValueError(f"--block_size {data_args.block_size}: give a positive number of tokens.")
    return data_args.block_size


# --------------------------------------------------------------------------------------------------- data


# ------------------------------------------------------------------------------------------------- models


def load_model(name_or_path: str, model_args: ModelArguments, attn_implementation: str | None = None):
    """``name_or_path`` as ``AutoModel`` (``--head none``) or ``AutoModelForMaskedLM`` (``--head mlm``)."""
    model_class = AutoModelForMaskedLM if model_args.head == "mlm" else AutoModel
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model, loading = model_class.from_pretrained(
        name_or_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
        trust_remote_code=model_args.trust_remote_code, output_loading_info=True, **kwargs,
    )
    if model_args.head == "mlm" and loading["missing_keys"]:
        missing = sorted(loading["missing_keys"])
        raise ValueError(f"{name_or_path} has no masked-LM head ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''} would start at random): use a checkpoint with one, "
                         "or --head none.")
    return model


def build_models(model_args: ModelArguments, training_args: ProKTTrainingArguments):
    """``(teacher, student)`` as the flags name them; loaded with eager attention when attention maps are
    distilled."""
    attn = "eager" if training_args.attention_distill_weight > 0 else None
    load = partial(load_model, model_args=model_args, attn_implementation=attn)
    return build_teacher_and_student(model_args, training_args.strategy, load)


def load_tokenizer(model_args: ModelArguments):
    source = (model_args.tokenizer_name or model_args.teacher_model_name_or_path or model_args.student_init_from
              or model_args.model_name_or_path)
    return AutoTokenizer.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token,
                                         trust_remote_code=model_args.trust_remote_code)


# --------------------------------------------------------------------------------------------------- main


def parse_arguments(argv: list[str]):
    """Command-line flags, or a JSON config optionally followed by flags that override it; the defaults of
    general distillation (`GENERAL_DISTILLATION_DEFAULTS`) where neither gives a value."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, ProKTTrainingArguments))
    parser.set_defaults(**GENERAL_DISTILLATION_DEFAULTS)
    return parse_config_and_flags(parser, argv)


def card_arguments(data_args: DataTrainingArguments, model_args: ModelArguments) -> dict:
    """What the model card says about the data and the teacher: the text file's name or the dataset (with its
    configuration), the Hub task of the kind of model, the teacher as the base model when it is a Hub id."""
    card = {"tasks": "fill-mask" if model_args.head == "mlm" else "feature-extraction"}
    if data_args.dataset_name and os.path.isdir(data_args.dataset_name):  # a local folder: no Hub dataset to link
        card["dataset"] = os.path.basename(os.path.normpath(data_args.dataset_name))
    elif data_args.dataset_name:
        card.update(dataset=data_args.dataset_name, dataset_tags=data_args.dataset_name)
        if data_args.dataset_config_name:
            card["dataset_args"] = data_args.dataset_config_name
    else:
        card["dataset"] = os.path.basename(data_args.train_file or data_args.validation_file)
    teacher = model_args.teacher_model_name_or_path
    if not os.path.isdir(teacher):  # a Hub id; a local folder is no base model the Hub can link
        card["finetuned_from"] = teacher
    return card


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    check_arguments(model_args, data_args, training_args)
    resume_from = start_of_run(training_args, data_args.overwrite_output_dir)
    block_size = block_size_for(data_args, model_args)

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    raw = load_raw_text(data_args, model_args)
    for flag, split in (("--do_train", "train"), ("--do_eval", "validation")):
        if getattr(training_args, flag[2:]) and split not in raw:
            hint = ("--validation_file, or --validation_split_percentage N" if split == "validation"
                    and not data_args.streaming else f"--{split}_file")
            raise ValueError(f"{flag} needs {split} data: give {hint} (or a --dataset_name with a {split!r} split).")

    teacher, student = build_models(model_args, training_args)
    tokenizer = load_tokenizer(model_args)
    check_distillation_pair(student, teacher)  # a vocabulary mismatch is the pair's first
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the student's vocabulary only "
                         f"{student.config.vocab_size}: use the models' own tokenizer (--tokenizer_name).")

    mlm = model_args.head == "mlm"
    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              "validation": (training_args.do_eval, data_args.max_eval_samples)}
    blocks = {}
    with training_args.main_process_first(desc="dataset map pre-processing"):
        for split, (needed, limit) in wanted.items():
            if needed:
                cut = tokenize_into_blocks(raw[split], tokenizer, data_args.text_column_name, block_size,
                                           data_args, split)
                blocks[split] = first_blocks(cut, limit)
                check_not_empty(blocks[split], split, block_size)
    if data_args.streaming and "train" in blocks and data_args.shuffle_buffer_size:
        blocks["train"] = blocks["train"].shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)

    if mlm:  # labels: the original token on the masked positions, -100 elsewhere
        data_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=data_args.mlm_probability)
    else:  # every block holds block_size tokens: nothing to pad
        data_collator = default_data_collator
    # The trainer refuses what general distillation cannot do (prokt or finetune without a head, no intermediate
    # term, labels asked for), before anything is written.
    trainer = ProKTTrainer(
        model=student, teacher_model=teacher, args=training_args, train_dataset=blocks.get("train"),
        eval_dataset=blocks.get("validation"), processing_class=tokenizer, data_collator=data_collator,
    )

    previous_run = replace_previous_run(trainer, data_args.overwrite_output_dir, logger.info)  # every check passed

    results = {}
    if training_args.do_train:
        with previous_run.kept_until_saved():  # the earlier run is deleted once the student is saved
            train_result = trainer.train(resume_from_checkpoint=resume_from)
            metrics = dict(train_result.metrics)
            if not data_args.streaming:
                metrics["train_samples"] = len(blocks["train"])
            if model_args.measure_compression:  # before save_model, so that the card carries the figures
                rows = rows_for_compression(blocks["train"], max(model_args.compression_batch_sizes))
                results.update(measure_text_compression(trainer, teacher, rows, default_data_collator, model_args))
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:  # eval_loss: the distillation loss; the evaluation of the last step is reused
        metrics = final_evaluation(trainer, trained=training_args.do_train)
        if not data_args.streaming:
            metrics["eval_samples"] = len(blocks["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics, combined=True)
        results.update(metrics)
    if model_args.measure_compression and not training_args.do_train:
        rows = rows_for_compression(blocks["validation"], max(model_args.compression_batch_sizes))
        results.update(measure_text_compression(trainer, teacher, rows, default_data_collator, model_args))
    if data_args.plot and trainer.is_world_process_zero():
        from hf_prokt.plot import plot_training

        data_label = card_arguments(data_args, model_args)["dataset"]
        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
                      metric="loss", title=f"general distillation on {data_label}")

    card = card_arguments(data_args, model_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.do_train:
        trainer.create_model_card(**card)  # after evaluation: the card carries the final metrics
    return results


if __name__ == "__main__":
    # under torchrun: every process done, then an exit without the teardown race (docs/distributed.md); on
    # SIGTERM: exit 143 with one line naming the checkpoint (docs/robustness.md)
    run_script(main)
