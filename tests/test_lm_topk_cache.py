"""A causal LM's cached top-k teacher log-probabilities: the bucket KL against a hand computation, k = V against the
full KL, KD from the cache stepping as live KD (accumulation windows, left padding, chunked or full logits), the
layout, and the refusals."""

from __future__ import annotations

import math
import types

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, default_data_collator

from hf_prokt import ProKTTrainer, cache_teacher_topk, load_or_cache_teacher_topk
from hf_prokt.losses.topk import chunked_topk_student_loss, topk_kl_rows, topk_student_loss
from hf_prokt.teacher.lm_topk_cache import TeacherTopkCollator
from tests.conftest import VOCAB_SIZE, make_args, parameters_of, tiny_bert
from tests.test_language_models import prompt_completion_dataset, tiny_gpt2, tiny_t5

T = 2.0


# ------------------------------------------------------------------ the loss


def test_the_bucket_kl_for_k_2_by_hand():
    teacher_probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    student_logits = torch.tensor([[0.2, -1.0, 0.7, 0.1]])
    q = torch.softmax(student_logits[0], dim=-1)
    # The teacher's top 2 are tokens 0 and 1; the bucket holds tokens 2 and 3.
    by_hand = (0.5 * math.log(0.5 / q[0]) + 0.3 * math.log(0.3 / q[1])
               + 0.2 * math.log(0.2 / (q[2] + q[3])))
    kl = topk_kl_rows(teacher_probs[:2].log().unsqueeze(0), torch.tensor([[0, 1]]), student_logits)
    assert kl.item() == pytest.approx(float(by_hand), rel=1e-6)
    # The same teacher, renormalised over its top 2, would ignore the 0.2 it leaves: the bucket does not.
    assert kl.item() > 0


def test_k_equal_to_the_vocabulary_is_the_full_kl_with_its_gradient():
    torch.manual_seed(0)
    teacher_logits, logits = torch.randn(6, 11), torch.randn(6, 11, requires_grad=True)
    target = F.log_softmax(teacher_logits / T, dim=-1)
    values, indices = target.topk(11, dim=-1)
    full = (target.exp() * (target - F.log_softmax(logits / T, dim=-1))).sum(-1)
    cached = topk_kl_rows(values, indices, logits, T)
    torch.testing.assert_close(cached, full, rtol=1e-6, atol=1e-7)
    (full_grad,) = torch.autograd.grad(full.sum(), logits)
    (cached_grad,) = torch.autograd.grad(topk_kl_rows(values, indices, logits, T).sum(), logits)
    torch.testing.assert_close(cached_grad, full_grad, rtol=1e-6, atol=1e-7)


def test_the_chunked_topk_loss_equals_the_plain_one_with_its_gradients():
    torch.manual_seed(1)
    hidden, weight = torch.randn(9, 8, requires_grad=True), torch.randn(13, 8, requires_grad=True)
    bias = torch.randn(13, requires_grad=True)
    values, indices = F.log_softmax(torch.randn(9, 13), dim=-1).topk(4, dim=-1)
    labels = torch.randint(0, 13, (9,))
    plain, plain_parts = topk_student_loss(F.linear(hidden, weight, bias), values, indices, labels, 0.7, T, 0.1)
    chunked, chunked_parts = chunked_topk_student_loss(hidden, weight, values, indices, labels, 0.7, T, 0.1,
                                                       bias=bias, chunk_size=2)
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-7)
    assert chunked_parts.keys() == plain_parts.keys() == {"distill_loss", "task_loss"}
    for got, expected in zip(torch.autograd.grad(chunked, (hidden, weight, bias)),
                             torch.autograd.grad(plain, (hidden, weight, bias))):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the cache's layout


class Padding:
    """A collator that pads on ``side``, labelling the padding -100, as a tokenizer with that padding_side."""

    def __init__(self, side: str):
        self.tokenizer = types.SimpleNamespace(padding_side=side)

    def __call__(self, features):
        length = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for feature in features:
            size = len(feature["input_ids"])
            pad = length - size

            def padded(values, filler, pad=pad):
                return [filler] * pad + values if self.tokenizer.padding_side == "left" else values + [filler] * pad

            batch["input_ids"].append(padded(list(feature["input_ids"]), 0))
            batch["attention_mask"].append(padded([1] * size, 0))
            batch["labels"].append(padded(list(feature["labels"]), -100))
        return {name: torch.tensor(values) for name, values in batch.items()}


def ragged_dataset() -> datasets.Dataset:
    """Rows of different lengths, each with a masked prompt."""
    generator = torch.Generator().manual_seed(3)
    rows = {"input_ids": [], "labels": []}
    for length, prompt in ((8, 3), (5, 1), (7, 4), (6, 2)):
        ids = torch.randint(5, VOCAB_SIZE, (length,), generator=generator).tolist()
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * prompt + ids[prompt:])
    return datasets.Dataset.from_dict(rows)


def test_the_cache_holds_the_top_k_of_the_predicted_positions_from_the_example_start(tmp_path):
    teacher, data = tiny_gpt2(seed=1), ragged_dataset()
    # One example per batch: each example's own predictions (a left-padded GPT-2 numbers its positions from the
    # first column, so the padding would change them).
    cached = cache_teacher_topk(teacher, data, k=3, temperature=T, batch_size=1, data_collator=Padding("left"),
                                disable_tqdm=True)
    assert set(cached.column_names) == {"input_ids", "labels", "teacher_topk_logprobs", "teacher_topk_indices",
                                        "teacher_topk_positions", "teacher_topk_vocab_size",
                                        "teacher_topk_temperature"}
    assert cached.features["teacher_topk_logprobs"].feature.feature.dtype == "float16"
    for example in cached:  # the teacher on the example alone, without padding
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logits = teacher(input_ids=ids).logits[0, :-1]
        positions = [t for t in range(len(example["input_ids"]) - 1) if example["labels"][t + 1] != -100]
        assert example["teacher_topk_positions"] == positions
        values, indices = F.log_softmax(logits[positions] / T, dim=-1).topk(3, dim=-1)
        assert example["teacher_topk_indices"] == indices.tolist()
        torch.testing.assert_close(torch.tensor(example["teacher_topk_logprobs"]), values, rtol=1e-3, atol=2e-3)
        assert example["teacher_topk_vocab_size"] == VOCAB_SIZE and example["teacher_topk_temperature"] == T

    batch = TeacherTopkCollator(Padding("left"))([cached[0], cached[1]])
    keep = batch["labels"][:, 1:] != -100
    assert torch.equal(batch["teacher_topk_mask"], keep)  # shifted by the left padding of the short row
    assert batch["teacher_topk_logprobs"].shape == (int(keep.sum()), 3)


def test_bytes_per_token_are_those_of_k_values_indices_and_a_position():
    teacher, data = tiny_gpt2(seed=1), prompt_completion_dataset()
    cached = cache_teacher_topk(teacher, data, k=4, data_collator=default_data_collator, disable_tqdm=True)
    rows = sum(len(p) for p in cached["teacher_topk_positions"])
    table = cached.data
    stored = sum(table.column(name).chunk(0).values.values.nbytes
                 for name in ("teacher_topk_logprobs", "teacher_topk_indices"))
    assert rows == sum(sum(label != -100 for label in labels[1:]) for labels in data["labels"])
    assert stored == rows * 4 * (2 + 4)  # fp16 values and int32 ids


# ------------------------------------------------------------------ training from it


def kd_args(tmp_path, name: str, **overrides):
    values = dict(strategy="kd", optim="sgd", learning_rate=0.5, max_steps=2, lr_scheduler_type="constant",
                  max_grad_norm=0.0, weight_decay=0.0, distill_alpha=0.6, distill_temperature=T,
                  per_device_train_batch_size=2, gradient_accumulation_steps=2, output_dir=str(tmp_path / name))
    values.update(overrides)
    return make_args(tmp_path, **values)


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("rows", ["equal", "ragged"])
def test_kd_from_a_full_cache_steps_as_live_kd(tmp_path, chunked, rows):
    """Accumulated windows of two micro-batches; ragged rows are padded on the right, to other lengths in training
    than when the cache was made (the padding after a causal LM's tokens changes nothing before it)."""
    data = prompt_completion_dataset(length=8) if rows == "equal" else ragged_dataset()
    collator = default_data_collator if rows == "equal" else Padding("right")
    teacher = tiny_gpt2(seed=1, layers=3)
    cached = cache_teacher_topk(teacher, data, k=VOCAB_SIZE, temperature=T, data_collator=collator, dtype="float32",
                                disable_tqdm=True)
    live_student, cached_student = tiny_gpt2(seed=0), tiny_gpt2(seed=0)
    ProKTTrainer(model=live_student, teacher_model=teacher, args=kd_args(tmp_path, "live", chunked_lm_loss=chunked),
                 train_dataset=data, data_collator=collator).train()
    trainer = ProKTTrainer(model=cached_student, teacher_model=None, train_dataset=cached, data_collator=collator,
                           args=kd_args(tmp_path, "cached", chunked_lm_loss=chunked))
    assert trainer.strategy.chunked is chunked
    trainer.train()
    for (name, live), cached_weight in zip(parameters_of(live_student).items(),
                                           parameters_of(cached_student).values()):
        torch.testing.assert_close(cached_weight, live, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(parameters_of(cached_student)["transformer.wte.weight"],
                           parameters_of(tiny_gpt2(seed=0))["transformer.wte.weight"])


def test_kd_from_an_fp16_top_k_cache_learns_and_saves_a_plain_student(tmp_path):
    data = prompt_completion_dataset(length=8)
    data = datasets.concatenate_datasets([data] * 4)
    teacher = tiny_gpt2(seed=1, layers=3)
    cached = cache_teacher_topk(teacher, data, k=8, temperature=1.0, data_collator=default_data_collator,
                                disable_tqdm=True)
    student = tiny_gpt2(seed=0)
    args = kd_args(tmp_path, "out", distill_alpha=1.0, distill_temperature=1.0, max_steps=12,
                   gradient_accumulation_steps=1, optim="adamw_torch", learning_rate=1e-2)
    trainer = ProKTTrainer(model=student, teacher_model=None, args=args, train_dataset=cached)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
    trainer.save_model()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert isinstance(reloaded, GPT2LMHeadModel)
    assert not any("teacher" in name for name in reloaded.state_dict())


def test_load_or_cache_reuses_the_same_cache_and_refuses_another_k(tmp_path):
    teacher, data = tiny_gpt2(seed=1), prompt_completion_dataset()
    path = str(tmp_path / "cache")
    first = load_or_cache_teacher_topk(path, teacher, data, k=4, data_collator=default_data_collator,
                                       disable_tqdm=True)
    again = load_or_cache_teacher_topk(path, teacher, data, k=4, data_collator=default_data_collator)
    assert again["teacher_topk_indices"] == first["teacher_topk_indices"]
    with pytest.raises(ValueError, match=r"was made from k=4 \(this run: 8\)"):
        load_or_cache_teacher_topk(path, teacher, data, k=8, data_collator=default_data_collator)


# ------------------------------------------------------------------ refusals


@pytest.fixture(scope="module")
def cached_data():
    return cache_teacher_topk(tiny_gpt2(seed=1), prompt_completion_dataset(), k=4, temperature=T,
                              data_collator=default_data_collator, disable_tqdm=True)


def test_prokt_with_a_top_k_cache_is_refused(tmp_path, cached_data):
    with pytest.raises(ValueError, match="'teacher_topk_logprobs', but strategy='prokt' trains the teacher"):
        ProKTTrainer(model=tiny_gpt2(), teacher_model=tiny_gpt2(seed=1), train_dataset=cached_data,
                     args=make_args(tmp_path, strategy="prokt"))


def test_another_temperature_is_refused_before_any_step(tmp_path, cached_data):
    with pytest.raises(ValueError, match=r"cached at temperature \[2.0\], but distill_temperature is 1.0"):
        ProKTTrainer(model=tiny_gpt2(), train_dataset=cached_data,
                     args=kd_args(tmp_path, "out", distill_temperature=1.0))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_student_with_another_vocabulary_is_refused(tmp_path, cached_data):
    torch.manual_seed(0)
    student = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB_SIZE + 3, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(ValueError, match=rf"vocabulary of \[{VOCAB_SIZE}\] tokens, and the student has "
                                         rf"{VOCAB_SIZE + 3}"):
        ProKTTrainer(model=student, train_dataset=cached_data, args=kd_args(tmp_path, "out"))


def test_labels_changed_after_caching_are_refused(tmp_path, cached_data):
    def mask_one_more(example):
        labels = list(example["labels"])
        labels[-1] = -100
        return {"labels": labels}

    with pytest.raises(ValueError, match="the labels .* changed since the cache was made"):
        ProKTTrainer(model=tiny_gpt2(), train_dataset=cached_data.map(mask_one_more), args=kd_args(tmp_path, "out"))


def test_a_classifier_with_a_top_k_cache_is_refused(tmp_path, cached_data):
    with pytest.raises(ValueError, match="serve causal LMs only, and the student is a sequence classification"):
        ProKTTrainer(model=tiny_bert(), train_dataset=cached_data, args=kd_args(tmp_path, "out"))


@pytest.mark.parametrize("make, message", [
    (lambda: (tiny_gpt2(), dict(k=VOCAB_SIZE + 1)), "k = .* but the teacher's vocabulary has"),
    (lambda: (tiny_t5(), {}), "caches causal LMs, and the teacher is a sequence-to-sequence"),
    (lambda: (tiny_bert(), {}), "cache its logits with cache_teacher_logits"),
    (lambda: (tiny_gpt2(), dict(dtype="bfloat16")), "dtype='bfloat16' is not one of"),
])
def test_bad_cache_requests_are_refused(make, message):
    teacher, options = make()
    with pytest.raises(ValueError, match=message):
        cache_teacher_topk(teacher, prompt_completion_dataset(), data_collator=default_data_collator,
                           disable_tqdm=True, **options)


def test_caching_twice_is_refused(cached_data):
    with pytest.raises(ValueError, match="already has the column 'teacher_topk_logprobs'"):
        cache_teacher_topk(tiny_gpt2(), cached_data, data_collator=default_data_collator)
