"""`measure_compression`: parameters, safetensors size and interleaved latencies of teacher and student."""

import json

import pytest
import torch
from torch import nn

from hf_prokt import measure_compression
from tests.conftest import tiny_bert, toy_dataset


def example_batch(n=2):
    data = toy_dataset(n=n)
    return {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask", "labels")}


def test_one_layer_student_of_a_four_layer_teacher():
    teacher, student = tiny_bert(layers=4, hidden=16), tiny_bert(layers=1, hidden=16)
    teacher.train()
    student.eval()
    report = measure_compression(teacher, student, example_batch(), batch_sizes=(1, 3), repeats=3, warmup=1)

    layer = sum(p.numel() for p in teacher.bert.encoder.layer[0].parameters())
    assert report.teacher_parameters == sum(p.numel() for p in teacher.parameters())
    assert report.teacher_parameters - report.student_parameters == 3 * layer
    assert report.parameter_ratio == report.teacher_parameters / report.student_parameters > 1
    # fp32 safetensors: 4 bytes a parameter plus a JSON header of well under 64 KiB
    for size, count in ((report.teacher_size_bytes, report.teacher_parameters),
                        (report.student_size_bytes, report.student_parameters)):
        assert 4 * count < size < 4 * count + 65536
    assert report.student_size_bytes < report.teacher_size_bytes
    assert report.batch_sizes == [1, 3] and report.sequence_length == 8
    for batch_size in (1, 3):
        teacher_ms, student_ms = report.teacher_latency_ms[batch_size], report.student_latency_ms[batch_size]
        assert teacher_ms > 0 and student_ms > 0
        assert report.speedup[batch_size] == teacher_ms / student_ms
    assert teacher.training and not student.training  # modes restored
    assert report.device == "cpu" and report.repeats == 3 and report.warmup == 1


def test_to_dict_is_flat_json_with_the_first_batch_size_as_headline():
    report = measure_compression(tiny_bert(layers=2), tiny_bert(layers=1), example_batch(), batch_sizes=(2, 1),
                                 repeats=2, warmup=0)
    values = json.loads(json.dumps(report.to_dict()))
    assert values["teacher_latency_ms"] == values["teacher_latency_ms_bs2"] == report.teacher_latency_ms[2]
    assert values["student_latency_ms_bs1"] == report.student_latency_ms[1]
    assert values["speedup"] == values["teacher_latency_ms"] / values["student_latency_ms"]
    assert values["parameter_ratio"] == report.parameter_ratio
    assert {"teacher_size_bytes", "student_size_bytes", "size_ratio", "device", "torch_threads"} <= set(values)


def test_each_model_runs_warmup_plus_repeats_forwards_per_batch_size_on_the_given_rows():
    teacher, student = tiny_bert(layers=2), tiny_bert(layers=1)
    seen = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        model.register_forward_pre_hook(
            lambda module, args, kwargs, name=name: seen[name].append(
                (kwargs["input_ids"].shape[0], module.training, torch.is_grad_enabled(), "labels" in kwargs)),
            with_kwargs=True)
    measure_compression(teacher, student, example_batch(n=2), batch_sizes=(1, 5), repeats=4, warmup=2)
    for calls in seen.values():
        assert [size for size, *_ in calls] == [1] * 6 + [5] * 6
        assert all(not training and not grad and not labels for _, training, grad, labels in calls)


def test_plain_modules_are_sized_with_safetensors():
    class Net(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.linear = nn.Linear(8, width)

        def forward(self, x):
            return self.linear(x)

    report = measure_compression(Net(64), Net(8), {"x": torch.randn(2, 8)}, batch_sizes=(1,), repeats=1)
    assert report.teacher_parameters == 8 * 64 + 64 and report.student_parameters == 8 * 8 + 8
    assert report.teacher_size_bytes > 4 * report.teacher_parameters and report.sequence_length is None


def test_bad_arguments_are_refused():
    teacher, student = tiny_bert(layers=2), tiny_bert(layers=1)
    with pytest.raises(ValueError, match="repeats"):
        measure_compression(teacher, student, example_batch(), repeats=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_compression(teacher, student, example_batch(), batch_sizes=(0,))
    with pytest.raises(ValueError, match="no input tensors"):
        measure_compression(teacher, student, {"labels": torch.tensor([1])})
