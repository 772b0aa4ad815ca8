"""`benchmarks/quality.py` end to end on tiny BERTs and synthetic sentences (offline, seconds)."""

from __future__ import annotations

import json

from benchmarks.quality import STRATEGIES, main


def _in_unit_interval(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_quality_tiny_writes_every_strategy_and_the_curves(tmp_path, capsys):
    output = tmp_path / "quality.json"
    assert main(["--tiny", "--output", str(output)]) == 0

    report = json.loads(output.read_text())
    assert list(report["runs"]) == list(STRATEGIES) == list(report["summary"])
    settings = report["hyperparameters"]
    for name in ("student_learning_rate", "teacher_learning_rate", "kd_teacher_learning_rate", "prokt_lambda",
                 "distill_alpha", "distill_temperature", "batch_size", "steps_per_run", "zero_init_classifier"):
        assert name in settings, name
    for strategy in STRATEGIES:
        (run,) = report["runs"][strategy]
        assert _in_unit_interval(run["student_accuracy"])
        assert run["wall_time_s"] > 0
        assert run["steps"] == settings["steps_per_run"]
        if strategy == "finetune":
            assert run["teacher_accuracy"] is None
        else:
            assert _in_unit_interval(run["teacher_accuracy"])
        summary = report["summary"][strategy]
        assert summary["student_accuracy"]["mean"] == run["student_accuracy"]
        assert summary["wall_time_s"]["mean"] > 0
    assert report["runs"]["kd"][0]["wall_time_s"] > report["runs"]["kd"][0]["teacher_train_s"] > 0
    for strategy in ("prokt", "prokt_dual"):
        curves = report["runs"][strategy][0]["curves"]
        assert curves["evaluations"] and all(_in_unit_interval(e["teacher_accuracy"]) for e in curves["evaluations"])
        assert curves["training_logs"] and all(e["kl_student_teacher"] >= 0 for e in curves["training_logs"])

    plot = tmp_path / "prokt_curves.png"
    assert report["plot"]["path"] == str(plot)
    assert plot.stat().st_size > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert all(f"\n{strategy} " in printed for strategy in STRATEGIES)


def test_quality_runs_only_the_strategies_asked_for(tmp_path):
    output = tmp_path / "quality.json"
    assert main(["--tiny", "--strategies", "finetune", "--epochs", "1", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert list(report["runs"]) == ["finetune"]
    assert report["plot"] is None and not (tmp_path / "prokt_curves.png").exists()
