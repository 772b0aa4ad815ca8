"""The Hub path (offline: the upload call is captured) and the student's model card."""

import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoModelForSequenceClassification

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.test_training import accuracy


class FakeHub:
    """Stands in for the Hub client: records what would be created and exactly which files would be uploaded."""

    def __init__(self):
        self.repos, self.uploads = [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append(repo_id)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs):
        files = []
        for root, _, names in os.walk(folder_path):
            files += [os.path.relpath(os.path.join(root, name), folder_path) for name in names]
        uploaded = set(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        contents = {name: Path(folder_path, name).read_bytes() for name in uploaded}
        self.uploads.append({"repo_id": repo_id, "files": uploaded, "contents": contents})
        return "commit"


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda *args, **kwargs: hub)
    return hub


def trained(tmp_path, local_tokenizer, **overrides):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    student.config._name_or_path = "google-bert/bert-base-uncased"
    teacher.config._name_or_path = "my-org/bert-teacher"
    data = toy_dataset(16)
    args = make_args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                     hidden_distill_weight=1.0, **overrides)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data,
                           compute_metrics=accuracy, processing_class=local_tokenizer)
    trainer.train()
    return trainer, student, teacher


def test_push_sends_the_student_alone(tmp_path, local_tokenizer, fake_hub):
    trainer, student, teacher = trained(tmp_path, local_tokenizer, hub_model_id="me/student")
    trainer.push_to_hub(dataset="toy")

    (upload,) = fake_hub.uploads
    expected = tmp_path / "expected"
    student.save_pretrained(expected)
    local_tokenizer.save_pretrained(expected)
    student_files = {str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file()}
    assert upload["files"] == student_files | {"README.md", "training_args.bin"}
    assert not any("teacher" in name or "projection" in name for name in upload["files"])
    assert (tmp_path / "out" / "checkpoint-4" / "teacher").is_dir()  # it exists, and was not pushed

    pushed = tmp_path / "pushed"
    for name, content in upload["contents"].items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_bytes(content)
    reloaded = AutoModelForSequenceClassification.from_pretrained(pushed)
    assert set(reloaded.state_dict()) == set(student.state_dict())
    assert torch.equal(reloaded.classifier.weight, student.classifier.weight)


def test_push_teacher_goes_to_its_own_repository(tmp_path, local_tokenizer, fake_hub):
    trainer, _, teacher = trained(tmp_path, local_tokenizer, hub_model_id="me/student")
    trainer.push_to_hub(push_teacher=True)
    student_upload, teacher_upload = fake_hub.uploads
    assert (student_upload["repo_id"], teacher_upload["repo_id"]) == ("me/student", "me/student-teacher")
    assert "model.safetensors" in teacher_upload["files"] and "config.json" in teacher_upload["files"]
    pushed = tmp_path / "teacher"
    pushed.mkdir()
    for name in ("model.safetensors", "config.json"):
        (pushed / name).write_bytes(teacher_upload["contents"][name])
    reloaded = AutoModelForSequenceClassification.from_pretrained(pushed)
    assert torch.equal(reloaded.classifier.weight, teacher.classifier.weight)


def test_model_card_says_how_the_student_was_distilled(tmp_path, local_tokenizer):
    trainer, student, teacher = trained(tmp_path, local_tokenizer, prokt_lambda=0.3, teacher_learning_rate=2e-4,
                                        distill_temperature=2.0, distill_alpha=0.7)
    trainer.create_model_card(dataset="nyu-mll/glue", tasks="text-classification", inference_speedup=2.5)
    card = ModelCard.load(tmp_path / "out" / "README.md")
    data = card.data
    assert data.base_model == "google-bert/bert-base-uncased"
    assert data.datasets == ["nyu-mll/glue"]
    assert {"knowledge-distillation", "prokt"} <= set(data.tags)
    accuracy_result = [r for r in data.eval_results if r.metric_type == "accuracy"]
    last_eval = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    assert accuracy_result and accuracy_result[0].metric_value == pytest.approx(last_eval["eval_accuracy"])
    assert accuracy_result[0].task_type == "text-classification"
    text = card.text
    student_size, teacher_size = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
    for needle in ("## Distillation", "my-org/bert-teacher", "prokt_lambda: 0.3", "teacher_learning_rate: 0.0002",
                   "distill_temperature: 2.0", "distill_alpha: 0.7", "hidden_distill_weight: 1.0", "2.50x",
                   f"{student_size:,}", f"{teacher_size / student_size:.2f}x",
                   f"{last_eval['eval_teacher_accuracy']:.4f}"):
        assert needle in text, needle


def test_save_model_writes_the_card_and_local_paths_are_not_base_models(tmp_path, local_tokenizer):
    trainer, student, _ = trained(tmp_path, local_tokenizer, strategy="kd")
    student.config._name_or_path = str(tmp_path)  # a local folder is no Hub id
    trainer.save_model(str(tmp_path / "final"))
    card = ModelCard.load(tmp_path / "final" / "README.md")
    assert card.data.base_model is None
    assert "knowledge-distillation" in card.data.tags and "prokt" not in card.data.tags
    assert "strategy=\"kd\"" in card.text and "prokt_lambda" not in card.text
