"""The offline demo (`hf-prokt demo`): the command end to end on a tiny budget, and the digits split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_prokt.cli import main
from hf_prokt.demo import RESULTS_NAME, load_digits_splits
from hf_prokt.vision import load_digits_images

STRATEGIES = ["finetune", "kd", "prokt"]
QUICK = ["--epochs", "1", "--max-train-samples", "40", "--seed", "0"]


def _table_rows(printed: str) -> list[list[str]]:
    """The body rows of the printed table, each split into its cells."""
    lines = [line for line in printed.splitlines() if " | " in line]
    assert lines and lines[0].split(" | ")[0].strip() == "strategy", printed
    return [[cell.strip() for cell in line.split(" | ")] for line in lines[1:]]


def _in_unit_interval(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_demo_command_prints_one_row_per_strategy_and_writes_results(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(output_dir), *QUICK]) == 0

    rows = _table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == STRATEGIES
    assert all(len(row) == 4 for row in rows)

    report = json.loads((output_dir / RESULTS_NAME).read_text())
    assert report["settings"]["train_examples"] == 40
    results = report["results"]
    assert list(results) == STRATEGIES
    for row in rows:
        result = results[row[0]]
        assert _in_unit_interval(result["student_accuracy"])
        assert result["wall_time_s"] > 0
        assert float(row[1]) == pytest.approx(result["student_accuracy"], abs=1e-4)
        assert float(row[3]) == pytest.approx(result["wall_time_s"], abs=0.051)
        if row[0] == "finetune":
            assert result["teacher_accuracy"] is None and row[2] == "-"
        else:
            assert _in_unit_interval(result["teacher_accuracy"])
            assert float(row[2]) == pytest.approx(result["teacher_accuracy"], abs=1e-4)
    assert 0 < results["kd"]["teacher_wall_time_s"] < results["kd"]["wall_time_s"]


def test_demo_gives_the_same_results_run_after_run_with_its_thread_count(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    reports = []
    for name in ("first", "second"):
        assert main(["demo", "--output-dir", str(tmp_path / name), *QUICK, "--strategies", "kd", "prokt",
                     "--threads", "1"]) == 0
        assert "seed 0, 1 torch thread(s)" in capsys.readouterr().out
        reports.append(json.loads((tmp_path / name / RESULTS_NAME).read_text()))
    assert torch.get_num_threads() == threads_before  # the demo's thread count is its own
    first, second = (report["results"] for report in reports)
    assert reports[0]["settings"]["torch_threads"] == 1
    for strategy in ("kd", "prokt"):
        for key in ("student_accuracy", "teacher_accuracy", "student_eval_loss"):
            assert first[strategy][key] == second[strategy][key], (strategy, key)


def test_demo_plot_saves_the_prokt_curves(tmp_path):
    output_dir = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(output_dir), "--epochs", "2", "--max-train-samples", "40",
                 "--strategies", "prokt", "--plot"]) == 0
    assert (output_dir / "prokt_curves.png").stat().st_size > 10_000


def test_demo_command_runs_only_the_strategies_asked_for(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(output_dir), *QUICK, "--strategies", "finetune"]) == 0
    assert [row[0] for row in _table_rows(capsys.readouterr().out)] == ["finetune"]
    assert list(json.loads((output_dir / RESULTS_NAME).read_text())["results"]) == ["finetune"]


def test_demo_command_refuses_an_unknown_strategy(tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--output-dir", str(tmp_path), "--strategies", "distill"])


def _indices(dataset) -> np.ndarray:
    return np.asarray(dataset["index"])


def test_digits_images_split_is_stratified_disjoint_and_deterministic():
    from sklearn.datasets import load_digits

    splits = load_digits_images(seed=0)
    train, validation = splits["train"], splits["validation"]
    assert len(train) + len(validation) == 1797
    assert len(validation) == 360
    assert train.features["label"].names == [str(i) for i in range(10)]
    train_ids, validation_ids = _indices(train), _indices(validation)
    assert not set(train_ids) & set(validation_ids)
    assert sorted(set(train_ids) | set(validation_ids)) == list(range(1797))

    # The images are sklearn's pixels (0-16) scaled to 0-255, grey, 8x8.
    original = load_digits().images
    example = validation[5]
    assert example["image"].mode == "L" and example["image"].size == (8, 8)
    np.testing.assert_array_equal(np.asarray(example["image"]),
                                  np.rint(original[example["index"]] * 255 / 16).astype(np.uint8))

    # Stratified: every class holds out about a fifth of its examples.
    all_labels = np.bincount(np.concatenate([train["label"], validation["label"]]), minlength=10)
    held_out = np.bincount(np.asarray(validation["label"]), minlength=10)
    assert np.all(np.abs(held_out - 0.2 * all_labels) <= 1)

    again = load_digits_images(seed=0)
    assert np.array_equal(_indices(again["train"]), train_ids)
    assert np.array_equal(_indices(again["validation"]), validation_ids)
    assert not np.array_equal(_indices(load_digits_images(seed=1)["validation"]), validation_ids)


def test_demo_splits_yield_normalised_32x32_pixels_and_keep_a_stratified_subset():
    full_train, full_validation = (split.with_format(None) for split in load_digits_splits(seed=0))
    train, validation = load_digits_splits(seed=0, max_train_samples=40)
    plain = train.with_format(None)
    assert len(train) == 40
    assert np.bincount(np.asarray(plain["label"]), minlength=10).tolist() == [4] * 10
    assert set(_indices(plain)) <= set(_indices(full_train))
    assert np.array_equal(_indices(validation.with_format(None)), _indices(full_validation))
    assert train[0]["labels"] == plain[0]["label"]
    example = train[0]
    assert tuple(example["pixel_values"].shape) == (3, 32, 32)
    assert -1.0 <= float(example["pixel_values"].min()) < float(example["pixel_values"].max()) <= 1.0
