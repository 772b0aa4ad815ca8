"""One `train()` step of ProKT equals the update computed by hand from METHOD's four steps."""

import copy

import pytest
import torch
import torch.nn.functional as F

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset

STUDENT_LR, TEACHER_LR = 0.5, 0.3


def kl(target_logits, logits):
    """KL(softmax(target) || softmax(logits)), written independently of hf_prokt.losses."""
    p = target_logits.softmax(-1)
    return (p * (p.log() - logits.log_softmax(-1))).sum(-1).mean()


def sgd_step(model, loss, lr):
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            if g is not None:
                p -= lr * g


def hand_computed_prokt_step(student, teacher, batch, lam=0.4, target="updated", alpha=1.0,
                             dual_beta=None, epsilon=0.0):
    """Both models after one ProKT step, following METHOD.md literally (dropout is off)."""
    student, teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    labels = batch["labels"]
    # 1. student prediction, a target for the teacher
    with torch.no_grad():
        z_s = student(**inputs).logits
    # 2. teacher step
    z_t = teacher(**inputs).logits
    if dual_beta is None:
        teacher_loss = (1 - lam) * F.cross_entropy(z_t, labels) + lam * kl(z_s, z_t)
    else:
        teacher_loss = F.cross_entropy(z_t, labels) + dual_beta * (kl(z_s, z_t) - epsilon)
    stale = z_t.detach()
    sgd_step(teacher, teacher_loss, TEACHER_LR)
    # 3. local target: the teacher after its update, no graph
    with torch.no_grad():
        z_t_new = teacher(**inputs).logits if target == "updated" else stale
    # 4. student step
    z_s = student(**inputs).logits
    student_loss = alpha * kl(z_t_new, z_s) + (1 - alpha) * F.cross_entropy(z_s, labels)
    sgd_step(student, student_loss, STUDENT_LR)
    return student, teacher


def run_one_step(tmp_path, student, teacher, data, **overrides):
    args = make_args(tmp_path, **{
        "optim": "sgd", "lr_scheduler_type": "constant", "weight_decay": 0.0, "max_grad_norm": 0.0,
        "learning_rate": STUDENT_LR, "teacher_learning_rate": TEACHER_LR, "max_steps": 1,
        "per_device_train_batch_size": len(data), **overrides,
    })
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    return trainer


def batch_of(data):
    return {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask", "labels")}


def assert_same_parameters(model, reference, atol=1e-5):
    expected = parameters_of(reference)
    for name, value in parameters_of(model).items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(
    "overrides, hand_kwargs",
    [
        ({}, {}),
        ({"prokt_lambda": 0.7, "distill_alpha": 0.6}, {"lam": 0.7, "alpha": 0.6}),
        ({"prokt_target": "stale"}, {"target": "stale"}),
        ({"prokt_constraint": "dual", "dual_init": 1.5, "prokt_epsilon": 0.05}, {"dual_beta": 1.5, "epsilon": 0.05}),
    ],
    ids=["default", "lambda-alpha", "stale", "dual"],
)
def test_one_train_step_equals_hand_computed_update(tmp_path, overrides, hand_kwargs):
    student, teacher = tiny_bert(layers=1, hidden=8, seed=1), tiny_bert(layers=2, hidden=16, seed=2)
    data = toy_dataset(n=12, seed=3)
    expected_student, expected_teacher = hand_computed_prokt_step(student, teacher, batch_of(data), **hand_kwargs)

    run_one_step(tmp_path, student, teacher, data, **overrides)

    assert_same_parameters(teacher, expected_teacher)
    assert_same_parameters(student, expected_student)


def test_student_learns_from_the_updated_not_the_stale_teacher(tmp_path):
    """The two targets give measurably different students: the test above can tell them apart."""
    student, teacher = tiny_bert(layers=1, hidden=8, seed=1), tiny_bert(layers=2, hidden=16, seed=2)
    data = toy_dataset(n=12, seed=3)
    stale_student, _ = hand_computed_prokt_step(student, teacher, batch_of(data), target="stale")
    run_one_step(tmp_path, student, teacher, data)
    differences = [
        (p - q).abs().max().item()
        for p, q in zip(student.parameters(), stale_student.parameters())
    ]
    assert max(differences) > 1e-5


def test_dual_multiplier_follows_the_constraint(tmp_path):
    student, teacher = tiny_bert(layers=1, hidden=8, seed=1), tiny_bert(layers=2, hidden=16, seed=2)
    data = toy_dataset(n=12, seed=3)
    batch = batch_of(data)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        proximity = kl(student(**inputs).logits, teacher(**inputs).logits).item()
    trainer = run_one_step(tmp_path, student, teacher, data, prokt_constraint="dual", dual_init=0.5,
                           prokt_epsilon=0.0, dual_lr=2.0)
    assert trainer.dual_beta == pytest.approx(0.5 + 2.0 * proximity, rel=1e-4)
    logged = [entry for entry in trainer.state.log_history if "prokt_beta" in entry]
    assert logged and logged[0]["prokt_beta"] == pytest.approx(trainer.dual_beta)


def test_regression_step_uses_mse_in_both_terms(tmp_path):
    """num_labels == 1: MSE to labels and between the two models' outputs replaces CE and KL."""
    student = tiny_bert(layers=1, hidden=8, seed=1, num_labels=1)
    teacher = tiny_bert(layers=2, hidden=16, seed=2, num_labels=1)
    data = toy_dataset(n=12, seed=3, regression=True)
    batch = batch_of(data)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    labels = batch["labels"].float()
    expected_student, expected_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    with torch.no_grad():
        z_s = expected_student(**inputs).logits
    z_t = expected_teacher(**inputs).logits
    teacher_loss = 0.6 * F.mse_loss(z_t.squeeze(-1), labels) + 0.4 * F.mse_loss(z_t, z_s)
    sgd_step(expected_teacher, teacher_loss, TEACHER_LR)
    with torch.no_grad():
        target = expected_teacher(**inputs).logits
    sgd_step(expected_student, 0.5 * F.mse_loss(expected_student(**inputs).logits, target)
             + 0.5 * F.mse_loss(expected_student(**inputs).logits.squeeze(-1), labels), STUDENT_LR)

    run_one_step(tmp_path, student, teacher, data, distill_alpha=0.5)

    assert_same_parameters(teacher, expected_teacher)
    assert_same_parameters(student, expected_student)
