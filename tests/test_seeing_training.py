"""Both models' training made visible: TensorBoard logs read back, and the ProKT figure."""

import json

import pytest

from hf_prokt import ProKTTrainer
from hf_prokt.plot import default_metric, load_log_history, plot_training
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.test_training import accuracy


def run(tmp_path, **overrides):
    data = toy_dataset(32)
    args = make_args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, logging_steps=2, **overrides)
    teacher = None if args.strategy == "finetune" else tiny_bert(layers=3, seed=2)
    trainer = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=teacher, args=args,
                           train_dataset=data, eval_dataset=data, compute_metrics=accuracy)
    trainer.train()
    return trainer


def test_tensorboard_receives_both_models(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = run(tmp_path, report_to=["tensorboard"], prokt_constraint="dual")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/teacher_loss", "train/kl_student_teacher", "train/learning_rate",
                "train/teacher_learning_rate", "train/prokt_beta", "eval/accuracy", "eval/teacher_accuracy"):
        assert tag in scalars, (tag, sorted(scalars))
    logged = [entry["teacher_loss"] for entry in trainer.state.log_history if "teacher_loss" in entry]
    read_back = [event.value for event in events.Scalars("train/teacher_loss")]
    assert read_back == pytest.approx(logged, rel=1e-5)


def test_plot_from_a_real_run_and_from_its_saved_state(tmp_path):
    trainer = run(tmp_path)
    figure = plot_training(trainer.state.log_history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    top, bottom = figure.axes[:2]
    student_line, teacher_line = top.get_lines()[:2]
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    assert list(student_line.get_ydata()) == pytest.approx([e["eval_accuracy"] for e in evals])
    assert list(teacher_line.get_ydata()) == pytest.approx([e["eval_teacher_accuracy"] for e in evals])
    assert len(bottom.get_lines()[0].get_xdata()) == 3  # one KL point per logging step

    trainer.save_state()
    assert load_log_history(tmp_path / "out") == json.loads((tmp_path / "out" / "trainer_state.json").read_text())[
        "log_history"]
    plot_training(tmp_path / "out", tmp_path / "from_state.png")
    assert (tmp_path / "from_state.png").stat().st_size > 10_000
    assert default_metric(trainer.state.log_history) == "accuracy"


def test_plot_lower_panel_shows_the_student_kd_term_for_kd_and_is_dropped_for_finetune(tmp_path):
    trainer = run(tmp_path, strategy="kd")
    figure = plot_training(trainer.state.log_history)
    assert len(figure.axes) == 2
    (line,) = figure.axes[1].get_lines()
    logged = [(entry["step"], entry["student_distill_loss"]) for entry in trainer.state.log_history
              if "student_distill_loss" in entry]
    assert len(logged) == 3 and list(zip(line.get_xdata(), line.get_ydata())) == logged

    trainer = run(tmp_path / "finetune", strategy="finetune")
    figure = plot_training(trainer.state.log_history)
    assert len(figure.axes) == 1 and len(figure.axes[0].get_lines()) == 1  # the student's accuracy alone


def test_plot_refuses_a_history_with_nothing_to_draw(tmp_path):
    with pytest.raises(ValueError, match="evaluate during training"):
        plot_training([{"loss": 1.0, "step": 1}])
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        plot_training(tmp_path)
