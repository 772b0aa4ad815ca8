"""`examples/glue/run_glue.py` end to end, offline: tiny models saved to folders, tiny TSV files."""

import ast
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast

from tests.conftest import VOCAB_SIZE, check_example_outputs, load_example, tiny_bert

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "glue" / "run_glue.py"
WORDS = [f"w{i}" for i in range(VOCAB_SIZE - 5)]


def load_script():
    return load_example(SCRIPT, "run_glue")


@pytest.fixture(scope="module")
def run_glue():
    return load_script()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return model_dirs_in(tmp_path_factory.mktemp("models"))


def model_dirs_in(root):
    """A 4-layer teacher and a 2-layer student, each saved with the same local WordPiece tokenizer."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.tokenize(WORDS[3]) == [WORDS[3]]
    dirs = {}
    for name, model in (("teacher", tiny_bert(layers=4, hidden=32, seed=2)), ("student", tiny_bert(layers=2, seed=1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = str(root / name)
    return dirs


def sentence(rng, first_word=None):
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
    if first_word:
        words[0] = first_word
    return " ".join(words)


def write_tsv(path, header, rows):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, row)) + "\n" for row in rows))
    return str(path)


def single_sentence_files(tmp_path, n_train=48, n_eval=16, labels=("0", "1")):
    rng = random.Random(0)

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.randrange(len(labels))
            out.append((sentence(rng, first_word=WORDS[label]), labels[label]))
        return out

    return (write_tsv(tmp_path / "train.tsv", ["sentence", "label"], rows(n_train)),
            write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], rows(n_eval)))


def common_args(tmp_path, **extra):
    args = {"output_dir": str(tmp_path / "out"), "do_train": True, "do_eval": True, "max_steps": 6,
            "per_device_train_batch_size": 8, "learning_rate": 3e-3, "teacher_learning_rate": 1e-3,
            "report_to": "none", "save_strategy": "no", "use_cpu": True, "logging_steps": 2,
            "disable_tqdm": True, "max_seq_length": 32, **extra}  # 32: the tiny models' positions
    return [item for key, value in args.items() for item in (f"--{key}", str(value))]


@pytest.mark.parametrize("strategy", ["prokt", "kd", "finetune"])
def test_single_sentence_each_strategy(run_glue, model_dirs, tmp_path, strategy):
    train, dev = single_sentence_files(tmp_path)
    argv = common_args(tmp_path, strategy=strategy, train_file=train, validation_file=dev, plot=True,
                       eval_strategy="steps", eval_steps=3)
    if strategy == "finetune":
        argv += ["--model_name_or_path", model_dirs["student"]]
    else:
        argv += ["--teacher_model_name_or_path", model_dirs["teacher"], "--student_num_layers", "2"]
    results = run_glue.main(argv)

    out = tmp_path / "out"
    eval_results = check_example_outputs(out, strategy, "accuracy")
    assert {"eval_accuracy", "eval_f1", "eval_matthews_correlation", "eval_loss"} <= set(eval_results)
    assert "train_loss" in json.loads((out / "train_results.json").read_text())
    assert results["eval_accuracy"] == eval_results["eval_accuracy"]

    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "0", 1: "1"}
    # The reported accuracy is the saved student's accuracy on the validation file, computed here by hand.
    tokenizer = AutoTokenizer.from_pretrained(out)
    lines = Path(dev).read_text().splitlines()[1:]
    texts, labels = [line.split("\t")[0] for line in lines], [int(line.split("\t")[1]) for line in lines]
    with torch.no_grad():
        logits = student(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    accuracy = float((logits.argmax(-1).numpy() == np.array(labels)).mean())
    assert eval_results["eval_accuracy"] == pytest.approx(accuracy)


def test_string_labels_pairs_and_predictions_in_glue_format(run_glue, model_dirs, tmp_path):
    rng = random.Random(1)
    names = ["yes", "no"]

    def rows(n, labelled=True):
        out = []
        for index in range(n):
            label = rng.randrange(2)
            row = (sentence(rng, WORDS[label]), sentence(rng))
            out.append((index, *row, names[label]) if labelled else (index, *row))
        return out

    header = ["id", "sentence1", "sentence2", "label"]
    train = write_tsv(tmp_path / "train.tsv", header, rows(32))
    dev = write_tsv(tmp_path / "dev.tsv", header, rows(8))
    test = write_tsv(tmp_path / "test.tsv", header[:3], rows(5, labelled=False))
    argv = common_args(tmp_path, train_file=train, validation_file=dev, test_file=test, do_predict=True,
                       teacher_model_name_or_path=model_dirs["teacher"], model_name_or_path=model_dirs["student"])
    run_glue.main(argv)
    out = tmp_path / "out"
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.label2id == {"no": 0, "yes": 1}  # sorted, from the training file
    predictions = (out / "predict_results_custom.txt").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and len(predictions) == 6
    assert all(line.split("\t")[1] in names for line in predictions[1:])


def test_regression_from_a_json_config(run_glue, model_dirs, tmp_path):
    rng = random.Random(2)

    def rows(n):
        out = []
        for _ in range(n):
            score = rng.uniform(0, 5)
            out.append((sentence(rng, WORDS[int(score)]), sentence(rng), f"{score:.2f}"))
        return out

    header = ["sentence1", "sentence2", "label"]
    train, dev = write_tsv(tmp_path / "t.tsv", header, rows(32)), write_tsv(tmp_path / "d.tsv", header, rows(8))
    config = {"output_dir": str(tmp_path / "out"), "do_train": True, "do_eval": True, "max_steps": 4,
              "train_file": train, "validation_file": dev, "teacher_model_name_or_path": model_dirs["teacher"],
              "student_num_layers": 1, "ignore_mismatched_sizes": True, "report_to": "none", "save_strategy": "no",
              "use_cpu": True, "per_device_train_batch_size": 8, "max_seq_length": 32}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    results = run_glue.main([str(path)])
    assert {"eval_pearson", "eval_spearmanr", "eval_teacher_pearson"} <= set(results)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.num_labels == 1 and student.config.num_hidden_layers == 1


def test_glue_task_from_its_own_tsv_files(run_glue, model_dirs, tmp_path):
    """GLUE's MRPC files carry 0/1; the labels get the task's names and metrics are accuracy and F1."""
    rng = random.Random(3)
    header = ["Quality", "#1 ID", "#2 ID", "sentence1", "sentence2"]
    rows = [(label := rng.randrange(2), i, i + 1, sentence(rng, WORDS[label]), sentence(rng)) for i in range(24)]
    train = write_tsv(tmp_path / "train.tsv", header, rows)
    dev = write_tsv(tmp_path / "dev.tsv", header, rows[:8])
    argv = common_args(tmp_path, task_name="mrpc", train_file=train, validation_file=dev, label_column="Quality",
                       teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2, strategy="kd",
                       evaluate_teacher=True)
    results = run_glue.main(argv)
    assert {"eval_accuracy", "eval_f1", "eval_teacher_accuracy"} <= set(results)
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.id2label == {0: "not_equivalent", 1: "equivalent"}


def test_bad_inputs_are_refused_before_training(run_glue, model_dirs, tmp_path):
    train, dev = single_sentence_files(tmp_path)
    with pytest.raises(ValueError, match="not a GLUE task"):
        run_glue.main(common_args(tmp_path, task_name="sst3", train_file=train))
    with pytest.raises(ValueError, match="needs --teacher_model_name_or_path"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev,
                                  model_name_or_path=model_dirs["student"]))
    with pytest.raises(ValueError, match=r"train\.tsv: the first line .* does not name the column\(s\) \['review'"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, text_columns="review",
                                  model_name_or_path=model_dirs["student"], strategy="finetune"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config", sorted((SCRIPT.parent / "configs").glob("*.json")), ids=lambda p: p.stem)
def test_shipped_configs_parse_and_take_overrides(run_glue, config, tmp_path):
    model_args, data_args, training_args = run_glue.parse_arguments(
        [str(config), "--task_name", "mrpc", "--output_dir", str(tmp_path)])
    raw = json.loads(config.read_text())
    assert data_args.task_name == "mrpc" and training_args.output_dir == str(tmp_path)
    assert training_args.strategy == raw["strategy"] and training_args.learning_rate == raw["learning_rate"]
    assert training_args.num_train_epochs == raw["num_train_epochs"] == 6
    assert training_args.zero_init_classifier == raw.get("zero_init_classifier", False)
    assert model_args.student_num_layers == raw.get("student_num_layers")


def test_mnli_from_the_hub_path_evaluates_matched_and_mismatched(run_glue, model_dirs, tmp_path, monkeypatch):
    """`--task_name mnli` as `datasets` serves it (stand-in splits with GLUE's features): both validation sets
    are evaluated, both test sets predicted in GLUE's format."""
    import datasets

    rng = random.Random(4)
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                  "idx": datasets.Value("int32")})

    def split(n, labelled=True):
        rows = {"premise": [], "hypothesis": [], "label": [], "idx": []}
        for i in range(n):
            label = rng.randrange(3)
            rows["premise"].append(sentence(rng, WORDS[label]))
            rows["hypothesis"].append(sentence(rng))
            rows["label"].append(label if labelled else -1)
            rows["idx"].append(i)
        return datasets.Dataset.from_dict(rows, features=features)

    served = datasets.DatasetDict({"train": split(24), "validation_matched": split(8),
                                   "validation_mismatched": split(6), "test_matched": split(5, False),
                                   "test_mismatched": split(4, False)})
    calls = []
    monkeypatch.setattr(run_glue.datasets, "load_dataset",
                        lambda *args, **kwargs: calls.append(args) or datasets.DatasetDict(dict(served)))
    argv = common_args(tmp_path, task_name="mnli", do_predict=True, teacher_model_name_or_path=model_dirs["teacher"],
                       student_num_layers=2, ignore_mismatched_sizes=True)
    results = run_glue.main(argv)
    assert calls == [("nyu-mll/glue", "mnli")]
    assert {"eval_accuracy", "eval_teacher_accuracy", "eval_mm_accuracy", "eval_mm_teacher_accuracy"} <= set(results)
    assert results["eval_samples"] == 8 and results["eval_mm_samples"] == 6
    out = tmp_path / "out"
    matched = (out / "predict_results_mnli.txt").read_text().splitlines()
    mismatched = (out / "predict_results_mnli_mm.txt").read_text().splitlines()
    assert len(matched) == 6 and len(mismatched) == 5
    assert all(line.split("\t")[1] in {"entailment", "neutral", "contradiction"} for line in matched[1:])
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_student_num_layers_copies_the_chosen_teacher_layers(run_glue, model_dirs, tmp_path):
    model_args = run_glue.ModelArguments(teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2)
    training_args = run_glue.ProKTTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    teacher, student = run_glue.build_models(model_args, training_args, 2, ["neg", "pos"])
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "neg", 1: "pos"}
    for student_index, teacher_index in enumerate([0, 2]):  # uniformly spaced from the first of 4 layers
        s_state = student.bert.encoder.layer[student_index].state_dict()
        t_state = teacher.bert.encoder.layer[teacher_index].state_dict()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_student_init_from_builds_the_student_from_that_checkpoint_not_the_teacher(run_glue, model_dirs, tmp_path):
    # A "pretrained" checkpoint (encoder only, no classification head) of the teacher's architecture but other weights.
    init_dir = tmp_path / "pretrained"
    tiny_bert(layers=4, hidden=32, seed=7).bert.save_pretrained(init_dir)
    model_args = run_glue.ModelArguments(teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2,
                                         student_init_from=str(init_dir))
    training_args = run_glue.ProKTTrainingArguments(output_dir=str(tmp_path), use_cpu=True, strategy="kd")
    teacher, student = run_glue.build_models(model_args, training_args, 2, ["neg", "pos"])

    pretrained = AutoModelForSequenceClassification.from_pretrained(init_dir, num_labels=2)
    saved_teacher = AutoModelForSequenceClassification.from_pretrained(model_dirs["teacher"])
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "neg", 1: "pos"}
    for student_index, source_index in enumerate([0, 2]):  # uniformly spaced from the first of 4 layers
        s_state = student.bert.encoder.layer[student_index].state_dict()
        p_state = pretrained.bert.encoder.layer[source_index].state_dict()
        t_state = teacher.bert.encoder.layer[source_index].state_dict()
        assert all(torch.equal(s_state[k], p_state[k]) for k in p_state)
        assert not any(torch.equal(s_state[k], t_state[k]) for k in t_state if k.endswith("dense.weight"))
    embeddings = student.bert.embeddings.word_embeddings.weight
    assert torch.equal(embeddings, pretrained.bert.embeddings.word_embeddings.weight)
    # The teacher is the fine-tuned one, head included.
    for name, tensor in saved_teacher.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], tensor), name


def test_student_init_from_end_to_end_and_its_refusals(run_glue, model_dirs, tmp_path):
    init_dir = tmp_path / "pretrained"
    tiny_bert(layers=4, hidden=32, seed=7).bert.save_pretrained(init_dir)
    train, dev = single_sentence_files(tmp_path)
    with pytest.raises(ValueError, match="--student_init_from .* give --student_num_layers N"):
        run_glue.main(common_args(tmp_path, strategy="kd", train_file=train, validation_file=dev,
                                  teacher_model_name_or_path=model_dirs["teacher"], student_init_from=str(init_dir)))
    assert not (tmp_path / "out").exists()

    argv = common_args(tmp_path, strategy="kd", train_file=train, validation_file=dev, student_num_layers=2,
                       teacher_model_name_or_path=model_dirs["teacher"], student_init_from=str(init_dir))
    results = run_glue.main(argv)
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "0", 1: "1"}


def save_labelled(path, names, seed, layers=4, hidden=32):
    """A tiny fine-tuned-looking checkpoint whose head names its classes in the order ``names``."""
    model = tiny_bert(layers=layers, hidden=hidden, seed=seed, id2label=dict(enumerate(names)),
                      label2id={name: i for i, name in enumerate(names)})
    model.save_pretrained(path)
    return str(path)


def test_a_named_teacher_fixes_the_label_order_and_its_head_rows_stay_its_own(run_glue, tmp_path):
    # The data's names sort to ["neg", "pos"]; the teacher's head has "pos" in row 0.
    teacher_dir = save_labelled(tmp_path / "teacher", ["pos", "neg"], seed=2)
    model_args = run_glue.ModelArguments(teacher_model_name_or_path=teacher_dir, student_num_layers=2)
    names = run_glue.label_order(["neg", "pos"], model_args, "kd")
    assert names == ["pos", "neg"]
    training_args = run_glue.ProKTTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, strategy="kd")
    teacher, student = run_glue.build_models(model_args, training_args, 2, names)
    saved = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    assert teacher.config.label2id == {"pos": 0, "neg": 1} and student.config.label2id == {"pos": 0, "neg": 1}
    assert torch.equal(teacher.classifier.weight, saved.classifier.weight)
    # A pretrained teacher (no names) leaves the data's order; a teacher of another task is refused.
    pretrained_dir = tmp_path / "pretrained"
    tiny_bert(layers=4, hidden=32, seed=3).save_pretrained(pretrained_dir)
    plain = run_glue.ModelArguments(teacher_model_name_or_path=str(pretrained_dir), student_num_layers=2)
    assert run_glue.label_order(["neg", "pos"], plain, "prokt") == ["neg", "pos"]
    with pytest.raises(ValueError, match=r"has the labels \['pos', 'neg'\], but the data has \['no', 'yes'\]"):
        run_glue.label_order(["no", "yes"], model_args, "prokt")


def test_student_init_from_and_teacher_in_other_label_orders_are_refused_before_anything_is_written(
        run_glue, model_dirs, tmp_path):
    teacher_dir = save_labelled(tmp_path / "teacher", ["1", "0"], seed=2)
    init_dir = save_labelled(tmp_path / "init", ["0", "1"], seed=7)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        source = Path(model_dirs["teacher"]) / name
        if source.exists():
            (Path(teacher_dir) / name).write_bytes(source.read_bytes())
    train, dev = single_sentence_files(tmp_path)
    argv = common_args(tmp_path, strategy="kd", train_file=train, validation_file=dev, student_num_layers=2,
                       teacher_model_name_or_path=teacher_dir, student_init_from=init_dir)
    with pytest.raises(ValueError, match=r"orders the labels \['1', '0'\], .*init orders them \['0', '1'\]"):
        run_glue.main(argv)
    assert not (tmp_path / "out").exists()

    # Fine-tuning a student built from --student_init_from never loads the teacher: its labels play no part,
    # and the copied head's order is kept.
    argv = common_args(tmp_path, strategy="finetune", train_file=train, validation_file=dev, student_num_layers=2,
                       teacher_model_name_or_path=save_labelled(tmp_path / "other_task", ["a", "b"], seed=4),
                       student_init_from=save_labelled(tmp_path / "init_reversed", ["1", "0"], seed=8),
                       tokenizer_name=model_dirs["teacher"])
    results = run_glue.main(argv)
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "1", 1: "0"}


def test_an_unseen_label_in_the_validation_file_is_refused_before_anything_is_written(run_glue, model_dirs, tmp_path):
    train, _ = single_sentence_files(tmp_path)
    rng = random.Random(5)
    dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"],
                    [(sentence(rng), label) for label in (0, 1, 2, 1, 2)])
    with pytest.raises(ValueError, match=r"dev\.tsv, line 4: label 2 is not one of the labels \[0, 1\] of "
                                         r".*train\.tsv; 1 more row\(s\) too: line 6\. Every label"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="finetune",
                                  model_name_or_path=model_dirs["student"]))
    assert not (tmp_path / "out").exists()


def test_a_training_file_with_one_class_is_refused_naming_it(run_glue, model_dirs, tmp_path):
    train, _ = single_sentence_files(tmp_path, n_train=8, labels=("positive",))
    with pytest.raises(ValueError, match=rf"^{re.escape(train)}: every example has the label 'positive', the only "
                                         "label found: a classification needs at least two classes"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=train, strategy="kd",
                                  student_num_layers=2, teacher_model_name_or_path=model_dirs["teacher"],
                                  ignore_mismatched_sizes=True))
    assert not (tmp_path / "out").exists()


def scored_rows(rng, n, word=None, at=None):
    """``(sentence, score)`` rows with scores such as STS-B's (``3.80``); ``word`` instead of the score at row
    ``at``."""
    rows = [(sentence(rng), f"{rng.uniform(0, 5):.2f}") for _ in range(n)]
    if word is not None:
        rows[at] = (rows[at][0], word)
    return rows


def test_a_word_among_scores_is_refused_not_read_as_a_classification(run_glue, model_dirs, tmp_path):
    rng = random.Random(6)
    train = write_tsv(tmp_path / "train.tsv", ["sentence", "label"], scored_rows(rng, 40, "high", at=7))
    common = dict(train_file=train, strategy="kd", student_num_layers=2, ignore_mismatched_sizes=True,
                  teacher_model_name_or_path=model_dirs["teacher"])
    with pytest.raises(ValueError) as error:
        run_glue.main(common_args(tmp_path, do_eval=False, **common))
    assert str(error.value).startswith(f"{train}, line 9: label 'high' is text, but the file's other labels are "
                                       "decimal numbers (e.g. ")
    assert "every label must be a number" in str(error.value) and "--label_type classification" in str(error.value)
    assert not (tmp_path / "out").exists()
    # Forced to a regression, the word is still no number: named with its line.
    with pytest.raises(ValueError, match=rf"^{re.escape(train)}, line 9: label 'high' is not a \(finite\) number, "
                                         "but --label_type regression reads every label as a number"):
        run_glue.main(common_args(tmp_path, do_eval=False, label_type="regression", **common))
    assert not (tmp_path / "out").exists()


def test_the_regression_rule_integers_are_classes_and_decimals_scores(run_glue, tmp_path):
    """The rule of `label_scheme` on GLUE-like columns: SST-2's 0/1 and names are classes, STS-B's scores (and
    integer scores among them) a regression; --label_type overrides it."""
    import datasets

    def scheme(values, label_type="auto", task=None):
        raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": values})})
        data_args = run_glue.DataTrainingArguments(train_file="t.tsv", label_type=label_type, task_name=task)
        return run_glue.label_scheme(data_args, raw, run_glue.RowLocator({"train": "t.tsv"}, {}, {}))

    assert scheme([0, 1, 1, 0]).names == ["0", "1"]
    assert scheme(["2", "10", "1"]).names == ["1", "2", "10"]  # integers in a column of text: still integers
    assert scheme(["pos", "neg"]).names == ["neg", "pos"]
    assert scheme([3.8, 5.0, 0.0]).is_regression
    assert scheme(["3.800", "5", "0.2"]).is_regression  # STS-B's own files
    assert scheme([1.0, 2.0]).is_regression  # written as decimals
    assert scheme([1, 2, 5], label_type="regression").is_regression
    assert scheme([0.5, 1.5], label_type="classification").names == ["0.5", "1.5"]
    assert scheme(["1", "positive"], label_type="classification").names == ["1", "positive"]
    assert scheme([0, 1], task="stsb").is_regression and scheme(["a"], task="sst2").names == ["negative",
                                                                                             "positive"]
    with pytest.raises(ValueError, match="--task_name stsb is a regression, --label_type classification says"):
        run_glue.DataTrainingArguments(task_name="stsb", label_type="classification")


def test_a_numeric_validation_file_against_classes_is_named_a_score_file(run_glue, model_dirs, tmp_path):
    train, _ = single_sentence_files(tmp_path)
    rng = random.Random(7)
    dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [(sentence(rng), "1")] + scored_rows(rng, 5))
    with pytest.raises(ValueError) as error:
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="finetune",
                                  model_name_or_path=model_dirs["student"]))
    message = str(error.value)
    assert message.startswith(f"{dev}, line 3: ") and "is a score (a decimal number), not a class" in message
    assert f"{train} is a classification with the classes [0, 1]" in message
    assert "not one of the labels" not in message
    assert not (tmp_path / "out").exists()
    # And the other way round: a classification file against a regression training file.
    scores = write_tsv(tmp_path / "scores.tsv", ["sentence", "label"], scored_rows(rng, 20))
    named = write_tsv(tmp_path / "named.tsv", ["sentence", "label"], [(sentence(rng), "pos"), (sentence(rng), "2.5")])
    with pytest.raises(ValueError, match=rf"^{re.escape(named)}, line 2: label 'pos' is not a \(finite\) number, "
                                         rf"but the labels of {re.escape(scores)} are numbers \(a regression\)"):
        run_glue.main(common_args(tmp_path, train_file=scores, validation_file=named, strategy="finetune",
                                  model_name_or_path=model_dirs["student"], ignore_mismatched_sizes=True))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_integer_and_text_labels_mixed_are_refused_naming_both(run_glue, model_dirs, tmp_path, fmt):
    rng = random.Random(8)
    labels = [1, 0, 1, "positive", 0, 1, 0, 1]
    rows = [(sentence(rng), label) for label in labels]
    if fmt == "tsv":
        train = write_tsv(tmp_path / "train.tsv", ["sentence", "label"], rows)
        line, example = 5, "2"
    else:
        train = str(tmp_path / "train.jsonl")
        Path(train).write_text("".join(json.dumps({"sentence": t, "label": v}) + "\n" for t, v in rows))
        line, example = 4, "1"
    common = dict(train_file=train, do_eval=False, strategy="kd", student_num_layers=2, ignore_mismatched_sizes=True,
                  teacher_model_name_or_path=model_dirs["teacher"])
    with pytest.raises(ValueError) as error:
        run_glue.main(common_args(tmp_path, **common))
    assert str(error.value).startswith(f"{train}, line {line}: label 'positive' is text, but the file's other labels "
                                       f"are integers (e.g. 1 on line {example}). Write every label the same way")
    assert "--label_type classification" in str(error.value)
    assert not (tmp_path / "out").exists()
    # Asked for, every distinct value is a class.
    run_glue.main(common_args(tmp_path, label_type="classification", **common))
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.id2label == {0: "0", 1: "1", 2: "positive"}


def test_text_in_a_validation_file_of_integer_classes_is_named_as_such(run_glue, model_dirs, tmp_path):
    train, _ = single_sentence_files(tmp_path)
    rng = random.Random(9)
    dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [(sentence(rng), v) for v in ("0", "positive")])
    with pytest.raises(ValueError, match=rf"^{re.escape(dev)}, line 3: label 'positive' is text, but the classes of "
                                         rf"{re.escape(train)} are the integers \[0, 1\]\."):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="finetune",
                                  model_name_or_path=model_dirs["student"]))
    assert not (tmp_path / "out").exists()


def with_tokenizer_of(model_dir, folder):
    """Copy the tokenizer files of ``model_dir`` into ``folder`` (a checkpoint saved without them)."""
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        source = Path(model_dir) / name
        if source.exists():
            (Path(folder) / name).write_bytes(source.read_bytes())
    return str(folder)


@pytest.mark.parametrize("flag", ["teacher_model_name_or_path", "model_name_or_path", "student_init_from"])
def test_a_token_classification_checkpoint_is_refused_naming_run_ner(run_glue, model_dirs, tmp_path, flag):
    from tests.conftest import tiny_tagger

    tagger = tmp_path / "tagger"
    tiny_tagger(layers=4, hidden=32, num_labels=2, seed=3).save_pretrained(tagger)  # as many tags as labels
    with_tokenizer_of(model_dirs["teacher"], tagger)
    train, dev = single_sentence_files(tmp_path)
    models = {"teacher_model_name_or_path": dict(teacher_model_name_or_path=str(tagger), student_num_layers=2),
              "model_name_or_path": dict(teacher_model_name_or_path=model_dirs["teacher"],
                                         model_name_or_path=str(tagger)),
              "student_init_from": dict(teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2,
                                        student_init_from=str(tagger))}[flag]
    with pytest.raises(ValueError, match=rf"^--{flag} {re.escape(str(tagger))} is a token-classification "
                                         r"checkpoint \(BertForTokenClassification\), but run_glue\.py trains "
                                         r"sequence-classification models.*use examples/token_classification/run_ner"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="kd", **models))
    assert not (tmp_path / "out").exists()


def test_a_max_seq_length_beyond_the_models_positions_is_refused_up_front(run_glue, model_dirs, tmp_path):
    train, dev = single_sentence_files(tmp_path)
    with open(train, "a") as f:  # one example longer than the tiny models' 32 positions
        f.write(" ".join(WORDS[:1] * 40) + "\t0\n")
    with pytest.raises(ValueError, match=rf"^--max_seq_length 64 is longer than the 32 tokens of "
                                         rf"--teacher_model_name_or_path {re.escape(model_dirs['teacher'])} "
                                         r"\(max_position_embeddings 32\).*Pass --max_seq_length 32 or less\."):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, max_seq_length=64,
                                  teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2))
    assert not (tmp_path / "out").exists()
    # A tokenizer that says it reads fewer tokens is the limit.
    teacher = tmp_path / "teacher"
    AutoModelForSequenceClassification.from_pretrained(model_dirs["teacher"]).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(model_dirs["teacher"], model_max_length=16).save_pretrained(teacher)
    with pytest.raises(ValueError, match=rf"^--max_seq_length 24 is longer than the 16 tokens of the tokenizer of "
                                         rf"{re.escape(str(teacher))} \(model_max_length 16\)"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, max_seq_length=24,
                                  teacher_model_name_or_path=str(teacher), student_num_layers=2))
    assert not (tmp_path / "out").exists()


def test_position_limits_of_model_families():
    from transformers import BertConfig, DebertaV2Config, RobertaConfig

    from hf_prokt.scripting.model_checks import position_limit

    assert position_limit(BertConfig(max_position_embeddings=512))[0] == 512
    limit, why = position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1))
    assert limit == 512 and why == "max_position_embeddings 514 less the padding offset 2"
    assert position_limit(DebertaV2Config(position_biased_input=False)) is None  # relative positions only
    assert position_limit(DebertaV2Config(position_biased_input=True, max_position_embeddings=512))[0] == 512


def test_a_missing_label_is_refused_but_an_unlabelled_test_file_is_not(run_glue, tmp_path):
    train, dev = single_sentence_files(tmp_path)
    holed = tmp_path / "holed.csv"
    holed.write_text("sentence,label\nw1 w2,yes\n\nw3,\nw4,no\n")  # lines as an editor counts them, blank ones too
    with pytest.raises(ValueError, match=r"holed\.csv, line 4: no 'label' label\. Fill it in"):
        run_glue.main(common_args(tmp_path, train_file=str(holed), strategy="finetune", model_name_or_path="none"))
    datasets_ = __import__("datasets")
    raw = datasets_.DatasetDict({"train": datasets_.Dataset.from_dict({"label": [0, 1]}),
                                 "test": datasets_.Dataset.from_dict({"label": [-1, None, 1]})})
    data_args = run_glue.DataTrainingArguments(task_name="sst2")
    locate = run_glue.RowLocator({"train": "t", "test": "u", "validation": "v"}, {}, {})
    scheme = run_glue.LabelScheme(is_regression=False, names=["negative", "positive"], by_id=True)
    run_glue.check_labels(data_args, raw, scheme, locate)
    raw["validation"] = datasets_.Dataset.from_dict({"label": [0, -1]})
    with pytest.raises(ValueError, match=r"v, row 2: label -1 is not one of the labels \[0, 1\] of t\."):
        run_glue.check_labels(data_args, raw, scheme, locate)


def test_a_student_with_a_smaller_vocabulary_is_named_as_the_mismatch(run_glue, model_dirs, tmp_path):
    small = tiny_bert(layers=2, seed=1)
    small.resize_token_embeddings(VOCAB_SIZE - 10)
    small.save_pretrained(tmp_path / "small")
    AutoTokenizer.from_pretrained(model_dirs["student"]).save_pretrained(tmp_path / "small")
    train, dev = single_sentence_files(tmp_path)
    with pytest.raises(ValueError, match=rf"student's vocabulary has {VOCAB_SIZE - 10} tokens but the teacher's has "
                                         rf"{VOCAB_SIZE}"):
        run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="kd",
                                  teacher_model_name_or_path=model_dirs["teacher"],
                                  model_name_or_path=str(tmp_path / "small")))
    assert not (tmp_path / "out").exists()


def test_kd_card_is_written_after_the_final_evaluation_and_names_data_and_student(run_glue, model_dirs, tmp_path):
    from huggingface_hub import ModelCard

    train, dev = single_sentence_files(tmp_path)
    run_glue.main(common_args(tmp_path, train_file=train, validation_file=dev, strategy="kd",
                              teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2))
    out = tmp_path / "out"
    card = ModelCard.load(out / "README.md")
    eval_results = json.loads((out / "eval_results.json").read_text())
    (accuracy,) = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert accuracy.metric_value == pytest.approx(eval_results["eval_accuracy"])
    assert "unknown dataset" not in card.text and "from scratch" not in card.text
    assert "on train.tsv" in card.text
    assert "2 of the teacher's 4 layers (0, 2)" in card.text
    config = json.loads((out / "config.json").read_text())
    assert config["student_from_teacher"] == {"teacher": model_dirs["teacher"], "teacher_num_layers": 4,
                                              "teacher_layers": [0, 2]}


def test_the_last_in_training_evaluation_is_not_repeated(run_glue, model_dirs, tmp_path, monkeypatch):
    calls = []
    evaluate = run_glue.ProKTTrainer.evaluate
    monkeypatch.setattr(run_glue.ProKTTrainer, "evaluate",
                        lambda self, *args, **kwargs: calls.append(self.state.global_step) or evaluate(
                            self, *args, **kwargs))
    train, dev = single_sentence_files(tmp_path)
    common = dict(train_file=train, validation_file=dev, teacher_model_name_or_path=model_dirs["teacher"],
                  student_num_layers=2, eval_strategy="steps")
    results = run_glue.main(common_args(tmp_path, eval_steps=3, **common))  # evaluated at steps 3 and 6 (the last)
    assert calls == [3, 6]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    last = [entry for entry in state["log_history"] if "eval_accuracy" in entry][-1]
    assert last["step"] == 6 and results["eval_accuracy"] == last["eval_accuracy"]
    assert results["eval_teacher_accuracy"] == last["eval_teacher_accuracy"] and results["eval_samples"] == 16

    calls.clear()
    run_glue.main(common_args(tmp_path, eval_steps=4, output_dir=str(tmp_path / "out2"), **common))
    assert calls == [4, 6]  # the last step was not evaluated during training: evaluated at the end


SIGTERM_AT_STEP_2 = """
import os, runpy, signal, sys
import hf_prokt
from transformers import TrainerCallback

class SigtermAtStep2(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

class Trainer(hf_prokt.ProKTTrainer):  # the script's trainer, with the callback
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(SigtermAtStep2())

hf_prokt.ProKTTrainer = Trainer
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigterm_ends_the_script_with_143_one_line_and_a_checkpoint_it_resumes_from(run_glue, model_dirs, tmp_path):
    """The script's own ending (`run_script`), under a real SIGTERM at step 2 of 6 without scheduled saves."""
    train, dev = single_sentence_files(tmp_path)
    argv = common_args(tmp_path, train_file=train, validation_file=dev,
                       teacher_model_name_or_path=model_dirs["teacher"], student_num_layers=2)
    (tmp_path / "sigterm.py").write_text(SIGTERM_AT_STEP_2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(SCRIPT.parent.parent.parent), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(tmp_path / "sigterm.py"), str(SCRIPT), *argv], env=env,
                            capture_output=True, text=True, timeout=300)
    out = tmp_path / "out"
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Training stopped by SIGTERM after optimizer step 2; its checkpoint is {out / 'checkpoint-2'}. Resume with "
        "--resume_from_checkpoint last (the example scripts) or trainer.train(resume_from_checkpoint=True).")
    assert not (out / "model.safetensors").exists() and (out / "checkpoint-2" / "checkpoint_complete.json").exists()

    run_glue.main(argv + ["--resume_from_checkpoint", "last"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6
    # Every example ends through run_script, the ending tested here.
    for script in SCRIPT.parent.parent.glob("*/run_*.py"):
        main_block = [node for node in ast.parse(script.read_text()).body if isinstance(node, ast.If)][-1]
        assert ast.unparse(main_block) == "if __name__ == '__main__':\n    run_script(main)", script
