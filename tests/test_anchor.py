"""The teacher's anchor: the student's prediction in eval mode (no dropout) by default, as in METHOD.md,
or the detached logits of the student's training forward with ``prokt_anchor="train"``."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.test_exact_step import (
    STUDENT_LR,
    TEACHER_LR,
    assert_same_parameters,
    batch_of,
    kl,
    run_one_step,
    sgd_step,
)


def teacher_after_one_step(teacher, anchor_logits, batch, lam=0.4):
    """The teacher after one SGD step on (1 - lam) * CE + lam * KL(anchor || teacher) (teacher dropout off)."""
    teacher = copy.deepcopy(teacher)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    z_t = teacher(**inputs).logits
    sgd_step(teacher, (1 - lam) * F.cross_entropy(z_t, batch["labels"]) + lam * kl(anchor_logits, z_t), TEACHER_LR)
    return teacher


def eval_mode_logits(student, batch):
    student = copy.deepcopy(student).eval()
    with torch.no_grad():
        return student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture
def dropout_pair():
    """A student with dropout 0.3 (its train-mode prediction is noisy) and a teacher without dropout. The
    student's head is scaled up so that its predictions are far from uniform and dropout moves them."""
    student = tiny_bert(layers=1, hidden=8, seed=1, dropout=0.3)
    with torch.no_grad():
        student.classifier.weight.mul_(20.0)
    return student, tiny_bert(layers=2, hidden=16, seed=2)


def test_default_anchor_is_the_eval_mode_student(tmp_path, dropout_pair):
    student, teacher = dropout_pair
    data = toy_dataset(n=12, seed=3)
    batch = batch_of(data)
    expected_teacher = teacher_after_one_step(teacher, eval_mode_logits(student, batch), batch)

    trainer = run_one_step(tmp_path, student, teacher, data)

    assert trainer.args.prokt_anchor == "eval"
    assert_same_parameters(teacher, expected_teacher)
    assert student.training  # the anchor's eval-mode forward leaves the student in train mode


def test_train_anchor_reuses_the_noisy_training_forward(tmp_path, dropout_pair):
    student, teacher = dropout_pair
    initial_teacher = copy.deepcopy(teacher)
    data = toy_dataset(n=12, seed=3)
    batch = batch_of(data)
    eval_anchor_teacher = teacher_after_one_step(teacher, eval_mode_logits(student, batch), batch)
    captured = {}

    def capture_training_forward(module, args, kwargs, output):
        if module.training and "logits" not in captured:
            captured.update(logits=output.logits.detach(), input_ids=kwargs["input_ids"])

    hook = student.register_forward_hook(capture_training_forward, with_kwargs=True)
    run_one_step(tmp_path, student, teacher, data, prokt_anchor="train")
    hook.remove()

    # The Trainer shuffled the batch: put the dataset's rows in the order the student saw them.
    order = [int((batch["input_ids"] == row).all(-1).nonzero()[0]) for row in captured["input_ids"]]
    seen_batch = {k: v[order] for k, v in batch.items()}
    expected_teacher = teacher_after_one_step(initial_teacher, captured["logits"], seen_batch)
    assert_same_parameters(teacher, expected_teacher)
    differences = [(p - q).abs().max().item() for p, q in zip(teacher.parameters(), eval_anchor_teacher.parameters())]
    assert max(differences) > 1e-4  # dropout in the anchor changes the teacher's step


def test_eval_anchor_under_accumulation_equals_one_big_batch(tmp_path):
    """Under gradient accumulation the window's graph-free student forwards are in eval mode too: with dropout
    in the student, 2 x 6 accumulated equals 1 x 12 for the teacher."""
    data = toy_dataset(n=12, seed=3)
    teachers = []
    for batch_size, accumulation in ((12, 1), (6, 2)):
        student = tiny_bert(layers=1, hidden=8, seed=1, dropout=0.3)
        teacher = tiny_bert(layers=2, hidden=16, seed=2)
        args = make_args(tmp_path / f"b{batch_size}", optim="sgd", lr_scheduler_type="constant", weight_decay=0.0,
                         max_grad_norm=0.0, learning_rate=STUDENT_LR, teacher_learning_rate=TEACHER_LR, max_steps=1,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation)
        ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data).train()
        teachers.append(teacher)
    assert_same_parameters(teachers[1], teachers[0])


def test_prokt_anchor_is_validated(tmp_path):
    with pytest.raises(ValueError, match="prokt_anchor.*'eval' or 'train'"):
        ProKTTrainingArguments(output_dir=str(tmp_path), prokt_anchor="dropout", report_to=[])
