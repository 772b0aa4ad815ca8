#!/usr/bin/env python
"""Distil a causal LM (GPT-2, Llama-family...) into a smaller one with ProKT, KD or plain fine-tuning, on text cut
into blocks or on prompt/completion pairs trained completion-only.

    python examples/language_modeling/run_clm.py \\
        --teacher_model_name_or_path openai-community/gpt2 --student_num_layers 6 --strategy kd \\
        --dataset_name Salesforce/wikitext --dataset_config_name wikitext-2-raw-v1 --block_size 512 \\
        --do_train --do_eval --output_dir gpt2-6-wikitext

    python examples/language_modeling/run_clm.py \\
        --teacher_model_name_or_path /models/my-llama --student_num_layers 4 --strategy prokt \\
        --train_file pairs.jsonl --validation_split_percentage 5 --block_size 256 \\
        --do_train --do_eval --output_dir llama-4-pairs

Arguments are those of three dataclasses: `ModelArguments` and `DataTrainingArguments` below, and
`hf_prokt.ProKTTrainingArguments` (every `TrainingArguments` field plus the distillation ones).

The data is, by its columns: plain text files (one document per line) or a dataset's ``--text_column_name``, each
document ending with EOS, concatenated and cut into blocks of ``--block_size`` tokens, every token a label; or
rows with ``--prompt_column`` and ``--completion_column`` (a .jsonl/.json/.csv/.parquet file, or a dataset), one
row per pair: prompt, completion and EOS, the prompt labelled -100.

Outputs: `train_results.json`, `eval_results.json` (``eval_perplexity``: exp of the mean next-token loss over the
validation tokens, and the teacher's for ``prokt``), `all_results.json`, and in `output_dir` the student alone (a
plain `AutoModelForCausalLM` checkpoint) with the tokenizer and its model card, which holds a greedy sample.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

from hf_prokt import ProKTTrainer, ProKTTrainingArguments, load_or_cache_teacher_topk
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
from hf_prokt.scripting.completions import check_pair_columns, tokenize_pairs
from hf_prokt.scripting.data_files import check_data_file, load_data_files
from hf_prokt.scripting.final_evaluation import final_evaluation
from hf_prokt.scripting.model_checks import check_max_seq_length, checkpoint_configs, position_limit
from hf_prokt.scripting.perplexity import next_token_loss_sums, perplexity_metrics
from hf_prokt.scripting.run_folder import replace_previous_run, start_of_run
from hf_prokt.scripting.shutdown import run_script
from hf_prokt.scripting.text_blocks import (
    STRUCTURED_EXTENSIONS,
    check_not_empty,
    first_blocks,
    hold_out,
    load_raw_text,
    tokenize_into_blocks,
)
from hf_prokt.scripting.text_generation import greedy_sample, sample_section
from hf_prokt.strategies import strategy_class

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 1024  # as transformers' run_clm.py, below the models' limit
PAIR_FILE_FORMATS = (".json", ".jsonl", ".csv")


@dataclass
class ModelArguments(CompressionArguments, HubLoadingArguments, TeacherStudentArguments):
    """The teacher and student checkpoints (`TeacherStudentArguments`; ``--student_model_name_or_path`` is
    ``--model_name_or_path``), how they are loaded (`HubLoadingArguments`) and the compression measurement."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"aliases": ["--student_model_name_or_path"],
                  "help": "Student: a causal LM's Hub id or local folder. Leave out and set --student_num_layers "
                          "to build the student from the teacher's layers."},
    )
    sample_max_new_tokens: int = field(
        default=20, metadata={"help": "Tokens the saved student generates (greedy) for the card's sample; 0: none."}
    )


@dataclass
class DataTrainingArguments(RunOutputArguments):
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets` dataset: a Hub id, a folder of data files, or a folder "
                                        "written by save_to_disk."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    text_column_name: str = field(default="text", metadata={"help": "The column of text (block mode)."})
    prompt_column: str = field(default="prompt", metadata={"help": "The prompt column (prompt/completion mode)."})
    completion_column: str = field(
        default="completion", metadata={"help": "The completion column (prompt/completion mode)."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Training data: a text file (one document per line), or a .jsonl/.json/.csv "
                                        "file of prompt/completion pairs."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format."})
    validation_split_percentage: int | None = field(
        default=None,
        metadata={"help": "Without validation data: hold out the first N%% of the training rows for evaluation."},
    )
    block_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per block (text) or the longest pair (prompt/completion, cut there); default: the "
                          "smaller of 1024 and the models' positions; refused above them."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes tokenizing the data."})
    cache_teacher_topk: str | None = field(
        default=None,
        metadata={"help": "strategy kd: a folder for the teacher's top-k log-probabilities of every predicted "
                          "training position. The first run computes them (one teacher pass) and saves them there; "
                          "later runs with the same teacher, data, k and temperature reuse them and train without "
                          "running the teacher. A cache made from anything else is refused."},
    )
    teacher_topk_k: int = field(default=64, metadata={"help": "Entries per position of --cache_teacher_topk."})

    streaming = False  # not offered here: text_blocks reads it

    def __post_init__(self):
        if self.dataset_name is None and not (self.train_file or self.validation_file):
            raise ValueError("Give the data: --dataset_name, or --train_file / --validation_file (text files, one "
                             "document per line, or .jsonl/.csv files of prompt/completion pairs).")
        if self.dataset_name and (self.train_file or self.validation_file):
            raise ValueError("Give --dataset_name or --train_file / --validation_file, not both.")
        if self.validation_split_percentage is not None and not 0 < self.validation_split_percentage < 100:
            raise ValueError(f"--validation_split_percentage {self.validation_split_percentage}: give a "
                             "percentage between 1 and 99.")
        if self.cache_teacher_topk is not None and self.teacher_topk_k < 1:
            raise ValueError(f"--teacher_topk_k {self.teacher_topk_k}: give at least 1 entry per position.")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError(f"--block_size {self.block_size}: give at least 2 tokens (one to read, one to predict).")


# --------------------------------------------------------------------------------------------------- data


def data_files(data_args: DataTrainingArguments) -> dict[str, tuple[str, str]]:
    """``{split: (flag, path)}`` of the files given."""
    return {split: (f"--{split}_file", path) for split, path in
            (("train", data_args.train_file), ("validation", data_args.validation_file)) if path}


def check_files(data_args: DataTrainingArguments) -> bool:
    """Refuse missing, empty or mixed files before anything is loaded; True when they are prompt/completion files."""
    files = data_files(data_args)
    structured = {path.lower().endswith(STRUCTURED_EXTENSIONS) for _, path in files.values()}
    if len(structured) > 1:
        raise ValueError("--train_file and --validation_file are of different kinds (text and a table): give both "
                         "as text files or both as prompt/completion files.")
    for flag, path in files.values():
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file.")
        if path.lower().endswith(STRUCTURED_EXTENSIONS):
            if not path.lower().endswith(PAIR_FILE_FORMATS):
                raise ValueError(f"{flag} {path}: prompt/completion files are read as .jsonl, .json or .csv.")
            check_data_file(path)  # empty, not UTF-8, header only
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                if not any(line.strip() for line in f):
                    raise ValueError(f"{flag} {path} holds no text (every line is blank): give a file with one "
                                     "document per line.")
    return structured == {True}


def load_raw(data_args: DataTrainingArguments, model_args: ModelArguments, pair_files: bool) -> dict:
    """``{"train": Dataset, "validation": Dataset}`` (the splits there are)."""
    if not pair_files:
        return load_raw_text(data_args, model_args)
    files = {split: path for split, (_, path) in data_files(data_args).items()}
    splits = dict(load_data_files(files, cache_dir=model_args.cache_dir))
    if data_args.validation_split_percentage and "validation" in splits:
        raise ValueError("--validation_split_percentage holds out part of the training data, but the validation "
                         "data is given: leave one of them out.")
    if data_args.validation_split_percentage and "train" in splits:
        splits["train"], splits["validation"] = hold_out(splits["train"], data_args.validation_split_percentage)
    return splits


def source_of(data_args: DataTrainingArguments, split: str) -> str:
    path = {"train": data_args.train_file, "validation": data_args.validation_file}.get(split)
    return path or f"the {split} split of {data_args.dataset_name or data_args.train_file}"


def is_pair_data(raw: dict, data_args: DataTrainingArguments, pair_files: bool) -> bool:
    """Prompt/completion mode when the data has the prompt or the completion column (both are then required),
    or comes from table files; text blocks otherwise."""
    pairs = False
    for split, dataset in raw.items():
        columns = dataset.column_names
        has_pair_column = data_args.prompt_column in columns or data_args.completion_column in columns
        if pair_files or has_pair_column:
            check_pair_columns(columns, data_args.prompt_column, data_args.completion_column, source_of(data_args,
                                                                                                       split))
            pairs = True
        elif data_args.text_column_name not in columns:
            raise ValueError(f"{source_of(data_args, split)} has no column {data_args.text_column_name!r} (columns: "
                             f"{columns}): set --text_column_name for text, or --prompt_column and "
                             "--completion_column for prompt/completion pairs.")
    return pairs


# ------------------------------------------------------------------------------------------------- models


def load_model(name_or_path: str, model_args: ModelArguments):
    return AutoModelForCausalLM.from_pretrained(name_or_path, cache_dir=model_args.cache_dir,
                                                revision=model_args.model_revision, token=model_args.token,
                                                trust_remote_code=model_args.trust_remote_code)


def load_tokenizer(model_args: ModelArguments):
    """The teacher's tokenizer (or ``--tokenizer_name``); one without a pad token pads with EOS, as GPT-2's and
    Llama's must (padding is labelled -100, so it is never learned)."""
    source = (model_args.tokenizer_name or model_args.teacher_model_name_or_path or model_args.student_init_from
              or model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token,
                                              trust_remote_code=model_args.trust_remote_code)
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer of {source} has no EOS token, which ends every document and completion: "
                         "give --tokenizer_name of a tokenizer with one.")
    if tokenizer.pad_token is None:
        logger.warning("The tokenizer of %s has no pad token: padding with its EOS token %r (padding is labelled "
                       "-100 and never learned).", source, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def block_size_for(data_args: DataTrainingArguments, configs: list) -> int:
    """``--block_size``, or the smaller of 1024 and the models' positions; refused above them."""
    limits = [found[0] for found in (position_limit(config) for _, _, config in configs) if found]
    if data_args.block_size is None:
        return min([DEFAULT_BLOCK_SIZE, *limits])
    check_max_seq_length(data_args.block_size, configs, flag="--block_size")
    return data_args.block_size


def check_cache_arguments(data_args: DataTrainingArguments, training_args) -> None:
    """Refuse, before anything is loaded, a top-k cache with a recipe that cannot learn from it."""
    if not data_args.cache_teacher_topk:
        return
    recipe = strategy_class(training_args.strategy)
    if not recipe.accepts_cached_logits:
        raise ValueError(
            f"--cache_teacher_topk serves --strategy kd (a frozen teacher), not {training_args.strategy!r}: "
            + ("ProKT trains its teacher, so its predictions change at every step." if recipe.trains_teacher
               else "fine-tuning has no teacher.") + " Remove --cache_teacher_topk, or use --strategy kd.")
    if training_args.uses_intermediate_terms:
        raise ValueError("--cache_teacher_topk keeps the teacher's top-k log-probabilities only, but the "
                         "*_distill_weight terms need its hidden states at every step. Set them to 0, or train "
                         "without the cache.")


def with_cached_teacher_topk(data_args: DataTrainingArguments, teacher, train_dataset, data_collator,
                             training_args):
    """The training rows with the teacher's top-k log-probabilities at ``--distill_temperature``: read from
    ``--cache_teacher_topk`` when a cache of the same teacher, rows and settings is there, else computed once (in
    the precision of training) and saved there."""
    if training_args.teacher_dtype is not None:  # the dtype the trainer would run the teacher in
        teacher.to(getattr(torch, training_args.teacher_dtype))
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None
    with training_args.main_process_first(desc="teacher top-k cache"):
        return load_or_cache_teacher_topk(
            data_args.cache_teacher_topk, teacher, train_dataset, k=data_args.teacher_topk_k,
            temperature=training_args.distill_temperature, batch_size=training_args.per_device_eval_batch_size,
            data_collator=data_collator, precision=precision, disable_tqdm=training_args.disable_tqdm)


# --------------------------------------------------------------------------------------------------- main


def parse_arguments(argv: list[str]):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, ProKTTrainingArguments))
    return parse_config_and_flags(parser, argv)


def card_arguments(data_args: DataTrainingArguments, model_args: ModelArguments) -> dict:
    """The card's data, task and base model: the file's name or the dataset, text-generation, the teacher when it
    is a Hub id."""
    card = {"tasks": "text-generation", "pipeline_tag": "text-generation"}
    if data_args.dataset_name and os.path.isdir(data_args.dataset_name):
        card["dataset"] = os.path.basename(os.path.normpath(data_args.dataset_name))
    elif data_args.dataset_name:
        card.update(dataset=data_args.dataset_name, dataset_tags=data_args.dataset_name)
        if data_args.dataset_config_name:
            card["dataset_args"] = data_args.dataset_config_name
    else:
        card["dataset"] = os.path.basename(data_args.train_file or data_args.validation_file)
    base = model_args.model_name_or_path or model_args.teacher_model_name_or_path
    if base and not os.path.isdir(base):
        card["finetuned_from"] = base
    return card


def sample_prompt(raw: dict, data_args: DataTrainingArguments, pairs: bool, tokenizer, words: int = 8) -> str | None:
    """The first validation prompt (pairs), or the first words of the first validation document (text); from the
    training data when there is no validation data."""
    dataset = raw.get("validation") or raw.get("train")
    column = data_args.prompt_column if pairs else data_args.text_column_name
    for text in dataset[column][:100] if dataset is not None else []:
        if text is not None and str(text).strip():
            return str(text) if pairs else " ".join(str(text).split()[:words])
    return None


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    resume_from = start_of_run(training_args, data_args.overwrite_output_dir)

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    check_cache_arguments(data_args, training_args)
    pair_files = check_files(data_args)
    raw = load_raw(data_args, model_args, pair_files)
    for flag, split in (("--do_train", "train"), ("--do_eval", "validation")):
        if getattr(training_args, flag[2:]) and split not in raw:
            hint = "--validation_file, or --validation_split_percentage N" if split == "validation" else "--train_file"
            raise ValueError(f"{flag} needs {split} data: give {hint} (or a --dataset_name with a {split!r} split).")
    pairs = is_pair_data(raw, data_args, pair_files)
    configs = checkpoint_configs(model_args, training_args.strategy)
    block_size = block_size_for(data_args, configs)

    teacher, student = build_teacher_and_student(model_args, training_args.strategy,
                                                 partial(load_model, model_args=model_args))
    tokenizer = load_tokenizer(model_args)
    check_max_seq_length(block_size, tokenizer=tokenizer, flag="--block_size")
    check_distillation_pair(student, teacher)  # a vocabulary mismatch is the pair's first
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the student's vocabulary only "
                         f"{student.config.vocab_size}: use the models' own tokenizer (--tokenizer_name).")

    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              "validation": (training_args.do_eval, data_args.max_eval_samples)}
    rows = {}
    with training_args.main_process_first(desc="dataset map pre-processing"):
        for split, (needed, limit) in wanted.items():
            if not needed:
                continue
            if pairs:
                cut = tokenize_pairs(raw[split], tokenizer, data_args.prompt_column, data_args.completion_column,
                                     block_size, split, data_args.preprocessing_num_workers)
                if len(cut) == 0:
                    raise ValueError(f"{source_of(data_args, split)}: no pair leaves a completion token within "
                                     f"--block_size {block_size}: give a larger --block_size or shorter prompts.")
            else:
                cut = tokenize_into_blocks(raw[split], tokenizer, data_args.text_column_name, block_size, data_args,
                                           split, end_of_document=tokenizer.eos_token_id)
                cut = cut.map(lambda batch: {"labels": [list(ids) for ids in batch["input_ids"]]}, batched=True)
                check_not_empty(cut, f"{split} ({source_of(data_args, split)})", block_size)
            rows[split] = first_blocks(cut, limit)

    # Blocks are all block_size long: nothing to pad. Pairs are padded, their padding labelled -100.
    data_collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100) if pairs else default_data_collator
    training_teacher = teacher
    if data_args.cache_teacher_topk and "train" in rows:
        rows["train"] = with_cached_teacher_topk(data_args, teacher, rows["train"], data_collator, training_args)
        if not training_args.should_evaluate_teacher:
            training_teacher = None  # the columns replace it in training
    trainer = ProKTTrainer(
        model=student, teacher_model=training_teacher, args=training_args, train_dataset=rows.get("train"),
        eval_dataset=rows.get("validation"), processing_class=tokenizer, data_collator=data_collator,
        compute_metrics=perplexity_metrics, preprocess_logits_for_metrics=next_token_loss_sums,
    )

    previous_run = replace_previous_run(trainer, data_args.overwrite_output_dir, logger.info)  # every check passed

    results = {}
    if training_args.do_train:
        with previous_run.kept_until_saved():  # the earlier run is deleted once the student is saved
            train_result = trainer.train(resume_from_checkpoint=resume_from)
            metrics = {**train_result.metrics, "train_samples": len(rows["train"])}
            if model_args.measure_compression and teacher is not None:  # before save_model: the card carries them
                results.update(measure_text_compression(trainer, teacher, rows["train"], data_collator, model_args))
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        metrics = {**final_evaluation(trainer, trained=training_args.do_train),
                   "eval_samples": len(rows["validation"])}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics, combined=True)
        results.update(metrics)
    card = card_arguments(data_args, model_args)
    if data_args.plot and trainer.is_world_process_zero():
        from hf_prokt.plot import plot_training

        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
                      metric="perplexity", title=f"{training_args.strategy} on {card['dataset']}")
    prompt = sample_prompt(raw, data_args, pairs, tokenizer)
    if training_args.do_train and trainer.is_world_process_zero() and prompt and model_args.sample_max_new_tokens:
        generated = greedy_sample(training_args.output_dir, tokenizer, prompt, model_args.sample_max_new_tokens)
        results["sample_prompt"], results["sample_generated"] = prompt, generated
        card["sections"] = {"Sample": sample_section(prompt, generated, model_args.sample_max_new_tokens)}
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.do_train:
        trainer.create_model_card(**card)  # after evaluation: the card carries the final metrics
    return results


if __name__ == "__main__":
    run_script(main)
