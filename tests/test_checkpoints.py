"""Checkpoints hold the teacher's state; resuming restores it; `save_model` writes the student alone."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset


class StopAfter(TrainerCallback):
    """Interrupt training after `steps` optimizer steps, as a crash or a pre-emption would."""

    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True


def build(tmp_path, **overrides):
    student, teacher = tiny_bert(seed=1, dropout=0.1), tiny_bert(layers=3, hidden=24, seed=2, dropout=0.1)
    args = make_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, **overrides)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(48))
    return trainer, student, teacher


@pytest.mark.parametrize("overrides", [
    {"prokt_constraint": "dual", "dual_lr": 5.0},
    {"hidden_distill_weight": 1.0, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4},
], ids=["dual", "hidden-accumulation"])
def test_four_steps_equal_two_plus_resume_plus_two(tmp_path, overrides):
    straight, straight_student, straight_teacher = build(tmp_path / "straight", **overrides)
    straight.train()

    first, _, _ = build(tmp_path / "resumed", **overrides)
    first.add_callback(StopAfter(2))
    first.train()
    checkpoint = tmp_path / "resumed" / "out" / "checkpoint-2"
    for name in ("teacher/model.safetensors", "teacher/config.json", "teacher_optimizer.pt",
                 "teacher_scheduler.pt", "prokt_state.json", "optimizer.pt", "model.safetensors"):
        assert (checkpoint / name).exists(), name

    # A fresh process would start from freshly built models: resuming must restore everything.
    resumed, resumed_student, resumed_teacher = build(tmp_path / "resumed", **overrides)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    for a, b in ((resumed_student, straight_student), (resumed_teacher, straight_teacher)):
        expected = parameters_of(b)
        for name, value in parameters_of(a).items():
            torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
    assert resumed.dual_beta == pytest.approx(straight.dual_beta)
    if straight.intermediate_distiller is not None:
        expected = parameters_of(straight.intermediate_distiller)
        for name, value in parameters_of(resumed.intermediate_distiller).items():
            torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
    assert resumed.teacher_lr_scheduler.last_epoch == straight.teacher_lr_scheduler.last_epoch == 4
    if overrides.get("prokt_constraint") == "dual":
        assert json.loads((checkpoint / "prokt_state.json").read_text())["dual_beta"] != pytest.approx(0.5)


def test_resume_refuses_a_checkpoint_without_teacher_state(tmp_path):
    kd, _, _ = build(tmp_path / "kd", strategy="kd")
    kd.add_callback(StopAfter(2))
    kd.train()
    prokt, student, teacher = build(tmp_path / "prokt")
    before = parameters_of(teacher)
    with pytest.raises(ValueError, match="teacher"):
        prokt.train(resume_from_checkpoint=str(tmp_path / "kd" / "out" / "checkpoint-2"))
    assert all(torch.equal(p, before[n]) for n, p in parameters_of(teacher).items())


def test_saved_student_is_a_plain_checkpoint(tmp_path, local_tokenizer):
    trainer, student, teacher = build(tmp_path, hidden_distill_weight=1.0, embedding_distill_weight=1.0)
    trainer.processing_class = local_tokenizer
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    saved_keys = set(load_file(out / "model.safetensors"))
    assert saved_keys == set(student.state_dict())
    assert not any("proj" in key for key in saved_keys)
    assert not (out / "teacher").exists()

    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert type(reloaded) is type(student)
    for name, value in parameters_of(student).items():
        assert torch.equal(parameters_of(reloaded)[name], value), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("w1 w2")["input_ids"] == local_tokenizer("w1 w2")["input_ids"]
    assert os.listdir(out / "checkpoint-4" / "teacher")
