"""Token classification (NER): one `train()` step of ProKT, KD and fine-tuning equals the per-token update
computed by hand, averaged over the tokens that carry a label only; the pair checks cover taggers."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, parameters_of, tagging_dataset, tiny_bert, tiny_tagger
from tests.test_exact_step import STUDENT_LR, TEACHER_LR, assert_same_parameters, batch_of, run_one_step, sgd_step

NUM_TAGS = 3


def labelled(logits, labels):
    """The rows of ``logits [B, L, C]`` (and ``labels [B, L]``) of the tokens that carry a label: ``[N, C]``."""
    keep = labels != -100
    return logits[keep], labels[keep]


def kl(target_logits, logits, labels):
    """Mean over labelled tokens of KL(softmax(target) || softmax(logits)), independent of hf_prokt.losses."""
    target, _ = labelled(target_logits, labels)
    rows, _ = labelled(logits, labels)
    p = target.softmax(-1)
    return (p * (p.log() - rows.log_softmax(-1))).sum(-1).mean()


def ce(logits, labels):
    rows, targets = labelled(logits, labels)
    return F.cross_entropy(rows, targets)


def hand_computed_step(student, teacher, batch, strategy="prokt", lam=0.4, alpha=1.0, target="updated",
                       dual_beta=None, epsilon=0.0, kl_fn=kl):
    """Both models after one step, the four steps of METHOD.md written per token (dropout is off)."""
    student, teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    labels = batch["labels"]
    if strategy == "finetune":
        sgd_step(student, ce(student(**inputs).logits, labels), STUDENT_LR)
        return student, teacher
    if strategy == "prokt":
        with torch.no_grad():
            z_s = student(**inputs).logits
        z_t = teacher(**inputs).logits
        if dual_beta is None:
            teacher_loss = (1 - lam) * ce(z_t, labels) + lam * kl_fn(z_s, z_t, labels)
        else:
            teacher_loss = ce(z_t, labels) + dual_beta * (kl_fn(z_s, z_t, labels) - epsilon)
        stale = z_t.detach()
        sgd_step(teacher, teacher_loss, TEACHER_LR)
    with torch.no_grad():
        z_t_new = stale if strategy == "prokt" and target == "stale" else teacher(**inputs).logits
    z_s = student(**inputs).logits
    student_loss = alpha * kl_fn(z_t_new, z_s, labels) + (1 - alpha) * ce(z_s, labels)
    sgd_step(student, student_loss, STUDENT_LR)
    return student, teacher


def pair():
    return tiny_tagger(layers=1, hidden=8, num_labels=NUM_TAGS, seed=1), tiny_tagger(num_labels=NUM_TAGS, seed=2)


def test_the_batch_has_padding_and_ignored_tokens():
    batch = batch_of(tagging_dataset(n=12, seed=3))
    real = batch["attention_mask"] == 1
    assert (~real).any() and (batch["labels"][~real] == -100).all()
    assert ((batch["labels"] == -100) & real).any()  # ignored sub-tokens inside sentences


@pytest.mark.parametrize(
    "overrides, hand_kwargs",
    [
        ({}, {}),
        ({"prokt_lambda": 0.7, "distill_alpha": 0.6}, {"lam": 0.7, "alpha": 0.6}),
        ({"prokt_target": "stale"}, {"target": "stale"}),
        ({"prokt_constraint": "dual", "dual_init": 1.5, "prokt_epsilon": 0.05}, {"dual_beta": 1.5, "epsilon": 0.05}),
        ({"strategy": "kd", "distill_alpha": 0.5}, {"strategy": "kd", "alpha": 0.5}),
        ({"strategy": "kd", "distill_temperature": 1.0}, {"strategy": "kd"}),
        ({"strategy": "finetune"}, {"strategy": "finetune"}),
    ],
    ids=["prokt", "prokt-lambda-alpha", "prokt-stale", "prokt-dual", "kd-alpha", "kd", "finetune"],
)
def test_one_step_equals_the_hand_computed_per_token_update(tmp_path, overrides, hand_kwargs):
    student, teacher = pair()
    data = tagging_dataset(n=12, seed=3, num_labels=NUM_TAGS)
    expected_student, expected_teacher = hand_computed_step(student, teacher, batch_of(data), **hand_kwargs)

    run_one_step(tmp_path, student, teacher, data, **overrides)

    assert_same_parameters(teacher, expected_teacher)
    assert_same_parameters(student, expected_student)


def test_averaging_over_every_position_would_give_another_step(tmp_path):
    """The test above can tell the per-labelled-token mean from a mean over all positions."""
    student, teacher = pair()
    data = tagging_dataset(n=12, seed=3, num_labels=NUM_TAGS)

    def kl_everywhere(target_logits, logits, labels):
        p = target_logits.softmax(-1)
        return (p * (p.log() - logits.log_softmax(-1))).sum(-1).mean()

    unmasked_student, unmasked_teacher = hand_computed_step(student, teacher, batch_of(data), kl_fn=kl_everywhere)
    run_one_step(tmp_path, student, teacher, data)
    for trained, unmasked in ((student, unmasked_student), (teacher, unmasked_teacher)):
        differences = [(p - q).abs().max().item() for p, q in zip(trained.parameters(), unmasked.parameters())]
        assert max(differences) > 1e-5


@pytest.mark.parametrize("strategy", ["prokt", "kd"])
def test_what_the_padding_holds_changes_nothing(tmp_path, strategy):
    """Other tokens under the padding change the logits there (not elsewhere): the step is the same."""
    data = tagging_dataset(n=12, seed=3, num_labels=NUM_TAGS)
    padding = torch.tensor(data["attention_mask"]) == 0
    other_ids = torch.tensor(data["input_ids"]).masked_fill(padding, 7)
    changed = data.remove_columns("input_ids").add_column("input_ids", other_ids.tolist())

    trained = []
    for dataset in (data, changed):
        student, teacher = pair()
        run_one_step(tmp_path / str(len(trained)), student, teacher, dataset, strategy=strategy)
        trained.append((student, teacher))
    with torch.no_grad():
        logits = [pair()[0](**{k: torch.tensor(d[k]) for k in ("input_ids", "attention_mask")}).logits
                  for d in (data, changed)]
    assert (logits[0][padding] - logits[1][padding]).abs().max() > 1e-3  # the padding's logits did change
    for (student, teacher), (other_student, other_teacher) in zip(trained[:1], trained[1:]):
        assert_same_parameters(student, other_student, atol=1e-6)
        assert_same_parameters(teacher, other_teacher, atol=1e-6)


def test_a_few_steps_lower_the_loss_and_the_student_reloads_as_a_token_classifier(tmp_path):
    student, teacher = pair()
    data = tagging_dataset(n=64, seed=4, num_labels=NUM_TAGS)
    args = make_args(tmp_path, max_steps=30, learning_rate=5e-3, teacher_learning_rate=5e-3)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    before = trainer.evaluate(data)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(data)["eval_loss"]
    assert after < before
    trainer.save_model(str(tmp_path / "student"))
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "student")
    assert type(reloaded).__name__ == "BertForTokenClassification"
    batch = batch_of(data)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student.cpu()(**inputs).logits)
    assert parameters_of(reloaded).keys() == parameters_of(student).keys()


@pytest.mark.parametrize("strategy", ["prokt", "kd"])
def test_a_sequence_classifier_and_a_token_classifier_are_refused(tmp_path, strategy):
    data = tagging_dataset(n=8, num_labels=NUM_TAGS)
    sequence_model = tiny_bert(num_labels=NUM_TAGS)
    args = make_args(tmp_path, strategy=strategy)
    with pytest.raises(ValueError, match="BertForSequenceClassification .*one prediction per sequence.*"
                                         "BertForTokenClassification .*one prediction per token"):
        ProKTTrainer(model=sequence_model, teacher_model=tiny_tagger(num_labels=NUM_TAGS), args=args,
                     train_dataset=data)
    with pytest.raises(ValueError, match="AutoModelForSequenceClassification"):
        ProKTTrainer(model=tiny_tagger(num_labels=NUM_TAGS), teacher_model=sequence_model, args=args,
                     train_dataset=data)
    assert not (tmp_path / "out").exists()


def test_taggers_with_other_tags_or_vocabularies_are_refused(tmp_path):
    data = tagging_dataset(n=8, num_labels=NUM_TAGS)
    tags = ["O", "B-PER", "I-PER"]
    student = tiny_tagger(num_labels=NUM_TAGS, id2label=dict(enumerate(tags)))
    other_tags = tiny_tagger(num_labels=NUM_TAGS, id2label=dict(enumerate(["O", "B-LOC", "I-LOC"])))
    with pytest.raises(ValueError, match="label2id"):
        ProKTTrainer(model=student, teacher_model=other_tags, args=make_args(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match="num_labels=3 but the teacher has num_labels=5"):
        ProKTTrainer(model=student, teacher_model=tiny_tagger(num_labels=5), args=make_args(tmp_path),
                     train_dataset=data)
    other_vocab = tiny_tagger(num_labels=NUM_TAGS)
    other_vocab.resize_token_embeddings(64)
    with pytest.raises(ValueError, match="vocabulary"):
        ProKTTrainer(model=tiny_tagger(num_labels=NUM_TAGS), teacher_model=other_vocab, args=make_args(tmp_path),
                     train_dataset=data)


def test_kd_on_unlabelled_text_averages_over_the_real_tokens(tmp_path):
    """``distill_alpha=1`` needs no labels: the per-token KL then averages over ``attention_mask == 1``."""
    student, teacher = pair()
    data = tagging_dataset(n=12, seed=3, num_labels=NUM_TAGS)
    batch = batch_of(data)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    real_tokens = torch.where(batch["attention_mask"] == 1, 0, -100)  # "labels" that keep the real tokens
    expected = copy.deepcopy(student)
    with torch.no_grad():
        target = teacher(**inputs).logits
    sgd_step(expected, kl(target, expected(**inputs).logits, real_tokens), STUDENT_LR)

    run_one_step(tmp_path, student, teacher, data.remove_columns("labels"), strategy="kd", distill_alpha=1.0)

    assert_same_parameters(student, expected)
