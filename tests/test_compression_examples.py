"""The examples' `--cache_teacher_logits` (computed once, reused, refused when it belongs to something else) and
`--measure_compression` (figures in all_results.json and the model card)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

import hf_prokt.teacher.logit_cache
from tests.conftest import load_example, tiny_bert
from tests.test_run_glue import common_args, model_dirs_in, single_sentence_files
from tests.test_run_ner import common_args as ner_args
from tests.test_run_ner import save_taggers, tagged_sentences, write_conll

ROOT = Path(__file__).resolve().parent.parent
GLUE = ROOT / "examples" / "glue" / "run_glue.py"
IMAGES = ROOT / "examples" / "image_classification" / "run_image_classification.py"
NER = ROOT / "examples" / "token_classification" / "run_ner.py"


@pytest.fixture(scope="module")
def run_glue():
    return load_example(GLUE, "run_glue_compression")


@pytest.fixture
def teacher_passes(monkeypatch):
    """How many times the teacher's logits were computed (the cache pass, counted)."""
    calls = []
    original = hf_prokt.teacher.logit_cache.cache_teacher_logits

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(hf_prokt.teacher.logit_cache, "cache_teacher_logits", counted)
    return calls


def kd_args(tmp_path, dirs, train, dev, out, cache, **extra):
    return ["--teacher_model_name_or_path", dirs["teacher"], "--student_num_layers", "1", "--strategy", "kd",
            "--train_file", train, "--validation_file", dev, "--cache_teacher_logits", str(cache),
            *common_args(tmp_path, output_dir=str(out), **extra)]


def test_glue_cache_is_computed_once_reused_and_refused_for_other_data_or_teacher(run_glue, tmp_path,
                                                                                 teacher_passes):
    dirs = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    cache = tmp_path / "cache"

    first = run_glue.main(kd_args(tmp_path, dirs, train, dev, tmp_path / "run1", cache))
    assert teacher_passes == [1] and (cache / "teacher_cache_fingerprint.json").is_file()
    second = run_glue.main(kd_args(tmp_path, dirs, train, dev, tmp_path / "run2", cache))
    assert teacher_passes == [1]  # reused: no teacher pass
    assert second["eval_accuracy"] == first["eval_accuracy"] and second["train_loss"] == first["train_loss"]
    students = [AutoModelForSequenceClassification.from_pretrained(tmp_path / run) for run in ("run1", "run2")]
    assert all(torch.equal(a, b) for a, b in zip(students[0].parameters(), students[1].parameters()))
    card = (tmp_path / "run2" / "README.md").read_text()
    assert "from its logits cached once over the training set" in card

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_train, _ = single_sentence_files(other_dir, n_train=40)
    with pytest.raises(ValueError, match="other training data"):
        run_glue.main(kd_args(tmp_path, dirs, other_train, dev, tmp_path / "run3", cache))
    with pytest.raises(ValueError, match="other training data"):  # the same file, other preprocessing
        run_glue.main(kd_args(tmp_path, dirs, train, dev, tmp_path / "run3", cache, max_seq_length=4))
    other_teacher = tiny_bert(layers=4, hidden=32, seed=7)
    other_teacher.save_pretrained(tmp_path / "models" / "teacher")  # same folder, other weights
    with pytest.raises(ValueError, match="another teacher"):
        run_glue.main(kd_args(tmp_path, dirs, train, dev, tmp_path / "run3", cache))
    assert teacher_passes == [1] and not (tmp_path / "run3").exists()


def test_glue_cache_refused_outside_kd(run_glue, tmp_path):
    dirs = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    args = kd_args(tmp_path, dirs, train, dev, tmp_path / "run", tmp_path / "cache")
    with pytest.raises(ValueError, match="ProKT trains its teacher"):
        run_glue.main([*args, "--strategy", "prokt"])
    with pytest.raises(ValueError, match="hidden states"):
        run_glue.main([*args, "--hidden_distill_weight", "1.0"])
    assert not (tmp_path / "cache").exists()


def test_glue_measure_compression_into_results_and_card(run_glue, tmp_path):
    dirs = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    out = tmp_path / "run"
    results = run_glue.main(["--teacher_model_name_or_path", dirs["teacher"], "--student_num_layers", "1",
                             "--strategy", "kd", "--train_file", train, "--validation_file", dev,
                             "--measure_compression", "--compression_batch_sizes", "1", "4",
                             "--compression_repeats", "3", *common_args(tmp_path, output_dir=str(out))])
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("teacher_latency_ms", "student_latency_ms", "speedup", "parameter_ratio", "teacher_size_bytes",
                "student_size_bytes", "speedup_bs4", "eval_accuracy"):
        assert key in saved and saved[key] == results[key], key
    assert saved["speedup"] == saved["teacher_latency_ms_bs1"] / saved["student_latency_ms_bs1"]
    teacher = AutoModelForSequenceClassification.from_pretrained(dirs["teacher"])
    student = AutoModelForSequenceClassification.from_pretrained(out)
    counts = [sum(p.numel() for p in m.parameters()) for m in (teacher, student)]
    assert saved["parameter_ratio"] == counts[0] / counts[1] and saved["student_size_bytes"] < saved[
        "teacher_size_bytes"]
    card = (out / "README.md").read_text()
    assert f"| 4 | {saved['teacher_latency_ms_bs4']:.2f} | {saved['student_latency_ms_bs4']:.2f} |" in card
    assert json.loads((out / "compression_results.json").read_text())["speedup"] == saved["speedup"]


@pytest.fixture(scope="module")
def run_images():
    return load_example(IMAGES, "run_image_classification_compression")


IMAGE_QUIET = ["--report_to", "none", "--disable_tqdm", "True", "--use_cpu", "True", "--save_strategy", "no",
               "--logging_steps", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
               "--max_train_samples", "24", "--max_eval_samples", "16", "--max_steps", "2", "--do_train",
               "--do_eval"]


def test_image_cache_with_fixed_preprocessing_and_refused_with_augmentation(run_images, tmp_path, teacher_passes):
    run_images.main(["--student_config", "vit-micro", "--strategy", "finetune", "--output_dir",
                     str(tmp_path / "teacher"), *IMAGE_QUIET])
    args = ["--student_config", "resnet-tiny", "--strategy", "kd", "--teacher_model_name_or_path",
            str(tmp_path / "teacher"), "--cache_teacher_logits", str(tmp_path / "cache"), *IMAGE_QUIET]
    first = run_images.main([*args, "--output_dir", str(tmp_path / "kd1"), "--measure_compression",
                             "--compression_batch_sizes", "2", "--compression_repeats", "2"])
    second = run_images.main([*args, "--output_dir", str(tmp_path / "kd2")])
    assert teacher_passes == [1] and second["eval_accuracy"] == first["eval_accuracy"]
    assert first["speedup"] == first["teacher_latency_ms_bs2"] / first["student_latency_ms_bs2"]
    with pytest.raises(ValueError, match="augmented images differ at every epoch"):
        run_images.main([*args, "--output_dir", str(tmp_path / "kd3"), "--augmentation", "crop"])


def test_ner_measure_compression_into_results_and_card(tmp_path):
    run_ner = load_example(NER, "run_ner_compression")
    dirs = save_taggers(tmp_path / "taggers")
    train = write_conll(tmp_path / "train.txt", tagged_sentences(16, 0))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="--measure_compression compares the student with its teacher"):
        run_ner.main(["--model_name_or_path", dirs["student"], "--strategy", "finetune", "--train_file", train,
                      "--measure_compression", *ner_args(tmp_path, output_dir=str(out), do_eval=False)])
    assert not out.exists()
    results = run_ner.main(["--teacher_model_name_or_path", dirs["teacher"], "--model_name_or_path", dirs["student"],
                            "--strategy", "finetune", "--train_file", train, "--measure_compression",
                            "--compression_batch_sizes", "1", "4", "--compression_repeats", "3",
                            *ner_args(tmp_path, output_dir=str(out), do_eval=False, max_steps=2)])
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("teacher_latency_ms", "student_latency_ms", "speedup", "parameter_ratio", "speedup_bs4"):
        assert key in saved and saved[key] == results[key], key
    counts = [sum(p.numel() for p in AutoModelForTokenClassification.from_pretrained(d).parameters())
              for d in (dirs["teacher"], out)]
    assert saved["parameter_ratio"] == counts[0] / counts[1]
    card = (out / "README.md").read_text()
    assert f"| 4 | {saved['teacher_latency_ms_bs4']:.2f} | {saved['student_latency_ms_bs4']:.2f} |" in card
