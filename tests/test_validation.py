"""Bad arguments and bad model pairs are refused before any step, naming the problem and the fix."""

import json

import pytest
import torch
from torch import nn
from transformers import HfArgumentParser

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset


@pytest.mark.parametrize("field, value, message", [
    ("strategy", "distill", "strategy"),
    ("prokt_lambda", 1.5, "prokt_lambda"),
    ("distill_alpha", -0.1, "distill_alpha"),
    ("distill_temperature", 0.0, "distill_temperature"),
    ("teacher_learning_rate", 0.0, "teacher_learning_rate"),
    ("prokt_constraint", "hard", "prokt_constraint"),
    ("prokt_target", "future", "prokt_target"),
    ("hidden_distill_weight", -1.0, "hidden_distill_weight"),
    ("layer_map", [0, 2], "layer_map"),
    ("layer_map", "1,x", "layer_map"),
])
def test_arguments_name_the_bad_field(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=f"ProKTTrainingArguments.{message}"):
        ProKTTrainingArguments(output_dir=str(tmp_path), **{field: value})


def test_arguments_parse_from_json_and_command_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "output_dir": str(tmp_path / "out"), "strategy": "kd", "distill_temperature": 2.0, "layer_map": [2, 4],
        "learning_rate": 1e-4,
    }))
    (args,) = HfArgumentParser(ProKTTrainingArguments).parse_json_file(str(config))
    assert (args.strategy, args.distill_temperature, args.layer_map, args.learning_rate) == ("kd", 2.0, [2, 4], 1e-4)

    parser = HfArgumentParser(ProKTTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses([
        "--output_dir", str(tmp_path), "--prokt_lambda", "0.3", "--layer_map", "1", "3", "--prokt_target", "stale",
    ])
    assert (args.prokt_lambda, args.layer_map, args.prokt_target, args.strategy) == (0.3, [1, 3], "stale", "prokt")
    assert args.teacher_learning_rate == 3e-5 and args.distill_alpha == 1.0
    for spelling, expected in ((["2,4"], [2, 4]), (["uniform"], "uniform")):
        (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--layer_map", *spelling])
        assert args.layer_map == expected
    with pytest.raises(SystemExit):
        HfArgumentParser(ProKTTrainingArguments).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--strategy", "distill"])


def mismatched(name):
    if name == "num_labels":
        return tiny_bert(num_labels=3)
    if name == "label2id":
        return tiny_bert(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    if name == "vocabulary":
        teacher = tiny_bert(layers=2)
        teacher.resize_token_embeddings(64)
        return teacher
    raise AssertionError(name)


@pytest.mark.parametrize("problem, message", [
    ("num_labels", "num_labels=2 but the teacher has num_labels=3"),
    ("label2id", "label2id"),
    ("vocabulary", "vocabulary"),
])
def test_mismatched_pairs_are_refused_untouched(tmp_path, problem, message):
    student = tiny_bert(id2label={0: "pos", 1: "neg"}, label2id={"pos": 0, "neg": 1})
    teacher = mismatched(problem)
    before = parameters_of(student), parameters_of(teacher)
    args = make_args(tmp_path, zero_init_classifier=True)
    with pytest.raises(ValueError, match=message):
        ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(8))
    for model, saved in zip((student, teacher), before):
        assert all(torch.equal(p, saved[n]) for n, p in parameters_of(model).items())
    assert not (tmp_path / "out").exists()


def test_unnamed_labels_match_named_ones(tmp_path):
    """A pretrained teacher with default LABEL_i names pairs with a student whose labels are named."""
    student = tiny_bert(id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    ProKTTrainer(model=student, teacher_model=tiny_bert(layers=3), args=make_args(tmp_path),
                 train_dataset=toy_dataset(8))


@pytest.mark.parametrize("strategy", ["prokt", "kd"])
def test_missing_teacher(tmp_path, strategy):
    with pytest.raises(ValueError, match="needs a teacher"):
        ProKTTrainer(model=tiny_bert(), args=make_args(tmp_path, strategy=strategy), train_dataset=toy_dataset(8))


def test_multi_label_classifier_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multi-label"):
        ProKTTrainer(model=tiny_bert(problem_type="multi_label_classification"), teacher_model=tiny_bert(layers=3),
                     args=make_args(tmp_path), train_dataset=toy_dataset(8))


class LogitsOnly(nn.Module):
    """A classifier whose forward returns logits but no hidden states."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return type("Output", (), {"logits": self.head(self.embed(input_ids).mean(1)), "hidden_states": None})()


def test_hidden_weights_with_a_model_without_hidden_states(tmp_path):
    student = LogitsOnly()
    before = parameters_of(student)
    with pytest.raises(ValueError, match="returned no hidden_states"):
        ProKTTrainer(model=student, teacher_model=tiny_bert(layers=3),
                     args=make_args(tmp_path, hidden_distill_weight=1.0), train_dataset=toy_dataset(8))
    assert all(torch.equal(p, before[n]) for n, p in parameters_of(student).items())


def test_attention_weights_with_fused_attention_name_the_fix(tmp_path):
    student = tiny_bert(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        ProKTTrainer(model=student, teacher_model=tiny_bert(layers=3, attn_implementation="sdpa"),
                     args=make_args(tmp_path, attention_distill_weight=1.0), train_dataset=toy_dataset(8))


def test_layer_map_of_the_wrong_length(tmp_path):
    with pytest.raises(ValueError, match="layer_map has 3 entries but the student has 2 layers"):
        ProKTTrainer(model=tiny_bert(), teacher_model=tiny_bert(layers=4),
                     args=make_args(tmp_path, hidden_distill_weight=1.0, layer_map=[1, 2, 3]),
                     train_dataset=toy_dataset(8))


def test_training_arguments_of_the_wrong_type(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="ProKTTrainingArguments"):
        ProKTTrainer(model=tiny_bert(), teacher_model=tiny_bert(layers=3),
                     args=TrainingArguments(output_dir=str(tmp_path)))


def test_model_init_works_for_kd_and_its_student_is_checked(tmp_path):
    trainer = ProKTTrainer(teacher_model=tiny_bert(layers=3), model_init=lambda: tiny_bert(),
                           train_dataset=toy_dataset(8), args=make_args(tmp_path, strategy="kd", max_steps=1))
    trainer.train()
    with pytest.raises(ValueError, match="num_labels"):
        ProKTTrainer(teacher_model=tiny_bert(layers=3), model_init=lambda: tiny_bert(num_labels=3),
                     args=make_args(tmp_path, strategy="kd"))


def test_model_init_and_compute_loss_func_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model_init"):
        ProKTTrainer(teacher_model=tiny_bert(layers=3), model_init=tiny_bert, args=make_args(tmp_path))
    with pytest.raises(ValueError, match="compute_loss_func"):
        ProKTTrainer(model=tiny_bert(), teacher_model=tiny_bert(layers=3), args=make_args(tmp_path),
                     compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.sum())


def test_zero_init_classifier_leaves_a_kd_teacher_alone(tmp_path):
    student, teacher = tiny_bert(), tiny_bert(layers=3, hidden=24)
    head = teacher.classifier.weight.detach().clone()
    ProKTTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, strategy="kd",
                                                                      zero_init_classifier=True))
    assert torch.count_nonzero(student.classifier.weight) == 0
    assert torch.equal(teacher.classifier.weight, head)


def test_zero_init_classifier_zeroes_both_heads(tmp_path):
    student, teacher = tiny_bert(), tiny_bert(layers=3, hidden=24)
    ProKTTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, zero_init_classifier=True))
    for model in (student, teacher):
        assert torch.count_nonzero(model.classifier.weight) == 0 and torch.count_nonzero(model.classifier.bias) == 0
    assert torch.count_nonzero(student.bert.pooler.dense.weight) > 0


def test_unlabelled_training_data_is_refused_for_prokt_but_fine_for_pure_kd(tmp_path):
    unlabelled = toy_dataset(8).remove_columns("labels")
    with pytest.raises(ValueError, match="no labels"):
        ProKTTrainer(model=tiny_bert(), teacher_model=tiny_bert(layers=3), args=make_args(tmp_path),
                     train_dataset=unlabelled)
    trainer = ProKTTrainer(model=tiny_bert(), teacher_model=tiny_bert(layers=3), train_dataset=unlabelled,
                           args=make_args(tmp_path, strategy="kd", max_steps=1))
    trainer.train()
