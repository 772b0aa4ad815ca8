"""How the step runs: passes, graphs, output flags, accumulation lockstep, mixed precision."""

import pytest
import torch

from hf_prokt import ProKTTrainer
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset


class ForwardRecorder:
    """Records, for every forward of a model: grad mode, train mode and the output flags it was asked for."""

    def __init__(self, model):
        self.calls = []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.calls.append({
            "grad": torch.is_grad_enabled(),
            "training": module.training,
            "hidden": bool(kwargs.get("output_hidden_states")),
            "attentions": bool(kwargs.get("output_attentions")),
        })


def train(tmp_path, student, teacher, data=None, recorders=(), **overrides):
    """Build the trainer and train; the recorders then hold the training forwards only."""
    args = make_args(tmp_path, **overrides)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data or toy_dataset(32))
    for recorder in recorders:  # the construction probe: one forward per model, eval mode, no graph
        assert len(recorder.calls) == 1 and not recorder.calls[0]["grad"] and not recorder.calls[0]["training"]
        recorder.calls.clear()
    trainer.train()
    return trainer


@pytest.mark.parametrize("anchor", ["eval", "train"])
@pytest.mark.parametrize("target, teacher_forwards", [("updated", 2), ("stale", 1)])
def test_passes_per_step(tmp_path, target, teacher_forwards, anchor):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    student_calls, teacher_calls = ForwardRecorder(student), ForwardRecorder(teacher)
    train(tmp_path, student, teacher, max_steps=3, prokt_target=target, prokt_anchor=anchor,
          recorders=(student_calls, teacher_calls))

    # Per step: for the eval anchor, the anchor's forward (no graph, eval mode), then the student's training
    # forward (graph, train mode). With the train anchor the training forward's logits are the anchor.
    student_forwards = 2 if anchor == "eval" else 1
    assert len(student_calls.calls) == 3 * student_forwards
    for step in range(3):
        calls = student_calls.calls[step * student_forwards:(step + 1) * student_forwards]
        assert calls[-1]["grad"] and calls[-1]["training"]
        if anchor == "eval":
            assert not calls[0]["grad"] and not calls[0]["training"]
    assert len(teacher_calls.calls) == 3 * teacher_forwards
    for step in range(3):
        calls = teacher_calls.calls[step * teacher_forwards:(step + 1) * teacher_forwards]
        assert calls[0]["grad"] and calls[0]["training"]  # the teacher step
        if target == "updated":  # the local target: after the step, no graph, eval mode
            assert not calls[1]["grad"] and not calls[1]["training"]
    # No intermediate term is on: no model is asked for hidden states or attentions.
    assert not any(c["hidden"] or c["attentions"] for c in student_calls.calls + teacher_calls.calls)


@pytest.mark.parametrize("strategy, anchor, step_passes", [
    # The targets first: the student's graph is not alive while the teacher runs (a lower peak memory).
    ("prokt", "eval", [("student", False, False), ("teacher", True, True), ("teacher", False, False),
                       ("student", True, True)]),
    ("kd", "eval", [("teacher", False, False), ("student", True, True)]),
    # The training forward's logits are the anchor: it must come first, its graph alive through the teacher's step.
    ("prokt", "train", [("student", True, True), ("teacher", True, True), ("teacher", False, False)]),
])
def test_order_of_the_passes(tmp_path, strategy, anchor, step_passes):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    passes = []  # (model, grad enabled, train mode) of every forward, both models in one sequence
    for name, model in (("student", student), ("teacher", teacher)):
        model.register_forward_pre_hook(
            lambda module, args, name=name: passes.append((name, torch.is_grad_enabled(), module.training)))
    trainer = ProKTTrainer(model=student, teacher_model=teacher, train_dataset=toy_dataset(32),
                           args=make_args(tmp_path, max_steps=2, strategy=strategy, prokt_anchor=anchor))
    passes.clear()  # the construction probe
    trainer.train()
    assert passes == step_passes * 2


def test_hidden_states_requested_only_when_needed(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=4, hidden=24, seed=2)
    student_calls, teacher_calls = ForwardRecorder(student), ForwardRecorder(teacher)
    train(tmp_path, student, teacher, max_steps=2, hidden_distill_weight=1.0, recorders=(student_calls, teacher_calls))
    # The training forward of each step returns hidden states, never attentions; the anchor's (no graph)
    # needs logits only.
    training_student_calls = [c for c in student_calls.calls if c["grad"]]
    assert len(training_student_calls) == 2
    assert all(c["hidden"] and not c["attentions"] for c in training_student_calls)
    assert not any(c["hidden"] or c["attentions"] for c in student_calls.calls if not c["grad"])
    training_teacher_calls = [c for c in teacher_calls.calls if c["grad"]]
    target_calls = [c for c in teacher_calls.calls if not c["grad"]]
    assert not any(c["hidden"] for c in training_teacher_calls)  # the teacher step needs logits only
    assert all(c["hidden"] for c in target_calls)


def test_kd_teacher_is_frozen_in_eval_mode_without_optimizer(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2, dropout=0.1)
    before = parameters_of(teacher)
    calls = ForwardRecorder(teacher)
    trainer = train(tmp_path, student, teacher, strategy="kd", max_steps=3, recorders=(calls,))
    assert trainer.teacher_optimizer is None and trainer.teacher_lr_scheduler is None
    assert len(calls.calls) == 3
    assert not any(c["grad"] or c["training"] for c in calls.calls)
    for name, value in parameters_of(teacher).items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in teacher.parameters())


def test_finetune_needs_no_teacher(tmp_path):
    student = tiny_bert(seed=1)
    before = parameters_of(student)
    trainer = train(tmp_path, student, None, strategy="finetune", max_steps=3)
    assert trainer.teacher_model is None
    assert any(not torch.equal(p, before[n]) for n, p in parameters_of(student).items())


def test_teacher_steps_in_lockstep_with_accumulation(tmp_path):
    """2 micro-batches of 8 accumulated == 1 batch of 16 for both models (dropout off, SGD)."""
    data = toy_dataset(32, seed=4)
    common = dict(optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, learning_rate=0.5,
                  teacher_learning_rate=0.3, max_steps=2)
    models = {}
    for name, batch, accumulation in (("accumulated", 8, 2), ("full", 16, 1)):
        student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
        steps = []
        teacher_step = None
        trainer = ProKTTrainer(model=student, teacher_model=teacher, train_dataset=data, args=make_args(
            tmp_path / name, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, **common))
        trainer.train()
        teacher_step = trainer.teacher_lr_scheduler.last_epoch
        steps.append(teacher_step)
        models[name] = (student, teacher, trainer.state.global_step, teacher_step)
    (s_acc, t_acc, steps_acc, t_steps_acc), (s_full, t_full, steps_full, t_steps_full) = (
        models["accumulated"], models["full"])
    assert steps_acc == steps_full == 2
    assert t_steps_acc == t_steps_full == 2  # the teacher stepped once per student optimizer step
    for a, b in ((s_acc, s_full), (t_acc, t_full)):
        expected = parameters_of(b)
        for name, value in parameters_of(a).items():
            torch.testing.assert_close(value, expected[name], atol=2e-5, rtol=0)


def test_stale_target_with_accumulation_runs_and_steps_teacher_once(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    calls = ForwardRecorder(teacher)
    trainer = train(tmp_path, student, teacher, gradient_accumulation_steps=2, per_device_train_batch_size=4,
                    max_steps=2, prokt_target="stale", recorders=(calls,))
    assert trainer.teacher_lr_scheduler.last_epoch == 2
    assert len(calls.calls) == 4  # one teacher forward per micro-batch, all in the teacher step
    assert all(c["grad"] for c in calls.calls)


def test_teacher_and_its_optimizer_go_through_the_accelerator(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    trainer = train(tmp_path, student, teacher, max_steps=4, warmup_steps=1, teacher_learning_rate=2e-3)
    accelerator = trainer.accelerator
    assert any(accelerator.unwrap_model(m) is teacher for m in accelerator._models)
    assert any(opt.optimizer is trainer.teacher_optimizer.optimizer for opt in accelerator._optimizers)
    # The teacher's schedule has the student's shape (warm-up, then linear decay) at its own peak rate.
    logs = [entry for entry in trainer.state.log_history if "teacher_learning_rate" in entry]
    assert [entry["learning_rate"] for entry in logs] == pytest.approx([0.0, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3])
    assert [entry["teacher_learning_rate"] for entry in logs] == pytest.approx([0.0, 2e-3, 2e-3 * 2 / 3, 2e-3 / 3])


def test_teacher_optimizer_mirrors_the_students(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    trainer = train(tmp_path, student, teacher, max_steps=1, optim="adamw_torch", weight_decay=0.1,
                    adam_beta1=0.8, teacher_learning_rate=2e-5)
    student_opt, teacher_opt = trainer.optimizer.optimizer, trainer.teacher_optimizer.optimizer
    assert type(student_opt) is type(teacher_opt)
    assert teacher_opt.defaults["betas"] == student_opt.defaults["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in teacher_opt.param_groups] == [0.1, 0.0]
    assert teacher_opt.param_groups[0]["initial_lr"] == pytest.approx(2e-5)
    named = dict(teacher.named_parameters())
    no_decay = {id(p) for p in teacher_opt.param_groups[1]["params"]}
    assert id(named["bert.encoder.layer.0.attention.output.LayerNorm.weight"]) in no_decay
    assert id(named["classifier.bias"]) in no_decay


def test_bf16_autocast_applies_to_both_models(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    dtypes = {"student": set(), "teacher": set()}

    def watch(name):
        def hook(module, args, output):
            dtypes[name].add(output.dtype)
        return hook

    student.bert.encoder.layer[0].attention.self.query.register_forward_hook(watch("student"))
    teacher.bert.encoder.layer[0].attention.self.query.register_forward_hook(watch("teacher"))
    train(tmp_path, student, teacher, max_steps=1, bf16=True)
    assert dtypes["student"] == {torch.bfloat16}
    assert dtypes["teacher"] == {torch.bfloat16}


def test_kd_teacher_in_bf16_inference_only(tmp_path):
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    outputs = []
    teacher.register_forward_hook(lambda module, args, output: outputs.append(output.logits.dtype))
    trainer = train(tmp_path, student, teacher, strategy="kd", teacher_dtype="bfloat16", max_steps=3)
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in student.parameters()} == {torch.float32}
    assert outputs == [torch.bfloat16] * 4 and trainer.teacher_optimizer is None  # the probe, then 3 steps
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(loss == loss and loss < 10 for loss in losses)


def test_teacher_dtype_is_for_frozen_teachers_only(tmp_path):
    with pytest.raises(ValueError, match="teacher_dtype"):
        make_args(tmp_path, teacher_dtype="bfloat16")
