"""Short real runs: losses fall, evaluation reports both models, logs carry the distillation terms."""

import numpy as np
import pytest
import torch

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, tiny_bert, toy_dataset


def accuracy(eval_prediction):
    predictions = np.argmax(eval_prediction.predictions, axis=-1)
    return {"accuracy": float((predictions == eval_prediction.label_ids).mean())}


@pytest.mark.parametrize("strategy", ["prokt", "kd", "finetune"])
def test_short_run_learns(tmp_path, strategy):
    student, teacher = tiny_bert(seed=1, hidden=32), tiny_bert(layers=3, hidden=32, seed=2)
    data = toy_dataset(64, seed=5)
    if strategy == "kd":  # a KD teacher is fine-tuned first
        ProKTTrainer(model=teacher, args=make_args(tmp_path / "teacher", strategy="finetune", max_steps=40,
                                                   learning_rate=3e-3), train_dataset=data).train()
    args = make_args(tmp_path, strategy=strategy, max_steps=40, learning_rate=3e-3, teacher_learning_rate=3e-3,
                     distill_alpha=0.5, logging_steps=5)
    trainer = ProKTTrainer(model=student, teacher_model=teacher if strategy != "finetune" else None, args=args,
                           train_dataset=data, eval_dataset=data, compute_metrics=accuracy)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_accuracy"] > 0.75


def test_evaluate_reports_the_teacher_for_prokt_only(tmp_path):
    data = toy_dataset(16)
    prokt = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, seed=2),
                         args=make_args(tmp_path), eval_dataset=data, compute_metrics=accuracy)
    metrics = prokt.evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_teacher_loss", "eval_teacher_accuracy"} <= set(metrics)
    assert metrics["eval_teacher_loss"] != metrics["eval_loss"]

    teacher = tiny_bert(layers=3, seed=2)
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor(data["input_ids"]),
                         attention_mask=torch.tensor(data["attention_mask"])).logits
    expected = float((logits.argmax(-1) == torch.tensor(data["labels"])).float().mean())
    kd = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=teacher, args=make_args(tmp_path, strategy="kd"),
                      eval_dataset=data, compute_metrics=accuracy)
    assert not any(key.startswith("eval_teacher") for key in kd.evaluate())
    kd.args.evaluate_teacher = True
    assert kd.evaluate()["eval_teacher_accuracy"] == pytest.approx(expected)
    assert not teacher.training


def test_evaluation_during_training_logs_both_models(tmp_path):
    data = toy_dataset(32)
    args = make_args(tmp_path, eval_strategy="steps", eval_steps=2, max_steps=4)
    trainer = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, seed=2), args=args,
                           train_dataset=data, eval_dataset=data, compute_metrics=accuracy)
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(evals) == 2 and all("eval_teacher_accuracy" in entry for entry in evals)
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    for key in ("teacher_loss", "kl_student_teacher", "student_distill_loss", "teacher_learning_rate"):
        assert all(key in entry for entry in train_logs), key
    assert trainer.teacher_model.training  # back to training mode after the evaluations
