"""PEFT (LoRA) students and teachers: what trains, what stays bit-identical, what is saved and reloads."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset


def lora(model):
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    return get_peft_model(model, config)


def split_changes(before, model):
    changed, unchanged = set(), set()
    for name, value in parameters_of(model).items():
        (unchanged if torch.equal(value, before[name]) else changed).add(name)
    return changed, unchanged


@pytest.mark.parametrize("strategy", ["finetune", "kd", "prokt"])
def test_lora_student_trains_its_adapter_only_and_saves_it(tmp_path, strategy):
    base_student = tiny_bert(seed=1)
    student = lora(base_student)
    teacher = None if strategy == "finetune" else tiny_bert(layers=3, hidden=24, seed=2)
    before = parameters_of(student)
    args = make_args(tmp_path, strategy=strategy, max_steps=3, learning_rate=1e-2)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(24))
    trainer.train()

    changed, unchanged = split_changes(before, student)
    trainable = {name for name, p in student.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any("lora_" in name for name in changed)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert {name for name in unchanged if "lora_" not in name and "modules_to_save" not in name} == {
        name for name in before if "lora_" not in name and "modules_to_save" not in name}

    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(tiny_bert(seed=1), out)
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)
    merged = reloaded.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_lora_teacher_in_prokt_keeps_its_base_bit_identical(tmp_path):
    student = tiny_bert(seed=1)
    teacher = lora(tiny_bert(layers=3, hidden=24, seed=2))
    before = parameters_of(teacher)
    args = make_args(tmp_path, max_steps=4, teacher_learning_rate=1e-2, save_strategy="steps", save_steps=2)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(24))
    trainer.train()

    in_optimizer = {id(p) for group in trainer.teacher_optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in teacher.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    changed, unchanged = split_changes(before, teacher)
    assert changed and all("lora_" in n or "modules_to_save" in n for n in changed)
    base = [n for n in before if "lora_" not in n and "modules_to_save" not in n]
    assert base and set(base) <= unchanged

    checkpoint = tmp_path / "out" / "checkpoint-4" / "teacher"
    assert (checkpoint / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(tiny_bert(layers=3, hidden=24, seed=2), checkpoint)
    ids = torch.tensor(toy_dataset(4)["input_ids"])
    teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, teacher(input_ids=ids).logits)


def test_lora_teacher_resumes(tmp_path):
    from tests.test_checkpoints import StopAfter

    def build(folder):
        student, teacher = tiny_bert(seed=1), lora(tiny_bert(layers=3, hidden=24, seed=2))
        args = make_args(folder, max_steps=4, teacher_learning_rate=1e-2, save_strategy="steps", save_steps=2)
        return ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(24)), teacher

    straight, straight_teacher = build(tmp_path / "a")
    straight.train()
    first, _ = build(tmp_path / "b")
    first.add_callback(StopAfter(2))
    first.train()
    resumed, resumed_teacher = build(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-2"))
    expected = parameters_of(straight_teacher)
    for name, value in parameters_of(resumed_teacher).items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
