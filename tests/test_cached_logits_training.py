"""`ProKTTrainer(strategy="kd")` from a `teacher_logits` column: the same updates as a live teacher, no
teacher forward, and the set-ups where a cache would be wrong refused before any step."""

import logging

import datasets
import pytest
import torch
from transformers import BertConfig, BertForTokenClassification, DataCollatorForTokenClassification

from hf_prokt import ProKTTrainer, cache_teacher_logits, measure_compression
from tests.conftest import VOCAB_SIZE, make_args, parameters_of, tiny_bert, toy_dataset


def tiny_token_classifier(layers=2, hidden=16, num_labels=3, seed=0) -> BertForTokenClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForTokenClassification(config)


def token_dataset(n=12, length=6, seed=0) -> datasets.Dataset:
    """Sequences of one length (no padding in any batch), a tag per token."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (n, length), generator=generator)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                                       "labels": (ids % 3).tolist()})


def ragged_token_dataset(n=12, seed=0) -> datasets.Dataset:
    """Sequences of 3 to 8 tokens, a tag per token: the collator pads every batch (labels -100 there)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 9, (n,), generator=generator).tolist()
    ids = [torch.randint(5, VOCAB_SIZE, (length,), generator=generator) for length in lengths]
    return datasets.Dataset.from_dict({"input_ids": [x.tolist() for x in ids],
                                       "attention_mask": [[1] * len(x) for x in ids],
                                       "labels": [(x % 3).tolist() for x in ids]})


def sgd_args(tmp_path, name, **overrides):
    defaults = dict(strategy="kd", optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                    learning_rate=0.5, max_steps=3, per_device_train_batch_size=4)
    defaults.update(overrides)
    return make_args(tmp_path / name, **defaults)


def assert_same_parameters(model, reference, atol=1e-6):
    expected = parameters_of(reference)
    for name, value in parameters_of(model).items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def confident(model):
    """A teacher with logits of a few units (a random tiny model's are ~0.1), so that the test can tell
    close targets apart."""
    with torch.no_grad():
        model.classifier.weight *= 30
    return model


CASES = {
    "classification": (lambda seed: tiny_bert(layers=1, hidden=8, seed=seed),
                       lambda seed: confident(tiny_bert(layers=2, hidden=16, seed=seed)),
                       lambda: toy_dataset(n=12, seed=3, padded=True), dict(distill_alpha=0.6,
                                                                             distill_temperature=2.0)),
    "regression": (lambda seed: tiny_bert(layers=1, hidden=8, seed=seed, num_labels=1),
                   lambda seed: confident(tiny_bert(layers=2, hidden=16, seed=seed, num_labels=1)),
                   lambda: toy_dataset(n=12, seed=3, regression=True), dict(distill_alpha=0.5)),
    # Per-token distillation only (alpha 1) on batches without padding.
    "token_classification": (lambda seed: tiny_token_classifier(layers=1, hidden=8, seed=seed),
                             lambda seed: confident(tiny_token_classifier(layers=2, hidden=16, seed=seed)),
                             lambda: token_dataset(n=12, seed=3), dict(distill_alpha=1.0)),
    # Padded batches (cached in batches of 5, trained in batches of 4: other padding): the per-token losses
    # skip the padded positions, where the cache holds zeros.
    "token_classification_padded": (lambda seed: tiny_token_classifier(layers=1, hidden=8, seed=seed),
                                    lambda seed: confident(tiny_token_classifier(layers=2, hidden=16, seed=seed)),
                                    lambda: ragged_token_dataset(n=12, seed=3), dict(distill_alpha=0.5)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kd_from_the_cache_equals_kd_from_the_live_teacher(tmp_path, local_tokenizer, case):
    make_student, make_teacher, make_data, overrides = CASES[case]
    data, teacher = make_data(), make_teacher(2)
    collator = DataCollatorForTokenClassification(local_tokenizer) if case.startswith("token") else None
    live_student, cached_student = make_student(1), make_student(1)

    ProKTTrainer(model=live_student, teacher_model=teacher, args=sgd_args(tmp_path, "live", **overrides),
                 train_dataset=data, data_collator=collator).train()
    cached = cache_teacher_logits(teacher, data, batch_size=5, data_collator=collator, disable_tqdm=True)
    trainer = ProKTTrainer(model=cached_student, teacher_model=None, args=sgd_args(tmp_path, "cached", **overrides),
                           train_dataset=cached, data_collator=collator)
    trainer.train()

    assert trainer.uses_cached_teacher_logits
    assert any(p.ne(q).any() for p, q in zip(cached_student.parameters(), make_student(1).parameters()))
    assert_same_parameters(cached_student, live_student)  # a cache 0.2% off already differs by ~1e-5
    logged = [e for e in trainer.state.log_history if "student_distill_loss" in e]
    assert len(logged) == 3


def test_with_a_teacher_and_the_column_the_column_wins(tmp_path, caplog):
    teacher, data = tiny_bert(layers=2, hidden=16, seed=2), toy_dataset(n=12, seed=3)
    cached = cache_teacher_logits(teacher, data, disable_tqdm=True)
    calls = []
    teacher.register_forward_pre_hook(lambda *_: calls.append(1))
    with caplog.at_level(logging.WARNING):
        trainer = ProKTTrainer(model=tiny_bert(layers=1, hidden=8, seed=1), teacher_model=teacher,
                               args=sgd_args(tmp_path, "both", evaluate_teacher=True), train_dataset=cached,
                               eval_dataset=cached)
    assert sum("the teacher is not run during training" in r.getMessage() for r in caplog.records) == 1
    calls.clear()
    trainer.train()
    assert calls == []  # no teacher forward in training
    metrics = trainer.evaluate()  # the eval set carries the column too: the student never receives it
    assert "eval_loss" in metrics and "eval_teacher_loss" in metrics and calls  # the teacher evaluated


def test_the_column_survives_remove_unused_columns_with_other_columns_dropped(tmp_path):
    teacher, data = tiny_bert(layers=2, hidden=16, seed=2), toy_dataset(n=8, seed=3)
    data = data.add_column("text", [f"row {i}" for i in range(8)])
    cached = cache_teacher_logits(teacher, data, disable_tqdm=True)
    trainer = ProKTTrainer(model=tiny_bert(layers=1, hidden=8, seed=1), args=sgd_args(tmp_path, "cols"),
                           train_dataset=cached)
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "teacher_logits"}
    assert batch["teacher_logits"].shape == (4, 2)
    trainer.train()


def refused(tmp_path, match, **kwargs):
    with pytest.raises(ValueError, match=match):
        ProKTTrainer(**kwargs)
    out = tmp_path / "refused" / "out"
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


def test_refusals_before_any_step(tmp_path):
    teacher, data = tiny_bert(layers=2, hidden=16, seed=2), toy_dataset(n=8, seed=3)
    cached = cache_teacher_logits(teacher, data, disable_tqdm=True)
    student = tiny_bert(layers=1, hidden=8, seed=1)
    refused(tmp_path, "strategy='prokt' trains the teacher", model=student, teacher_model=teacher,
            args=sgd_args(tmp_path, "refused", strategy="prokt"), train_dataset=cached)
    refused(tmp_path, "hidden states", model=student, args=sgd_args(tmp_path, "refused", hidden_distill_weight=1.0),
            train_dataset=cached)
    refused(tmp_path, "on-the-fly transform", model=student, args=sgd_args(tmp_path, "refused"),
            train_dataset=cached.with_transform(lambda batch: batch))
    three_labels = cache_teacher_logits(tiny_bert(layers=2, hidden=16, num_labels=3), data, disable_tqdm=True)
    refused(tmp_path, r"shape \[2, 2\] and the cached 'teacher_logits' have shape \[2, 3\]", model=student,
            args=sgd_args(tmp_path, "refused"), train_dataset=three_labels)
    refused(tmp_path, "needs a teacher", model=student, args=sgd_args(tmp_path, "refused"), train_dataset=data)
    refused(tmp_path, "evaluate_teacher", model=student, args=sgd_args(tmp_path, "refused", evaluate_teacher=True),
            train_dataset=cached)


def test_card_says_cached_logits_and_carries_the_measured_compression(tmp_path):
    teacher, data = tiny_bert(layers=4, hidden=16, seed=2), toy_dataset(n=8, seed=3)
    student = tiny_bert(layers=1, hidden=16, seed=1)
    trainer = ProKTTrainer(model=student, args=sgd_args(tmp_path, "card", max_steps=1),
                           train_dataset=cache_teacher_logits(teacher, data, disable_tqdm=True))
    trainer.train()
    batch = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask")}
    trainer.compression_report = measure_compression(teacher, student, batch, batch_sizes=(1, 2), repeats=2)
    trainer.save_model()
    card = (tmp_path / "card" / "out" / "README.md").read_text()
    report = trainer.compression_report
    assert "from its logits cached once over the training set" in card
    assert f"| teacher | (measured for compression) | {report.teacher_parameters:,} |" in card
    assert f"{report.parameter_ratio:.2f}x fewer parameters" in card
    assert f"| 2 | {report.teacher_latency_ms[2]:.2f} | {report.student_latency_ms[2]:.2f} | " \
           f"{report.speedup[2]:.2f}x |" in card
