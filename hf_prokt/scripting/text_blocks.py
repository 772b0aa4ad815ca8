"""Unlabelled text for the example scripts that read documents: loaded from text files or a `datasets` dataset
(also streamed), tokenized and cut into fixed-size blocks, as `transformers`' language-modelling examples do.

``run_general_distillation.py`` and ``run_clm.py`` use it. ``data_args`` is the script's data dataclass; the
functions read its fields ``dataset_name``, ``dataset_config_name``, ``train_file``, ``validation_file``,
``validation_split_percentage``, ``streaming`` and ``preprocessing_num_workers``.
"""

from __future__ import annotations

import itertools
import os

import datasets

# Files that are not plain text: read line by line they would teach their markup.
STRUCTURED_EXTENSIONS = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".arrow")
# The `datasets` builder of each structured file a script may read as a table of columns.
TABLE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_raw_text(data_args, model_args, tables: bool = False) -> dict:
    """``{"train": ..., "validation": ...}`` (the splits there are): Datasets, or IterableDatasets with
    ``--streaming``, with the text column. With ``tables``, ``.json``/``.jsonl``/``.csv``/``.parquet`` files are
    read as tables of columns (both files of one format); otherwise files are plain text, one document per line."""
    common = dict(cache_dir=model_args.cache_dir, streaming=data_args.streaming)
    if data_args.dataset_name and is_saved_dataset(data_args.dataset_name):
        splits = load_saved_dataset(data_args.dataset_name, data_args.streaming)
        builder = None
    elif data_args.dataset_name:
        builder, options = data_args.dataset_name, dict(name=data_args.dataset_config_name, token=model_args.token)
        splits = {}
        for name in ("train", "validation"):
            try:
                splits[name] = datasets.load_dataset(builder, split=name, **options, **common)
            except ValueError as error:  # a split the dataset does not have
                if "split" not in str(error).lower():
                    raise
    else:
        files = {}
        for name, path in (("train", data_args.train_file), ("validation", data_args.validation_file)):
            if path:
                if not os.path.isfile(path):
                    raise ValueError(f"no such text file: {path}")
                files[name] = path
        builder = "text"
        if tables:
            formats = {TABLE_BUILDERS.get(os.path.splitext(path)[1].lower(), "text") for path in files.values()}
            if len(formats) > 1:
                raise ValueError(f"--train_file and --validation_file are of different formats ({sorted(formats)}): "
                                 "give both as the same kind of file.")
            builder = formats.pop()
        options = dict(data_files=files)
        splits = {name: datasets.load_dataset(builder, split=name, **options, **common) for name in files}
    percentage = data_args.validation_split_percentage
    if percentage and "validation" not in splits and "train" in splits and builder is None:
        splits["train"], splits["validation"] = hold_out(splits["train"], percentage)
    elif percentage and "validation" not in splits and "train" in splits:
        splits["validation"] = datasets.load_dataset(builder, split=f"train[:{percentage}%]", **options, **common)
        splits["train"] = datasets.load_dataset(builder, split=f"train[{percentage}%:]", **options, **common)
    elif percentage:
        raise ValueError("--validation_split_percentage holds out part of the training data, but the validation "
                         "data is given: leave one of them out.")
    return splits


def is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json"))


def load_saved_dataset(path: str, streaming: bool = False) -> dict:
    """The ``train`` and ``validation`` splits of a dataset saved with ``save_to_disk`` (a single Dataset is the
    ``train`` split); IterableDatasets with ``streaming``."""
    saved = datasets.load_from_disk(path)
    found = dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    splits = {name: found[name] for name in ("train", "validation") if name in found}
    if not splits:
        raise ValueError(f"{path} holds the splits {sorted(found)}, but neither 'train' nor 'validation': save the "
                         "dataset with those split names.")
    return {name: split.to_iterable_dataset() if streaming else split for name, split in splits.items()}


def hold_out(dataset: datasets.Dataset, percentage: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(rest, held out)``: the first ``percentage`` % of the rows held out (at least one), as the split
    ``train[:N%]`` of `datasets` would."""
    count = max(1, len(dataset) * percentage // 100)
    if count >= len(dataset):
        raise ValueError(f"--validation_split_percentage {percentage} of {len(dataset)} rows leaves no training "
                         "row: give more data or a smaller percentage.")
    return dataset.select(range(count, len(dataset))), dataset.select(range(count))


def tokenize_into_blocks(dataset, tokenizer, text_column: str, block_size: int, data_args,
                         split: str, end_of_document: int | None = None):
    """The documents of ``dataset`` (blank ones skipped) tokenized, each with its own special tokens (and
    ``end_of_document``, a token id such as a causal LM's EOS, appended where it does not end it already), then
    concatenated 1,000 at a time and cut into blocks of ``block_size`` tokens (the last, shorter piece of every
    1,000 dropped). A Dataset stays a Dataset, an IterableDataset is cut as it is read."""
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"the {split} data has no column {text_column!r} (columns: {columns}): set "
                         "--text_column_name.")

    no_documents = {name: [] for name in tokenizer("")}  # the columns of a batch of blank lines

    def tokenize(batch):
        documents = [text for text in batch[text_column] if text is not None and text.strip()]
        # Documents longer than the models take are expected: they are cut into blocks below.
        if not documents:
            return no_documents
        encoded = tokenizer(documents, verbose=False)
        if end_of_document is not None:
            for index, ids in enumerate(encoded["input_ids"]):
                if not ids or ids[-1] != end_of_document:
                    for name in encoded:  # attended to; other columns (token types) repeat their last value
                        values = encoded[name][index]
                        added = {"input_ids": end_of_document, "attention_mask": 1}.get(
                            name, values[-1] if values else 0)
                        encoded[name][index] = [*values, added]
        return encoded

    def group(batch):
        joined = {name: list(itertools.chain.from_iterable(values)) for name, values in batch.items()}
        length = len(next(iter(joined.values()))) // block_size * block_size
        return {name: [values[start:start + block_size] for start in range(0, length, block_size)]
                for name, values in joined.items()}

    workers = {} if data_args.streaming else {"num_proc": data_args.preprocessing_num_workers}
    described = (lambda text: {}) if data_args.streaming else (lambda text: {"desc": text})
    # Without the column names of some streamed datasets, the text column is removed by the map's return.
    tokenized = dataset.map(tokenize, batched=True, remove_columns=columns or [text_column],
                            **workers, **described(f"Tokenizing {split}"))
    return tokenized.map(group, batched=True, **workers, **described(f"Cutting {split} into blocks of {block_size}"))


def first_blocks(dataset, limit: int | None):
    if limit is None:
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(limit)
    return dataset.select(range(min(limit, len(dataset))))


def check_not_empty(dataset, split: str, block_size: int) -> None:
    """Refuse data that gives no block (reads the first block only of a streamed dataset)."""
    empty = (next(iter(dataset), None) is None if isinstance(dataset, datasets.IterableDataset)
             else len(dataset) == 0)
    if empty:
        raise ValueError(f"the {split} data holds fewer than {block_size} tokens: not one block of --block_size "
                         f"{block_size}. Give more text, or a smaller --block_size.")


def rows_for_compression(dataset, count: int) -> datasets.Dataset:
    """The first ``count`` blocks as a Dataset (a streamed dataset is read that far)."""
    if isinstance(dataset, datasets.IterableDataset):
        return datasets.Dataset.from_list(list(itertools.islice(dataset, count)))
    return dataset
