import math

import pytest
import torch

from hf_prokt import losses


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kl_by_hand(target_rows, rows, temperature=1.0):
    total = 0.0
    for t_row, row in zip(target_rows, rows):
        p = softmax([v / temperature for v in t_row])
        q = softmax([v / temperature for v in row])
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total / len(rows)


TARGET = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
OTHER = [[1.0, 1.0, 0.0], [-1.0, 2.0, 0.5]]


def test_kl_matches_hand_computation_and_is_not_symmetric():
    kl = losses.kl_divergence(torch.tensor(TARGET), torch.tensor(OTHER))
    assert kl.item() == pytest.approx(kl_by_hand(TARGET, OTHER), rel=1e-6)
    reverse = losses.kl_divergence(torch.tensor(OTHER), torch.tensor(TARGET))
    assert reverse.item() == pytest.approx(kl_by_hand(OTHER, TARGET), rel=1e-6)
    assert abs(kl.item() - reverse.item()) > 1e-3


def test_kl_with_temperature_and_t_squared_scaling():
    value = losses.output_matching_loss(torch.tensor(TARGET), torch.tensor(OTHER), temperature=2.0)
    assert value.item() == pytest.approx(4.0 * kl_by_hand(TARGET, OTHER, 2.0), rel=1e-6)


def test_kl_is_fp32_for_half_inputs():
    kl = losses.kl_divergence(torch.tensor(TARGET).bfloat16(), torch.tensor(OTHER).bfloat16())
    assert kl.dtype == torch.float32


def test_student_loss_mixes_distillation_and_labels():
    student = torch.tensor(OTHER, requires_grad=True)
    labels = torch.tensor([0, 2])
    loss, parts = losses.student_loss(student, torch.tensor(TARGET), labels, alpha=0.25, temperature=1.0)
    ce = -(math.log(softmax(OTHER[0])[0]) + math.log(softmax(OTHER[1])[2])) / 2
    assert loss.item() == pytest.approx(0.25 * kl_by_hand(TARGET, OTHER) + 0.75 * ce, rel=1e-6)
    assert parts["task_loss"].item() == pytest.approx(ce, rel=1e-6)
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_student_loss_with_alpha_one_needs_no_labels():
    loss, parts = losses.student_loss(torch.tensor(OTHER), torch.tensor(TARGET), None, alpha=1.0, temperature=1.0)
    assert set(parts) == {"distill_loss"}
    assert loss.item() == pytest.approx(kl_by_hand(TARGET, OTHER), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        losses.student_loss(torch.tensor(OTHER), torch.tensor(TARGET), None, alpha=0.5, temperature=1.0)


def test_teacher_penalty_loss_pulls_teacher_towards_student():
    teacher = torch.tensor(OTHER, requires_grad=True)
    student = torch.tensor(TARGET)
    labels = torch.tensor([1, 1])
    loss, proximity = losses.teacher_penalty_loss(teacher, student, labels, move_back_weight=0.4, temperature=1.0)
    ce = -(math.log(softmax(OTHER[0])[1]) + math.log(softmax(OTHER[1])[1])) / 2
    # The student is the target distribution: KL(p_S || p_T).
    assert proximity.item() == pytest.approx(kl_by_hand(TARGET, OTHER), rel=1e-6)
    assert loss.item() == pytest.approx(0.6 * ce + 0.4 * kl_by_hand(TARGET, OTHER), rel=1e-6)
    loss.backward()
    assert teacher.grad is not None and not proximity.requires_grad


def test_teacher_dual_loss_and_ascent():
    teacher, student, labels = torch.tensor(OTHER), torch.tensor(TARGET), torch.tensor([0, 1])
    loss, proximity = losses.teacher_dual_loss(teacher, student, labels, beta=2.0, epsilon=0.1, temperature=1.0)
    task = losses.task_loss(teacher, labels)
    assert loss.item() == pytest.approx(task.item() + 2.0 * (proximity.item() - 0.1), rel=1e-6)
    assert losses.dual_ascent(1.0, proximity=0.3, epsilon=0.1, step_size=0.5) == pytest.approx(1.1)
    assert losses.dual_ascent(0.05, proximity=0.0, epsilon=0.2, step_size=1.0) == 0.0


def test_regression_uses_mse_everywhere():
    teacher = torch.tensor([[0.5], [2.0]])
    student = torch.tensor([[1.0], [1.0]])
    labels = torch.tensor([0.0, 3.0])
    assert losses.is_regression(student)
    assert losses.output_matching_loss(teacher, student).item() == pytest.approx((0.25 + 1.0) / 2)
    assert losses.task_loss(student, labels).item() == pytest.approx((1.0 + 4.0) / 2)
    loss, proximity = losses.teacher_penalty_loss(teacher, student, labels, 0.5, 1.0)
    assert proximity.item() == pytest.approx(0.625)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2 + 0.5 * 0.625)


def test_masked_mse_ignores_padding():
    prediction = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert losses.masked_mse(prediction, target, mask).item() == pytest.approx((1 + 1 + 9 + 9) / 4)
    assert losses.masked_mse(prediction, target).item() == pytest.approx((2 + 18 + 20000) / 6)


def test_mismatched_outputs_and_float_labels_are_named():
    with pytest.raises(ValueError, match="different shapes"):
        losses.output_matching_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="multi-label"):
        losses.task_loss(torch.zeros(2, 3), torch.zeros(2, 3))
