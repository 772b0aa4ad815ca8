"""The chunked LM distillation losses (`hf_prokt.losses.chunked`) against full-logits computations.

Tolerances: float64 inputs agree with the plain full-logits reference to 1e-10 (values and every
gradient; observed ~1e-15), float32 inputs to rtol 1e-5 / atol 1e-6 (observed ~1e-7), bfloat16
inputs to rtol 2e-2 / atol 1e-3 on the gradients (bf16 matmuls) and 1e-4 on the fp32 losses.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_prokt import losses
from hf_prokt.losses.chunked import (
    DEFAULT_CHUNK_BYTES,
    ChunkedLosses,
    chunked_distillation_losses,
    chunked_prokt_losses,
    chunked_student_loss,
    chunked_teacher_loss,
    default_chunk_size,
    plain_distillation_losses,
)

N, V, H_S, H_T = 13, 11, 5, 7
CHUNK_SIZES = [1, 4, 13, 50, None]  # 4 does not divide 13 rows; 50 is more than the rows
TIGHT = dict(rtol=0, atol=1e-10)
FP32 = dict(rtol=1e-5, atol=1e-6)
ALL_TERMS = dict(student_kl_weight=0.3, student_ce_weight=0.7, teacher_ce_weight=0.6, teacher_kl_weight=0.4)
NAMES = ("student_hidden", "student_weight", "student_bias", "teacher_hidden", "teacher_weight", "teacher_bias")


def make_inputs(dtype=torch.float64, seed=0, n=N, bias=True, scale=1.0):
    """The six tensors of both sides, leaves requiring grad, and labels with two -100 rows."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype).requires_grad_()

    tensors = {
        "student_hidden": leaf(n, H_S), "student_weight": leaf(V, H_S), "student_bias": leaf(V) if bias else None,
        "teacher_hidden": leaf(n, H_T), "teacher_weight": leaf(V, H_T), "teacher_bias": leaf(V) if bias else None,
    }
    labels = torch.randint(0, V, (n,), generator=generator)
    labels[[2, n - 1]] = -100
    return tensors, labels


def clone(tensors):
    return {k: v.detach().clone().requires_grad_(v.requires_grad) if v is not None else None
            for k, v in tensors.items()}


def call(function, tensors, labels, **kwargs):
    t = tensors
    return function(t["student_hidden"], t["student_weight"], t["teacher_hidden"], t["teacher_weight"], labels,
                    student_bias=t["student_bias"], teacher_bias=t["teacher_bias"], **kwargs)


def backward(result: ChunkedLosses, student_scale=1.0, teacher_scale=1.0):
    total = 0
    if result.student_loss is not None:
        total = total + student_scale * result.student_loss
    if result.teacher_loss is not None:
        total = total + teacher_scale * result.teacher_loss
    total.backward()


def grads(tensors):
    return {k: (v.grad if v is not None else None) for k, v in tensors.items()}


def assert_same(chunked: ChunkedLosses, plain: ChunkedLosses, chunked_tensors, plain_tensors, **tol):
    for name in ("student_loss", "teacher_loss"):
        a, b = getattr(chunked, name), getattr(plain, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, **tol, msg=name)
    assert chunked.parts.keys() == plain.parts.keys()
    for name in chunked.parts:
        torch.testing.assert_close(chunked.parts[name], plain.parts[name], **tol, msg=name)
        assert not chunked.parts[name].requires_grad
    for name in NAMES:
        a, b = grads(chunked_tensors)[name], grads(plain_tensors)[name]
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype, name
            torch.testing.assert_close(a, b, **tol, msg=name)


# ------------------------------------------------------------------------- against the plain reference


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("temperature, smoothing", [(1.0, 0.0), (2.0, 0.1), (0.5, 0.0)])
def test_every_term_and_gradient_equals_the_full_logits_computation(chunk_size, temperature, smoothing):
    tensors, labels = make_inputs()
    reference = clone(tensors)
    kwargs = dict(ALL_TERMS, temperature=temperature, label_smoothing=smoothing, teacher_label_smoothing=smoothing / 2)
    chunked = call(chunked_distillation_losses, tensors, labels, chunk_size=chunk_size, **kwargs)
    plain = call(plain_distillation_losses, reference, labels, **kwargs)
    assert chunked.student_loss.dtype == torch.float64 and set(chunked.parts) == set(plain.parts) == {
        "distill_loss", "task_loss", "teacher_task_loss", "proximity"}
    backward(chunked, 2.0, 3.0)  # the backward scales the stored gradients by the incoming ones
    backward(plain, 2.0, 3.0)
    assert_same(chunked, plain, tensors, reference, **TIGHT)


@pytest.mark.parametrize("chunk_size", [3, 8, None])
def test_float32_inputs(chunk_size):
    tensors, labels = make_inputs(torch.float32, scale=2.0)
    reference = clone(tensors)
    kwargs = dict(ALL_TERMS, temperature=1.5, label_smoothing=0.1)
    chunked = call(chunked_distillation_losses, tensors, labels, chunk_size=chunk_size, **kwargs)
    plain = call(plain_distillation_losses, reference, labels, **kwargs)
    assert chunked.student_loss.dtype == chunked.teacher_loss.dtype == torch.float32
    backward(chunked)
    backward(plain)
    assert_same(chunked, plain, tensors, reference, **FP32)


def test_the_result_does_not_depend_on_the_chunk_size():
    results = []
    for chunk_size in CHUNK_SIZES:
        tensors, labels = make_inputs(seed=3)
        result = call(chunked_distillation_losses, tensors, labels, chunk_size=chunk_size, **ALL_TERMS)
        backward(result)
        results.append((result, tensors))
    first, first_tensors = results[0]
    for result, tensors in results[1:]:
        assert_same(result, first, tensors, first_tensors, **TIGHT)


# ------------------------------------------------------------------------- by hand


def test_hand_computed_case():
    """V = 3, 2 rows, identity lm_heads so the hidden states are the logits; T = 1, alpha = lam = 0.5.

    student p_S: row 0 (1/2, 1/4, 1/4), row 1 (1/3, 1/3, 1/3); teacher p_T: row 0 (1/4, 1/2, 1/4),
    row 1 (1/2, 1/4, 1/4); labels (0, 2).
    KL(p_T || p_S): row 0 = 1/4 ln(1/2) + 1/2 ln 2 = ln(2)/4; row 1 = 1/2 ln(3/2) + 1/2 ln(3/4) = ln(9/8)/2.
    KL(p_S || p_T): row 0 = 1/2 ln 2 + 1/4 ln(1/2) = ln(2)/4; row 1 = 1/3 ln(2/3) + 2/3 ln(4/3) = ln(32/27)/3.
    CE student: -ln(1/2) = ln 2, -ln(1/3) = ln 3; CE teacher: -ln(1/4) = ln 4, -ln(1/4) = ln 4.
    Gradient in the student logits, per row / 2 rows: 1/2 (p_S - p_T) + 1/2 (p_S - onehot):
    row 0: 1/2 (1/4, -1/4, 0) + 1/2 (-1/2, 1/4, 1/4) = (-1/8, 0, 1/8) -> (-1/16, 0, 1/16);
    row 1: 1/2 (-1/6, 1/12, 1/12) + 1/2 (1/3, 1/3, -2/3) = (1/12, 5/24, -7/24) -> (1/24, 5/48, -7/48).
    In the teacher logits: 1/2 (p_T - onehot) + 1/2 (p_T - p_S):
    row 0: 1/2 (-3/4, 1/2, 1/4) + 1/2 (-1/4, 1/4, 0) = (-1/2, 3/8, 1/8) -> (-1/4, 3/16, 1/16);
    row 1: 1/2 (1/2, 1/4, -3/4) + 1/2 (1/6, -1/12, -1/12) = (1/3, 1/12, -5/12) -> (1/6, 1/24, -5/24).
    """
    p_s = torch.tensor([[1 / 2, 1 / 4, 1 / 4], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    p_t = torch.tensor([[1 / 4, 1 / 2, 1 / 4], [1 / 2, 1 / 4, 1 / 4]], dtype=torch.float64)
    h_s, h_t = p_s.log().requires_grad_(), p_t.log().requires_grad_()
    eye = torch.eye(3, dtype=torch.float64)
    labels = torch.tensor([0, 2])
    for chunk_size in (1, 2):
        h_s.grad = h_t.grad = None
        result = chunked_prokt_losses(h_s, eye, h_t, eye, labels, alpha=0.5, move_back_weight=0.5,
                                      chunk_size=chunk_size)
        parts = {k: v.item() for k, v in result.parts.items()}
        assert parts["distill_loss"] == pytest.approx((math.log(2) / 4 + math.log(9 / 8) / 2) / 2, abs=1e-12)
        assert parts["proximity"] == pytest.approx((math.log(2) / 4 + math.log(32 / 27) / 3) / 2, abs=1e-12)
        assert parts["task_loss"] == pytest.approx((math.log(2) + math.log(3)) / 2, abs=1e-12)
        assert parts["teacher_task_loss"] == pytest.approx(math.log(4), abs=1e-12)
        assert result.student_loss.item() == pytest.approx(0.5 * parts["distill_loss"] + 0.5 * parts["task_loss"])
        assert result.teacher_loss.item() == pytest.approx(0.5 * parts["teacher_task_loss"] + 0.5 * parts["proximity"])
        (result.student_loss + result.teacher_loss).backward()
        expected_s = torch.tensor([[-1 / 16, 0, 1 / 16], [1 / 24, 5 / 48, -7 / 48]], dtype=torch.float64)
        expected_t = torch.tensor([[-1 / 4, 3 / 16, 1 / 16], [1 / 6, 1 / 24, -5 / 24]], dtype=torch.float64)
        torch.testing.assert_close(h_s.grad, expected_s, **TIGHT)  # identity head: d/dh = d/dz
        torch.testing.assert_close(h_t.grad, expected_t, **TIGHT)


def test_label_smoothing_by_hand():
    """CE with smoothing eps at p = (1/2, 1/4, 1/4), label 0: (1 - eps) ln 2 + eps * (ln 2 + 2 ln 4) / 3;
    gradient in the logits p - (1 - eps) onehot - eps / 3."""
    eps = 0.3
    logits = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log().requires_grad_()
    loss = chunked_distillation_losses(logits, torch.eye(3, dtype=torch.float64), labels=torch.tensor([0]),
                                       student_ce_weight=1.0, label_smoothing=eps).student_loss
    assert loss.item() == pytest.approx((1 - eps) * math.log(2) + eps * (math.log(2) + 2 * math.log(4)) / 3, abs=1e-12)
    loss.backward()
    expected = torch.tensor([[0.5 - (1 - eps) - eps / 3, 0.25 - eps / 3, 0.25 - eps / 3]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad, expected, **TIGHT)


# ------------------------------------------------------------------------- rows, normalisation, ends


def test_rows_labelled_minus_100_count_for_no_term():
    """The -100 rows change nothing: same values and gradients as with those rows removed, zero gradient there."""
    tensors, labels = make_inputs(seed=1)
    kept = labels != -100
    leaves = clone(tensors)
    result = call(chunked_distillation_losses, tensors, labels, chunk_size=4, **ALL_TERMS)
    backward(result)
    rows = {k: (v[kept] if k.endswith("hidden") else v) for k, v in leaves.items()}
    without = call(chunked_distillation_losses, rows, labels[kept], chunk_size=4, **ALL_TERMS)
    backward(without)
    torch.testing.assert_close(result.student_loss, without.student_loss, **TIGHT)
    torch.testing.assert_close(result.teacher_loss, without.teacher_loss, **TIGHT)
    for name in NAMES:
        torch.testing.assert_close(tensors[name].grad, leaves[name].grad, **TIGHT)
    assert tensors["student_hidden"].grad[~kept].abs().max() == 0


def test_no_row_counting_gives_zero_not_nan():
    tensors, labels = make_inputs()
    result = call(chunked_distillation_losses, tensors, torch.full_like(labels, -100), **ALL_TERMS)
    backward(result)
    assert result.student_loss.item() == result.teacher_loss.item() == 0.0
    assert all(g.abs().max() == 0 for g in grads(tensors).values())


@pytest.mark.parametrize("with_ignored", [False, True])
def test_num_items_halves_add_up_to_the_whole_batch(with_ignored):
    """Two half-batches normalised by the window's count of labelled rows sum to the full batch's loss and
    gradients (the Trainer's num_items_in_batch over gradient accumulation)."""
    tensors, labels = make_inputs(n=12, seed=2)
    if not with_ignored:
        labels = labels.clamp_min(0)
    total = int((labels != -100).sum())
    halves = clone(tensors)
    sums = {"student_loss": 0.0, "teacher_loss": 0.0}
    for rows in (slice(0, 6), slice(6, 12)):
        part = {k: (v[rows] if k.endswith("hidden") else v) for k, v in halves.items()}
        result = call(chunked_distillation_losses, part, labels[rows], num_items=torch.tensor(total), chunk_size=4,
                      **ALL_TERMS)
        backward(result)
        sums = {k: sums[k] + getattr(result, k).detach() for k in sums}
    reference = clone(tensors)
    full = call(chunked_distillation_losses, reference, labels, **ALL_TERMS)
    backward(full)
    torch.testing.assert_close(sums["student_loss"], full.student_loss.detach(), **TIGHT)
    torch.testing.assert_close(sums["teacher_loss"], full.teacher_loss.detach(), **TIGHT)
    for name in NAMES:
        torch.testing.assert_close(halves[name].grad, reference[name].grad, **TIGHT)


def test_num_items_divides_the_sum():
    tensors, labels = make_inputs()
    counted = int((labels != -100).sum())
    mean = call(chunked_distillation_losses, clone(tensors), labels, **ALL_TERMS)
    summed = call(chunked_distillation_losses, clone(tensors), labels, num_items=4, **ALL_TERMS)
    torch.testing.assert_close(summed.student_loss, mean.student_loss * counted / 4, **TIGHT)


def test_alpha_ends():
    """alpha 0: the cross-entropy alone, no teacher needed; alpha 1: the KL alone, no labels needed."""
    tensors, labels = make_inputs()
    h, w, b = (tensors[k] for k in ("student_hidden", "student_weight", "student_bias"))
    loss, parts = chunked_student_loss(h, w, None, None, labels, alpha=0.0, label_smoothing=0.1, student_bias=b,
                                       chunk_size=4)
    assert set(parts) == {"task_loss"}
    expected = F.cross_entropy(F.linear(h, w, b), labels, label_smoothing=0.1)  # mean over the labelled rows
    torch.testing.assert_close(loss, expected, **TIGHT)
    loss.backward()
    reference = [x.detach().clone().requires_grad_() for x in (h, w, b)]
    F.cross_entropy(F.linear(*reference), labels, label_smoothing=0.1).backward()
    for x, r in zip((h, w, b), reference):
        torch.testing.assert_close(x.grad, r.grad, **TIGHT)

    tensors, _ = make_inputs(seed=1)
    t = tensors
    loss, parts = chunked_student_loss(t["student_hidden"], t["student_weight"], t["teacher_hidden"],
                                       t["teacher_weight"], None, alpha=1.0, temperature=2.0, chunk_size=5)
    assert set(parts) == {"distill_loss"}
    z_s = F.linear(t["student_hidden"], t["student_weight"])
    z_t = F.linear(t["teacher_hidden"], t["teacher_weight"]).detach()
    torch.testing.assert_close(loss, losses.output_matching_loss(z_t, z_s, 2.0).double(), rtol=0, atol=1e-6)
    loss.backward()
    assert t["teacher_hidden"].grad is None and t["teacher_weight"].grad is None  # the teacher is the target


def test_wrappers_equal_the_library_losses_on_full_logits():
    """chunked_student_loss / chunked_teacher_loss / chunked_prokt_losses against hf_prokt.losses on [N, V] logits
    (every row labelled, as the classification path of those functions has no ignored rows)."""
    tensors, labels = make_inputs(torch.float32, scale=1.5)
    labels = labels.clamp_min(0)
    t = tensors
    z_s = F.linear(t["student_hidden"], t["student_weight"], t["student_bias"])
    z_t = F.linear(t["teacher_hidden"], t["teacher_weight"], t["teacher_bias"])
    args = (t["student_hidden"], t["student_weight"], t["teacher_hidden"], t["teacher_weight"], labels)
    biases = dict(student_bias=t["student_bias"], teacher_bias=t["teacher_bias"], chunk_size=4)

    loss, parts = chunked_student_loss(*args, alpha=0.3, temperature=2.0, label_smoothing=0.1, **biases)
    expected, expected_parts = losses.student_loss(z_s, z_t.detach(), labels, 0.3, 2.0, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected, **FP32)
    assert parts.keys() == expected_parts.keys()

    loss, proximity = chunked_teacher_loss(*args[2:4], *args[:2], labels, move_back_weight=0.4, temperature=2.0,
                                           **biases)
    expected, expected_proximity = losses.teacher_penalty_loss(z_t, z_s.detach(), labels, 0.4, 2.0)
    torch.testing.assert_close(loss, expected, **FP32)
    torch.testing.assert_close(proximity, expected_proximity, **FP32)

    both = chunked_prokt_losses(*args, alpha=0.3, move_back_weight=0.4, temperature=2.0, label_smoothing=0.1,
                                **biases)
    torch.testing.assert_close(both.student_loss, losses.student_loss(z_s, z_t.detach(), labels, 0.3, 2.0, 0.1)[0],
                               **FP32)
    torch.testing.assert_close(both.teacher_loss, expected, **FP32)


# ------------------------------------------------------------------------- gradients: where they go


def test_gradient_only_into_the_side_each_loss_trains():
    tensors, labels = make_inputs()
    result = call(chunked_distillation_losses, tensors, labels, **ALL_TERMS)
    result.student_loss.backward()
    assert all(tensors[k].grad is not None for k in NAMES[:3])
    assert all(tensors[k].grad is None for k in NAMES[3:])

    tensors, labels = make_inputs()
    result = call(chunked_distillation_losses, tensors, labels, **ALL_TERMS)
    result.teacher_loss.backward()
    assert all(tensors[k].grad is None for k in NAMES[:3])
    assert all(tensors[k].grad is not None for k in NAMES[3:])


def test_only_the_tensors_that_require_grad_get_one():
    """A frozen lm_head (weight and bias without grad) still passes the gradient to the hidden states."""
    tensors, labels = make_inputs()
    for name in ("student_weight", "student_bias"):
        tensors[name].requires_grad_(False)
    reference = clone(tensors)
    result = call(chunked_distillation_losses, tensors, labels, chunk_size=3, **ALL_TERMS)
    plain = call(plain_distillation_losses, reference, labels, **ALL_TERMS)
    backward(result)
    backward(plain)
    assert tensors["student_weight"].grad is None and tensors["student_bias"].grad is None
    assert_same(result, plain, tensors, reference, **TIGHT)


def test_tied_lm_head_weight_gets_both_contributions():
    """A GPT-2-style tied head: the lm_head weight is the input embedding, so its gradient is the embedding's
    (through the hidden states) plus the head's; autograd adds them."""

    class TinyTiedLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(V, H_S, dtype=torch.float64)
            self.mix = torch.nn.Linear(H_S, H_S, dtype=torch.float64)

        def forward(self, ids):
            return torch.tanh(self.mix(self.embedding(ids)))  # the last hidden states; lm_head = embedding.weight

    torch.manual_seed(0)
    ids = torch.randint(0, V, (N,))
    labels = torch.randint(0, V, (N,))
    teacher_hidden, teacher_weight = torch.randn(N, H_T, dtype=torch.float64), torch.randn(V, H_T, dtype=torch.float64)
    models = [TinyTiedLM(), TinyTiedLM()]
    models[1].load_state_dict(models[0].state_dict())
    for model, function, kwargs in ((models[0], chunked_distillation_losses, dict(chunk_size=4)),
                                    (models[1], plain_distillation_losses, {})):
        result = function(model(ids), model.embedding.weight, teacher_hidden, teacher_weight, labels,
                          student_kl_weight=0.5, student_ce_weight=0.5, temperature=2.0, **kwargs)
        result.student_loss.backward()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a.grad, b.grad, **TIGHT, msg=name)
    # the head's share is really there: the embedding's gradient reaches rows that no input id used
    unused = torch.ones(V, dtype=torch.bool)
    unused[ids] = False
    assert unused.any() and models[0].embedding.weight.grad[unused].abs().max() > 0


# ------------------------------------------------------------------------- dtypes


def test_bfloat16_inputs_are_computed_in_float32():
    tensors, labels = make_inputs(torch.bfloat16)
    reference = clone(tensors)
    kwargs = dict(ALL_TERMS, temperature=2.0, label_smoothing=0.1)
    chunked = call(chunked_distillation_losses, tensors, labels, chunk_size=4, **kwargs)
    plain = call(plain_distillation_losses, reference, labels, **kwargs)
    assert chunked.student_loss.dtype == chunked.teacher_loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in chunked.parts.values())
    torch.testing.assert_close(chunked.student_loss, plain.student_loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked.teacher_loss, plain.teacher_loss, rtol=1e-4, atol=1e-4)
    # in fp32 the terms are those of the bf16 logits upcast, not of bf16 arithmetic
    z_s = F.linear(tensors["student_hidden"], tensors["student_weight"], tensors["student_bias"]).double()
    ce = F.cross_entropy(z_s, labels, label_smoothing=0.1)
    assert chunked.parts["task_loss"].item() == pytest.approx(ce.item(), abs=1e-5)
    backward(chunked)
    backward(plain)
    for name in NAMES:
        assert tensors[name].grad.dtype == torch.bfloat16, name
        torch.testing.assert_close(tensors[name].grad, reference[name].grad, rtol=2e-2, atol=1e-3, msg=name)


def test_mixed_dtypes_and_autocast():
    """bf16 hidden states with an fp32 head compute in fp32 (promotion), gradients in each input's dtype; under
    CPU autocast the products run in bf16, as the model's own lm_head would."""
    tensors, labels = make_inputs(torch.float32)
    tensors["student_hidden"] = tensors["student_hidden"].detach().bfloat16().requires_grad_()
    reference = clone(tensors)
    chunked = call(chunked_distillation_losses, tensors, labels, chunk_size=4, **ALL_TERMS)
    plain = call(plain_distillation_losses, reference, labels, **ALL_TERMS)
    backward(chunked)
    backward(plain)
    assert tensors["student_hidden"].grad.dtype == torch.bfloat16
    assert tensors["student_weight"].grad.dtype == torch.float32
    assert_same(chunked, plain, tensors, reference, rtol=1e-4, atol=1e-5)

    tensors, labels = make_inputs(torch.float32)
    reference = clone(tensors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = call(chunked_distillation_losses, tensors, labels, chunk_size=4, **ALL_TERMS)
        plain = call(plain_distillation_losses, reference, labels, **ALL_TERMS)
    assert chunked.student_loss.dtype == torch.float32
    backward(chunked)
    backward(plain)
    assert all(tensors[k].grad.dtype == torch.float32 for k in NAMES)
    assert_same(chunked, plain, tensors, reference, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------------- API details


def test_no_grad_mode_gives_the_values_without_a_graph():
    tensors, labels = make_inputs()
    with torch.no_grad():
        result = call(chunked_distillation_losses, tensors, labels, **ALL_TERMS)
    plain = call(plain_distillation_losses, clone(tensors), labels, **ALL_TERMS)
    assert result.student_loss.grad_fn is None and result.teacher_loss.grad_fn is None
    torch.testing.assert_close(result.student_loss, plain.student_loss.detach(), **TIGHT)


def test_the_stored_gradients_become_the_grads_without_a_copy():
    """The backward hands its buffers to autograd, so a fresh .grad is the very buffer (no second [V, H] copy)."""
    for scale in (1.0, 0.5):
        tensors, labels = make_inputs(torch.float32)
        result = call(chunked_distillation_losses, tensors, labels, **ALL_TERMS)
        stored = result.student_loss.grad_fn.stored["student"]
        pointers = [buffer.data_ptr() for buffer in stored]
        del stored
        (scale * result.student_loss).backward()
        assert [tensors[k].grad.data_ptr() for k in NAMES[:3]] == pointers


def test_backward_twice_is_refused():
    tensors, labels = make_inputs()
    result = call(chunked_distillation_losses, tensors, labels, **ALL_TERMS)
    result.student_loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="back-propagated once"):
        result.student_loss.backward()


def test_default_chunk_size():
    assert default_chunk_size(32000) == DEFAULT_CHUNK_BYTES // (4 * 32000) == 327
    assert default_chunk_size(128256) == 81
    assert default_chunk_size(32000, rows=50) == 50
    assert default_chunk_size(10**9) == 1
    assert default_chunk_size(32000, budget_bytes=64 * 2**20) == 524


@pytest.mark.parametrize("change, message", [
    (dict(student_weight=torch.zeros(V, H_S + 1)), "width 5 but student_weight is \\[11, 6\\]"),
    (dict(student_hidden=torch.zeros(2, N, H_S)), "must be \\[N, H\\]"),
    (dict(teacher_hidden=torch.zeros(N + 1, H_T)), "different numbers of rows"),
    (dict(teacher_weight=torch.zeros(V + 1, H_T)), "different vocabularies"),
    (dict(labels=torch.zeros(N - 1, dtype=torch.long)), "labels must be \\[N\\] = \\[13\\]"),
    (dict(labels=torch.full((N,), V)), "labels must be in \\[0, 11\\)"),
    (dict(student_bias=torch.zeros(V + 1)), "student_bias must be \\[V\\]"),
    (dict(teacher_hidden=None, teacher_weight=None), "distill_loss needs the teacher"),
    (dict(labels=None), "task_loss \\(a cross-entropy\\) needs labels"),
    (dict(temperature=0.0), "temperature must be positive"),
    (dict(chunk_size=0), "chunk_size must be a positive"),
])
def test_clear_errors(change, message):
    inputs = dict(student_hidden=torch.zeros(N, H_S), student_weight=torch.zeros(V, H_S),
                  teacher_hidden=torch.zeros(N, H_T), teacher_weight=torch.zeros(V, H_T),
                  labels=torch.zeros(N, dtype=torch.long), student_kl_weight=0.5, student_ce_weight=0.5)
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        chunked_distillation_losses(**inputs)
