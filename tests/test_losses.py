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


# ---------------------------------------------------------------- per-token logits [B, L, C] (token classification)

TOKEN_LABELS = torch.tensor([[0, 2, -100, 1], [1, -100, -100, -100]])  # -100: padding and ignored sub-tokens
TOKEN_ATTENTION = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


def token_logits(seed):
    return torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(seed))


def rows_with_labels(logits):
    """The labelled tokens' rows, as plain lists: the per-token losses are the [B, C] losses on these."""
    keep = TOKEN_LABELS != -100
    return logits[keep].tolist(), TOKEN_LABELS[keep].tolist()


def ce_by_hand(rows, labels):
    return -sum(math.log(softmax(row)[label]) for row, label in zip(rows, labels)) / len(rows)


def test_per_token_losses_average_over_the_labelled_tokens_only():
    student, teacher = token_logits(0), token_logits(1)
    student_rows, labels = rows_with_labels(student)
    teacher_rows, _ = rows_with_labels(teacher)
    assert len(labels) == 4
    loss, parts = losses.student_loss(student, teacher, TOKEN_LABELS, alpha=0.3, temperature=2.0)
    assert parts["distill_loss"].item() == pytest.approx(4.0 * kl_by_hand(teacher_rows, student_rows, 2.0), rel=1e-5)
    assert parts["task_loss"].item() == pytest.approx(ce_by_hand(student_rows, labels), rel=1e-5)
    penalty, proximity = losses.teacher_penalty_loss(teacher, student, TOKEN_LABELS, 0.4, 1.0)
    assert proximity.item() == pytest.approx(kl_by_hand(student_rows, teacher_rows), rel=1e-5)
    assert penalty.item() == pytest.approx(0.6 * ce_by_hand(teacher_rows, labels) + 0.4 * proximity.item(), rel=1e-5)
    dual, _ = losses.teacher_dual_loss(teacher, student, TOKEN_LABELS, beta=2.0, epsilon=0.1, temperature=1.0)
    assert dual.item() == pytest.approx(ce_by_hand(teacher_rows, labels) + 2.0 * (proximity.item() - 0.1), rel=1e-5)


def test_logits_of_unlabelled_tokens_change_neither_the_loss_nor_the_gradient():
    ignored = (TOKEN_LABELS == -100).unsqueeze(-1).expand(2, 4, 3)
    results = []
    for shift in (0.0, 5.0):  # new logits at the ignored positions only, in both models
        student = (token_logits(0) + shift * token_logits(2) * ignored).requires_grad_()
        teacher = (token_logits(1) + shift * token_logits(3) * ignored).requires_grad_()
        loss, _ = losses.student_loss(student, teacher.detach(), TOKEN_LABELS, alpha=0.5, temperature=1.0)
        teacher_loss, _ = losses.teacher_penalty_loss(teacher, student.detach(), TOKEN_LABELS, 0.4, 1.0)
        (loss + teacher_loss).backward()
        assert (student.grad[ignored] == 0).all() and (teacher.grad[ignored] == 0).all()
        results.append((loss.item(), teacher_loss.item(), student.grad, teacher.grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)
    torch.testing.assert_close(results[0][2], results[1][2])
    torch.testing.assert_close(results[0][3], results[1][3])


def test_per_token_task_loss_equals_the_token_classifiers_own_loss_with_label_smoothing():
    logits = token_logits(0)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 3), TOKEN_LABELS.view(-1), label_smoothing=0.1)
    assert losses.task_loss(logits, TOKEN_LABELS, label_smoothing=0.1).item() == pytest.approx(expected.item())


def test_a_batch_without_any_labelled_token_gives_zero_not_nan():
    logits, nothing = token_logits(0).requires_grad_(), torch.full((2, 4), -100)
    loss, parts = losses.student_loss(logits, token_logits(1), nothing, alpha=0.5, temperature=1.0)
    assert loss.item() == 0.0 and parts["task_loss"].item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()


def test_per_token_kd_without_labels_averages_over_the_real_tokens():
    student, teacher = token_logits(0), token_logits(1)
    keep = TOKEN_ATTENTION.bool()
    loss, _ = losses.student_loss(student, teacher, None, alpha=1.0, temperature=1.0, attention_mask=TOKEN_ATTENTION)
    assert loss.item() == pytest.approx(kl_by_hand(teacher[keep].tolist(), student[keep].tolist()), rel=1e-5)
    everywhere, _ = losses.student_loss(student, teacher, None, alpha=1.0, temperature=1.0)
    assert everywhere.item() == pytest.approx(kl_by_hand(teacher.view(-1, 3).tolist(), student.view(-1, 3).tolist()),
                                              rel=1e-5)


def test_per_token_labels_of_the_wrong_shape_and_token_regression_are_refused():
    with pytest.raises(ValueError, match=r"labels of shape \[2, 4\].*got \[2, 3\]"):
        losses.student_loss(token_logits(0), token_logits(1), TOKEN_LABELS[:, :3], alpha=0.5, temperature=1.0)
    with pytest.raises(ValueError, match="token-level regression"):
        losses.task_loss(torch.zeros(2, 4, 1), TOKEN_LABELS.float())
