"""General distillation (TinyBERT's first stage): models without a task head, unlabelled text, the intermediate
terms alone with ``strategy="kd"``; masked-LM heads distilled on their masked positions; the refusals."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import AutoModel, BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from hf_prokt import ProKTTrainer, ProKTTrainingArguments, student_from_teacher
from hf_prokt.model_kinds import model_kind_of
from tests.conftest import VOCAB_SIZE


def bert_config(**kwargs) -> BertConfig:
    settings = dict(vocab_size=VOCAB_SIZE, hidden_size=16, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return BertConfig(**{**settings, **kwargs})


def text_blocks(n: int = 32, seed: int = 0) -> datasets.Dataset:
    """Unlabelled token blocks: ``input_ids`` and ``attention_mask`` only."""
    ids = torch.randint(5, VOCAB_SIZE, (n, 8), generator=torch.Generator().manual_seed(seed))
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})


def headless_pair(seed: int = 0) -> tuple[BertModel, BertModel]:
    torch.manual_seed(seed)
    teacher = BertModel(bert_config())
    return teacher, student_from_teacher(teacher, 2, hidden_size=8)


def arguments(tmp_path, **kwargs) -> ProKTTrainingArguments:
    settings = dict(output_dir=str(tmp_path / "out"), strategy="kd", hidden_distill_weight=1.0, learning_rate=1e-3,
                    per_device_train_batch_size=8, report_to=[], use_cpu=True, save_strategy="no",
                    disable_tqdm=True, logging_steps=1)
    return ProKTTrainingArguments(**{**settings, **kwargs})


def test_one_step_loss_is_the_hidden_state_term_computed_by_hand(tmp_path):
    teacher, student = headless_pair()
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=arguments(tmp_path), train_dataset=text_blocks())
    batch = trainer.example_batch(4)
    loss, _ = trainer.strategy.compute_loss(student, batch)
    with torch.no_grad():
        student_hidden = student(**batch, output_hidden_states=True).hidden_states
        teacher_hidden = teacher.eval()(**batch, output_hidden_states=True).hidden_states
        projections = trainer.intermediate_distiller.hidden_projections
        # Student layers 1, 2 learn from teacher layers 2, 4 (uniform map), through a learned 8 -> 16 map.
        expected = torch.stack([
            ((student_hidden[i + 1] @ projections[i].proj.weight.T + projections[i].proj.bias - teacher_hidden[t]) ** 2)
            .mean() for i, t in enumerate((2, 4))
        ]).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_general_distillation_trains_the_student_alone_and_saves_it_without_projections(tmp_path):
    teacher, student = headless_pair()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    args = arguments(tmp_path, max_steps=12, embedding_distill_weight=1.0, eval_strategy="steps", eval_steps=12)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_blocks(),
                           eval_dataset=text_blocks(8, seed=1))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())  # frozen
    assert "eval_loss" in trainer.evaluate()  # the distillation loss on held-out text
    trainer.save_model()
    reloaded = AutoModel.from_pretrained(tmp_path / "out")
    assert type(reloaded) is BertModel and reloaded.config.hidden_size == 8
    assert set(reloaded.state_dict()) == set(student.state_dict())
    assert not any("proj" in name for name in reloaded.state_dict())


def test_masked_lm_heads_are_distilled_on_the_masked_positions(tmp_path):
    torch.manual_seed(0)
    teacher, student = BertForMaskedLM(bert_config()), BertForMaskedLM(bert_config(num_hidden_layers=1))
    assert model_kind_of(student).name == "masked language model"
    ids = torch.randint(5, VOCAB_SIZE, (8, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]  # one masked token per row
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=arguments(tmp_path, hidden_distill_weight=0.0),
                           train_dataset=data)
    batch = trainer.example_batch(4)
    loss, _ = trainer.strategy.compute_loss(student, batch)
    with torch.no_grad():
        target = teacher.eval()(input_ids=batch["input_ids"]).logits[:, 2]
        logits = student(input_ids=batch["input_ids"]).logits[:, 2]
    expected = (target.softmax(-1) * (target.log_softmax(-1) - logits.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings, message", [
    ({"strategy": "prokt"}, "ProKT's teacher step needs a task loss.*strategy='kd'"),
    ({"strategy": "finetune", "hidden_distill_weight": 0.0}, "nothing to fine-tune.*strategy='kd'"),
    ({"hidden_distill_weight": 0.0}, "can only learn from the intermediate terms, and none is on"),
    ({"distill_alpha": 0.5}, "no task loss, so distill_alpha < 1"),
    ({"evaluate_teacher": True}, "no evaluation of the teacher's own"),
])
def test_headless_set_ups_that_cannot_work_are_refused_before_anything_is_written(tmp_path, settings, message):
    teacher, student = headless_pair()
    with pytest.raises(ValueError, match=message):
        ProKTTrainer(model=student, teacher_model=teacher, args=arguments(tmp_path, **settings),
                     train_dataset=text_blocks())
    assert not (tmp_path / "out").exists()


def test_the_card_opens_with_the_general_distillation_of_the_teacher_on_the_data(tmp_path):
    teacher, student = headless_pair()
    teacher.config._name_or_path = "my-org/bert-teacher"
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=arguments(tmp_path, max_steps=1),
                           train_dataset=text_blocks())
    trainer.train()
    trainer.create_model_card(dataset="corpus.txt", tasks="feature-extraction")
    opening = (tmp_path / "out" / "README.md").read_text().split("# out\n", 1)[1].strip().splitlines()[0]
    assert opening.startswith("This model is a student built from")
    assert "trained by general distillation of `my-org/bert-teacher` on corpus.txt (distilled from a frozen" in opening

    # A student with a task head is distilled for its task: its card does not call it general distillation.
    torch.manual_seed(0)
    classifier_teacher = BertForSequenceClassification(bert_config())
    labelled = text_blocks().add_column("labels", [0, 1] * 16)
    trainer = ProKTTrainer(model=student_from_teacher(classifier_teacher, 2), teacher_model=classifier_teacher,
                           args=arguments(tmp_path / "task", max_steps=1), train_dataset=labelled)
    trainer.train()
    trainer.create_model_card(dataset="corpus.txt")
    card = (tmp_path / "task" / "out" / "README.md").read_text()
    assert "general distillation" not in card and "distilled from a frozen teacher" in card
