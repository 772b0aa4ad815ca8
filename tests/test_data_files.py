"""Bad data files are refused in one line that names the file and the cause, before anything is trained or
written: `hf_prokt.scripting.data_files` directly, and through `examples/glue/run_glue.py`."""

import json
import random

import pytest

from hf_prokt.scripting import data_files
from hf_prokt.scripting.data_files import DataFileError, RowLocator, first_non_utf8_byte, load_data_files, record_lines
from tests.test_run_glue import common_args, sentence, single_sentence_files, write_tsv


@pytest.fixture(scope="module")
def run_glue():
    from tests.test_run_glue import load_script

    return load_script()


def refused(run_glue, tmp_path, match, **files):
    """run_glue on ``files`` fails with one `ValueError` line matching ``match``, and writes nothing."""
    argv = common_args(tmp_path, model_name_or_path=str(tmp_path / "no-model"), strategy="finetune", **files)
    with pytest.raises(ValueError, match=match) as error:
        run_glue.main(argv)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
    return error.value


def test_files_without_a_header_row_are_refused_naming_the_columns(run_glue, tmp_path):
    rng = random.Random(0)
    rows = [(sentence(rng), rng.randrange(2)) for _ in range(8)]
    train = tmp_path / "train.tsv"
    train.write_text("".join(f"{text}\t{label}\n" for text, label in rows))
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(f"{text}\t{label}\n" for text, label in rows[:4]))
    error = refused(run_glue, tmp_path, r"train\.tsv: the first line .* does not name the column\(s\) "
                    r"\['sentence', 'label'\].*header row", train_file=str(train), validation_file=str(dev))
    assert "sentence<TAB>label" in str(error) and "--text_columns / --label_column" in str(error)


def test_a_test_file_needs_no_label_column_but_its_text_columns(run_glue, tmp_path):
    train, dev = single_sentence_files(tmp_path)
    test = write_tsv(tmp_path / "test.tsv", ["index", "text"], [(0, "w1 w2")])
    refused(run_glue, tmp_path, r"test\.tsv: .*\['sentence'\]", train_file=train, validation_file=dev,
            test_file=test)


def test_empty_and_header_only_files(run_glue, tmp_path):
    train, _ = single_sentence_files(tmp_path)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    refused(run_glue, tmp_path, r"empty\.tsv is empty", train_file=train, validation_file=str(empty))
    header_only = tmp_path / "header_only.tsv"
    header_only.write_text("sentence\tlabel\n\n")
    refused(run_glue, tmp_path, r"header_only\.tsv holds a header row \(sentence<TAB>label\) but no examples",
            train_file=str(header_only), validation_file=train)
    empty_json = tmp_path / "empty.jsonl"
    empty_json.write_text("\n")
    with pytest.raises(DataFileError, match=r"empty\.jsonl is empty"):
        load_data_files({"train": str(empty_json)})


def test_a_file_that_is_not_utf8_is_refused_with_the_byte_offset(run_glue, tmp_path):
    train, _ = single_sentence_files(tmp_path)
    prefix = b"sentence\tlabel\nw1 w2\t0\ncaf"
    dev = tmp_path / "dev_latin1.tsv"
    dev.write_bytes(prefix + "\u00e9 w3\t1\n".encode("latin-1"))
    refused(run_glue, tmp_path, rf"dev_latin1\.tsv is not UTF-8 text: byte 0xe9 at offset {len(prefix)} is invalid",
            train_file=train, validation_file=str(dev))

    json_file = tmp_path / "train.jsonl"
    line = json.dumps({"sentence": "w1", "label": 0}).encode() + b"\n"
    json_file.write_bytes(line + b'{"sentence": "\xff", "label": 1}\n')
    with pytest.raises(DataFileError, match=rf"train\.jsonl is not UTF-8 text: byte 0xff at offset {len(line) + 14}"):
        load_data_files({"train": str(json_file)}, cache_dir=str(tmp_path / "cache"))


def test_first_non_utf8_byte_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(data_files, "_CHUNK", 3)
    path = tmp_path / "f.txt"
    text = "ab\u00e9\u20accd\U0001f600e".encode()  # 1-, 2-, 3- and 4-byte characters cut by 3-byte chunks
    path.write_bytes(text)
    assert first_non_utf8_byte(str(path)) is None
    for boundary in (0, 1, 2, 4, 7, 8, 9, 13, 14):  # the characters' first bytes, and the end
        path.write_bytes(text[:boundary] + b"\x80" + text[boundary:])
        assert first_non_utf8_byte(str(path)) == (boundary, 0x80), boundary
    path.write_bytes(text[:-2])  # the last character cut short: its first byte is the offending one
    assert first_non_utf8_byte(str(path)) == (len(text) - 5, 0xF0)


BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark spreadsheet programs write


@pytest.mark.parametrize("extension", ["csv", "tsv", "jsonl", "json"])
def test_a_byte_order_mark_is_read_as_such(tmp_path, extension):
    rows = [("w1 w2", 0), ("w3", 1), ("w4 w5", 1)]
    if extension == "jsonl":
        text = "".join(json.dumps({"sentence": s, "label": label}) + "\n" for s, label in rows)
    elif extension == "json":
        text = json.dumps([{"sentence": s, "label": label} for s, label in rows])
    else:
        separator = "\t" if extension == "tsv" else ","
        text = f"sentence{separator}label\n" + "".join(f"{s}{separator}{label}\n" for s, label in rows)
    path = tmp_path / f"train.{extension}"
    path.write_bytes(BOM + text.encode())
    loaded = load_data_files({"train": str(path)}, {"train": ["sentence", "label"]},
                             cache_dir=str(tmp_path / "cache"))["train"]
    assert loaded.column_names == ["sentence", "label"]
    assert loaded["sentence"] == [s for s, _ in rows] and loaded["label"] == [label for _, label in rows]


def test_run_glue_trains_on_files_with_a_byte_order_mark(run_glue, tmp_path):
    from tests.test_run_glue import model_dirs_in

    train, dev = single_sentence_files(tmp_path, n_train=16, n_eval=8)
    for path in (train, dev):
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(BOM + data)
    student = model_dirs_in(tmp_path / "models")["student"]
    results = run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="finetune",
                                        model_name_or_path=student, max_steps=1))
    assert results["eval_samples"] == 8


def test_rows_are_named_by_the_line_an_editor_shows(tmp_path):
    csv_file = tmp_path / "d.csv"  # a quoted record over two lines, blank lines
    csv_file.write_text('sentence,label\nw1,0\n\n"w2\nw3",1\nw4,0\n')
    tsv_file = tmp_path / "d.tsv"
    tsv_file.write_text("sentence\tlabel\n\nw1\t0\nw2\t1\n")
    jsonl_file = tmp_path / "d.jsonl"
    jsonl_file.write_text('{"sentence": "w1", "label": 0}\n\n{"sentence": "w2", "label": 1}\n')
    json_file = tmp_path / "d.json"
    json_file.write_text('[\n{"sentence": "w1", "label": 0},\n{"sentence": "w2", "label": 1}\n]\n')
    assert record_lines(str(csv_file)) == [2, 4, 6]
    assert record_lines(str(tsv_file)) == [3, 4]
    assert record_lines(str(jsonl_file)) == [1, 3]
    assert record_lines(str(json_file)) is None
    for path in (csv_file, tsv_file, jsonl_file, json_file):  # the lines match the examples as read
        assert len(load_data_files({"train": str(path)}, cache_dir=str(tmp_path / "cache"))["train"]) == len(
            record_lines(str(path)) or [0, 0])
    files = {"train": str(csv_file), "validation": str(json_file), "test": str(tsv_file)}
    locate = RowLocator({**files, "hub": "the hub split"}, files, {"train": 3, "validation": 2, "test": 5})
    assert locate("train", 1) == f"{csv_file}, line 4"
    assert locate("validation", 1) == f"{json_file}, record 2"
    assert locate("test", 1) == f"{tsv_file}, row 2 after the header"  # 5 examples, but 2 lines: not trusted
    assert locate("hub", 0) == "the hub split, row 1"


def test_an_example_without_its_text_is_refused_naming_file_and_line(run_glue, tmp_path):
    train, dev = single_sentence_files(tmp_path, n_train=8, n_eval=4)
    holed = tmp_path / "holed.tsv"
    holed.write_text("sentence\tlabel\nw1 w2\t0\n\t1\nw3\t0\n  \t1\n")  # an empty field, then only spaces
    refused(run_glue, tmp_path, rf"^{holed}, line 3: the 'sentence' text is empty; 1 more row\(s\) too: line 5\. "
            "Every example needs its text", train_file=str(holed), validation_file=dev)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2,label\nw1,w2,0\nw3,w4,1\nw5,,0\n")
    refused(run_glue, tmp_path, rf"^{pairs}, line 4: the 'sentence2' text is empty\.", train_file=str(pairs))
    for value in (None, "", 7):
        lines = tmp_path / "dev.jsonl"
        lines.write_text(json.dumps({"sentence": "w1", "label": 0}) + "\n"
                         + json.dumps({"sentence": value, "label": 1}) + "\n")
        what = "is 7, not text" if value == 7 else "is empty"
        refused(run_glue, tmp_path, rf"^{lines}, line 2: the 'sentence' text {what}\.",
                train_file=str(lines), validation_file=str(lines))
