"""Ramps of the two weights: ``distill_alpha_warmup_steps`` (the student's alpha from 0 to distill_alpha) and
``prokt_lambda_warmup_steps`` (the teacher's lambda from 0 to prokt_lambda), step by step against the hand
computation of tests/test_exact_step.py."""

import pytest

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.test_exact_step import assert_same_parameters, batch_of, hand_computed_prokt_step, run_one_step


def test_two_steps_use_the_ramped_weights_of_each_step(tmp_path):
    """Ramps over 2 steps: step 0 trains both models on labels alone (alpha 0, lambda 0), step 1 with half the
    weights. The batch is the whole training set, so both steps see the same examples."""
    student, teacher = tiny_bert(layers=1, hidden=8, seed=1), tiny_bert(layers=2, hidden=16, seed=2)
    data = toy_dataset(n=12, seed=3)
    batch = batch_of(data)
    expected_student, expected_teacher = hand_computed_prokt_step(student, teacher, batch, lam=0.0, alpha=0.0)
    expected_student, expected_teacher = hand_computed_prokt_step(expected_student, expected_teacher, batch,
                                                                  lam=0.35, alpha=0.3)

    trainer = run_one_step(tmp_path, student, teacher, data, max_steps=2, prokt_lambda=0.7, distill_alpha=0.6,
                           distill_alpha_warmup_steps=2, prokt_lambda_warmup_steps=2)

    assert_same_parameters(teacher, expected_teacher)
    assert_same_parameters(student, expected_student)
    logged = [(e["distill_alpha"], e["prokt_lambda"]) for e in trainer.state.log_history if "distill_alpha" in e]
    assert logged == [(0.0, 0.0), (0.3, 0.35)]


def test_without_ramps_the_first_step_is_not_the_labels_only_step(tmp_path):
    """The test above can fail: without the ramps, step 0 is not the labels-only update."""
    student, teacher = tiny_bert(layers=1, hidden=8, seed=1), tiny_bert(layers=2, hidden=16, seed=2)
    data = toy_dataset(n=12, seed=3)
    labels_only_student, _ = hand_computed_prokt_step(student, teacher, batch_of(data), lam=0.0, alpha=0.0)
    run_one_step(tmp_path, student, teacher, data)
    with pytest.raises(AssertionError):
        assert_same_parameters(student, labels_only_student)


def test_kd_alpha_ramp_reaches_distill_alpha_and_stays(tmp_path):
    trainer = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(seed=2), train_dataset=toy_dataset(n=16),
                           args=make_args(tmp_path, strategy="kd", max_steps=6, distill_alpha_warmup_steps=4))
    trainer.train()
    alphas = [e["distill_alpha"] for e in trainer.state.log_history if "distill_alpha" in e]
    assert alphas == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert trainer.args.alpha_at(100) == 1.0 and trainer.args.lambda_at(0) == trainer.args.prokt_lambda


@pytest.mark.parametrize("overrides, message", [
    (dict(distill_alpha_warmup_steps=-1), "distill_alpha_warmup_steps"),
    (dict(prokt_lambda_warmup_steps=2.5), "prokt_lambda_warmup_steps"),
    (dict(strategy="finetune", distill_alpha_warmup_steps=10), "strategy is 'finetune'"),
    (dict(strategy="kd", prokt_lambda_warmup_steps=10), "only strategy='prokt'"),
    (dict(prokt_constraint="dual", prokt_lambda_warmup_steps=10), "prokt_constraint='penalty'"),
])
def test_ramps_that_cannot_apply_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        ProKTTrainingArguments(output_dir=str(tmp_path), **overrides)


def test_an_alpha_ramp_needs_labels_even_at_alpha_1(tmp_path):
    unlabelled = toy_dataset(n=16).remove_columns("labels")
    args = make_args(tmp_path, strategy="kd", distill_alpha_warmup_steps=3)
    with pytest.raises(ValueError, match="distill_alpha_warmup_steps"):
        ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(seed=2), args=args, train_dataset=unlabelled)
