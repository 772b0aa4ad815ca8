"""Read local CSV / TSV / JSON(L) data files with `datasets`, and say in one line what is wrong with a bad one.

`datasets.load_dataset` reports an empty file, a header-only file or a file that is not UTF-8 as a
``DatasetGenerationError`` with the cause deep in a chained traceback, and a file without a header row as
a cast error about columns. `load_data_files` checks each file first (reading it once) and raises `DataFileError`,
naming the file and the cause (for an encoding error, the byte offset), before anything is trained or written.
A UTF-8 byte-order mark at the start of a file is read as such, not as part of the first column's name.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import datasets

TSV_OPTIONS = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}  # GLUE's own files: tab-separated, quotes literal
# UTF-8, with or without a byte-order mark (spreadsheet programs write one): the mark is not part of the header.
ENCODING = "utf-8-sig"
_CHUNK = 1 << 20


class DataFileError(ValueError):
    """A data file that cannot be read as it is; the message names the file, the cause and the fix."""


def file_format(path: str) -> str:
    """``"csv"``, ``"tsv"`` or ``"json"`` from the file's extension (``.jsonl`` is JSON lines)."""
    extension = os.path.splitext(path)[1].lower()
    formats = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}
    if extension not in formats:
        raise DataFileError(f"{path}: unsupported data file type {extension!r}; use .csv, .tsv, .json or .jsonl.")
    return formats[extension]


def first_non_utf8_byte(path: str) -> tuple[int, int] | None:
    """``(offset, byte value)`` of the first byte of ``path`` that is not valid UTF-8, or None (read in chunks)."""
    offset, pending = 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            data = pending + chunk
            if not data:
                return None
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as error:
                # A character cut by the chunk boundary: carry its bytes over to the next chunk.
                if chunk and error.end == len(data) and error.reason == "unexpected end of data":
                    offset, pending = offset + error.start, data[error.start:]
                    continue
                return offset + error.start, data[error.start]
            if not chunk:
                return None
            offset, pending = offset + len(data), b""


def _first_lines(path: str, count: int) -> list[str]:
    """The first ``count`` non-blank lines (fewer when the file has fewer), newline stripped."""
    lines = []
    with open(path, encoding=ENCODING, errors="replace", newline="") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\r\n"))
                if len(lines) == count:
                    break
    return lines


def header_of(path: str) -> list[str]:
    """The column names in the first line of a CSV or TSV file."""
    lines = _first_lines(path, 1)
    if not lines:
        return []
    if file_format(path) == "tsv":
        return lines[0].split("\t")
    return next(csv.reader([lines[0]]))


def record_lines(path: str) -> list[int] | None:
    """The line of ``path`` (1-based, as an editor counts them) on which each of its examples starts, in the
    order `load_data_files` reads them: after the header row of a CSV/TSV file, blank lines skipped, a CSV
    record that spans lines at its first line. None for a JSON file that is not JSON lines (a list or an
    object of columns), whose examples have no line of their own."""
    kind = file_format(path)
    with open(path, encoding=ENCODING, errors="replace", newline="") as f:
        if kind == "csv":
            reader, starts, end = csv.reader(f), [], 0
            for record in reader:
                start, end = end + 1, reader.line_num
                if record:  # a blank line is an empty record
                    starts.append(start)
            return starts[1:]
        lines = [(number, line.strip()) for number, line in enumerate(f, start=1) if line.strip()]
    if kind == "tsv":
        return [number for number, _ in lines[1:]]
    if not all(text.startswith("{") and text.endswith("}") for _, text in lines):
        return None
    return [number for number, _ in lines]


class RowLocator:
    """Names an example of a split the way its user finds it: ``"train.tsv, line 4"`` for a CSV, TSV or
    JSON-lines file, ``"train.json, record 4"`` for another JSON file, ``"<source>, row 4"`` for data that
    is no file (a split of a Hub dataset). Lines are counted (`record_lines`) only when first asked for,
    that is when there is an error to report.

    Args:
        sources: how to name each split: its file, or a description of it.
        files: the split's local file, for the splits read from one.
        lengths: the number of examples of each split as read; a file whose count of lines disagrees is
            named by row (``"row 4 after the header"``).
    """

    def __init__(self, sources: Mapping[str, str], files: Mapping[str, str], lengths: Mapping[str, int]):
        self.sources, self.files, self.lengths = dict(sources), dict(files), dict(lengths)
        self._lines: dict[str, list[int] | None] = {}

    def source(self, split: str) -> str:
        return self.sources[split]

    def row(self, split: str, index: int) -> str:
        """``"line N"``, ``"record N"`` or ``"row N"`` for the example ``index`` (0-based) of ``split``."""
        path = self.files.get(split)
        if path is None:
            return f"row {index + 1}"
        if split not in self._lines:
            lines = record_lines(path)
            self._lines[split] = lines if lines is not None and len(lines) == self.lengths.get(split) else None
        lines = self._lines[split]
        if lines is not None:
            return f"line {lines[index]}"
        return f"record {index + 1}" if file_format(path) == "json" else f"row {index + 1} after the header"

    def __call__(self, split: str, index: int) -> str:
        """``"<source>, line N"`` (or record, row) for the example ``index`` of ``split``."""
        return f"{self.source(split)}, {self.row(split, index)}"


def check_data_file(path: str, required_columns: Sequence[str] = (), columns_hint: str | None = None) -> None:
    """Raise `DataFileError` when ``path`` is missing, empty or not UTF-8, or (CSV/TSV) has only a header or a
    first line without ``required_columns``.

    Args:
        path: a .csv, .tsv, .json or .jsonl file.
        required_columns: column names the first line of a CSV/TSV file must hold.
        columns_hint: how the user names those columns (e.g. ``"--text_columns / --label_column"``), for the
            message.
    """
    if not os.path.isfile(path):
        raise DataFileError(f"{path}: no such file.")
    kind = file_format(path)
    lines = _first_lines(path, 2)
    if not lines:
        raise DataFileError(f"{path} is empty: it needs {'a header row and ' if kind != 'json' else ''}"
                            "at least one example.")
    bad = first_non_utf8_byte(path)  # the JSON reader would not even notice
    if bad is not None:
        offset, value = bad
        raise DataFileError(
            f"{path} is not UTF-8 text: byte 0x{value:02x} at offset {offset} is invalid. Save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)."
        )
    if kind == "json":
        return
    header = header_of(path)
    missing = [name for name in required_columns if name not in header]
    if missing:
        separator = "<TAB>" if kind == "tsv" else ","
        raise DataFileError(
            f"{path}: the first line {header} does not name the column(s) {missing}. The first line must be a "
            f"header row naming every column (e.g. '{separator.join(required_columns)}')"
            + (f"; or set {columns_hint} to the names it has." if columns_hint else ".")
        )
    if len(lines) < 2:
        separator = "<TAB>" if kind == "tsv" else ","
        raise DataFileError(f"{path} holds a header row ({separator.join(header)}) but no examples.")


def load_data_files(files: Mapping[str, str], required_columns: Mapping[str, Sequence[str]] | None = None,
                    columns_hint: str | None = None, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Local data files as a `DatasetDict`, one split per file (``{"train": "train.tsv", ...}``).

    All files share one format: ``.tsv`` (tab-separated, quotes literal, as GLUE ships its files), ``.csv``, or
    ``.json`` / ``.jsonl``. Each file is checked first (`check_data_file`, with ``required_columns[split]``), and
    a failure of `datasets` is re-raised as one `DataFileError` naming the file and the cause.

    Each file is read on its own: its columns keep the types its own values give (read together, `datasets`
    would cast every file to the first one's types, and fail on a validation file of decimal scores beside a
    training file of integer labels before anything could say which row is wrong), and a split has the
    columns of its file only (a test file without a label column has none).
    """
    kinds = {file_format(path) for path in files.values()}
    if len(kinds) != 1:
        raise DataFileError(f"the data files {sorted(files.values())} must share one format (.csv, .tsv or .json).")
    kind = kinds.pop()
    for split, path in files.items():
        check_data_file(path, (required_columns or {}).get(split, ()), columns_hint)
    # The JSON reader skips a byte-order mark itself (and would re-encode every block if told the encoding).
    builder, options = {"tsv": ("csv", {**TSV_OPTIONS, "encoding": ENCODING}), "csv": ("csv", {"encoding": ENCODING}),
                        "json": ("json", {})}[kind]
    splits = {}
    for split, path in files.items():
        try:
            splits[split] = datasets.load_dataset(builder, data_files={split: path}, split=split, cache_dir=cache_dir,
                                                  **options)
        except Exception as error:
            cause = error
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            raise DataFileError(f"could not read {path}: {type(cause).__name__}: {cause}") from error
    return datasets.DatasetDict(splits)
