"""`hf_prokt.scripting.final_evaluation`: the evaluation of the last training step is reused, never stale."""

from __future__ import annotations

import pytest

from hf_prokt import ProKTTrainer
from hf_prokt.scripting.final_evaluation import final_evaluation
from tests.conftest import make_args, tiny_bert, toy_dataset


def trained(tmp_path, **overrides):
    """A ProKT run of 4 steps with an evaluation every ``eval_steps``; returns it with a count of the
    evaluations run after training."""
    trainer = ProKTTrainer(model=tiny_bert(1), teacher_model=tiny_bert(2, seed=1), train_dataset=toy_dataset(32),
                           eval_dataset=toy_dataset(16, seed=1),
                           args=make_args(tmp_path, **{"eval_strategy": "steps", **overrides}))
    trainer.train()
    calls = []
    evaluate = trainer.evaluate
    trainer.evaluate = lambda *args, **kwargs: calls.append(1) or evaluate(*args, **kwargs)
    return trainer, calls, evaluate


def test_the_last_step_evaluation_is_reused_and_equals_a_new_one(tmp_path):
    trainer, calls, evaluate = trained(tmp_path, eval_steps=2)
    metrics = final_evaluation(trainer)
    assert calls == []  # step 4 was evaluated: nothing is run again
    again = evaluate()
    assert metrics["eval_loss"] == pytest.approx(again["eval_loss"], abs=1e-6)
    assert metrics["eval_teacher_loss"] == pytest.approx(again["eval_teacher_loss"], abs=1e-6)
    assert metrics["epoch"] == again["epoch"]


@pytest.mark.parametrize("case", ["not evaluated in training", "best model reloaded", "no training"])
def test_otherwise_the_model_is_evaluated(tmp_path, case):
    overrides = {"not evaluated in training": dict(eval_strategy="no"),
                 "best model reloaded": dict(eval_steps=2, save_strategy="steps", save_steps=2,
                                             load_best_model_at_end=True),
                 "no training": dict(eval_steps=2)}[case]
    trainer, calls, _ = trained(tmp_path, **overrides)
    metrics = final_evaluation(trainer, trained=case != "no training")
    assert calls == [1] and "eval_loss" in metrics
