"""A diverging teacher or student stops the run loudly, before the poisoned step, with nothing non-finite saved."""

import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_prokt import ProKTTrainer
from hf_prokt.robustness.nonfinite import NonFiniteGuard, NonFiniteLossError
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.test_distributed import free_port

DIVERGING = {"teacher": {"teacher_learning_rate": 1e12}, "student": {"learning_rate": 1e12}}
WATCHED = ("grad_norm", "teacher_loss", "kl_student_teacher", "student_distill_loss")


class LogsPerStep(TrainerCallback):
    def __init__(self):
        self.logs = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "teacher_loss" in logs:
            self.logs[state.global_step] = logs


def build(tmp_path, **overrides):
    args = make_args(tmp_path, max_steps=5, save_strategy="steps", save_steps=1, **overrides)
    return ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, hidden=24, seed=2), args=args,
                        train_dataset=toy_dataset(64))


def first_nonfinite_step(logs: dict) -> int:
    return min(step for step, values in logs.items() if not all(math.isfinite(values[k]) for k in WATCHED))


@pytest.mark.parametrize("diverging", ["teacher", "student"])
def test_divergence_stops_at_the_first_nonfinite_step_and_the_opt_out_trains_on(tmp_path, diverging):
    # The Trainer's behaviour (opt-out): training goes on to max_steps, with non-finite terms in the logs.
    silent = build(tmp_path / "silent", stop_on_nonfinite=False, **DIVERGING[diverging])
    recorder = LogsPerStep()
    silent.add_callback(recorder)
    assert silent.train().global_step == 5
    expected_step = first_nonfinite_step(recorder.logs)
    assert expected_step < 5

    guarded = build(tmp_path / "guarded", **DIVERGING[diverging])
    with pytest.raises(NonFiniteLossError) as error:
        guarded.train()
    message = str(error.value)
    assert f"at optimizer step {expected_step}:" in message
    assert f"the {diverging}'s" in message and " is nan" in message
    rate = "teacher_learning_rate" if diverging == "teacher" else "learning_rate"
    assert f"a lower {rate} (now 1e+12)" in message and "stop_on_nonfinite=False" in message
    out = tmp_path / "guarded" / "out"
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == [f"checkpoint-{s}" for s in range(1, expected_step)]
    if checkpoints:
        assert f"The last complete checkpoint is {checkpoints[-1]}" in message
    else:
        assert "No complete checkpoint exists" in message
    assert guarded.state.global_step == expected_step - 1
    for checkpoint in checkpoints:  # everything written is finite
        for name in ("model.safetensors", "teacher/model.safetensors"):
            assert all(torch.isfinite(t).all() for t in load_file(checkpoint / name).values()), name
        for name in ("optimizer.pt", "teacher_optimizer.pt"):
            state = torch.load(checkpoint / name, weights_only=False)["state"]
            assert all(torch.isfinite(t).all() for s in state.values() for t in s.values() if torch.is_tensor(t))
    assert not (out / "model.safetensors").exists() and not (out / "README.md").exists()


def test_the_guard_reports_the_first_nonfinite_term_and_forgets_after_a_check():
    guard = NonFiniteGuard(reduce_sum=lambda t: t * 2, num_processes=2)  # two processes holding the same values
    guard.add("teacher", "teacher_loss", torch.tensor(1.5))
    guard.add("teacher", "teacher_loss", torch.tensor(0.5))
    guard.check(3, "teacher", torch.tensor(2.0), lambda model: "")  # all finite: passes, and forgets
    guard.add("student", "anchor", torch.tensor(float("inf")))
    guard.add("teacher", "teacher_loss", torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"step 7: the student's anchor is inf \(averaged over 2 processes\)"
                                                 r"\. The teacher's optimizer has not stepped on it\. fix it"):
        guard.check(7, "teacher", torch.tensor(1.0), lambda model: f"fix it ({model})")
    guard.check(8, "student", None, lambda model: "")  # nothing left over from the failed check
    with pytest.raises(NonFiniteLossError, match="the student's gradient norm is inf"):
        guard.check(9, "student", float("inf"), lambda model: "")


def test_fp16_infinite_gradients_are_left_to_the_grad_scaler(tmp_path):
    """A GradScaler skips a step whose gradients overflowed: that is not an error. The losses are still checked."""
    trainer = build(tmp_path)
    checked = []
    trainer._guards["student"].check = lambda step, stepping, grad_norm, advice: checked.append(grad_norm)
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
    trainer._check_finite("student", torch.tensor(float("inf")))
    trainer.accelerator.scaler = None
    trainer._check_finite("student", torch.tensor(float("inf")))
    assert checked[0] is None and torch.isinf(checked[1])


def test_stop_on_nonfinite_is_validated(tmp_path):
    with pytest.raises(ValueError, match="stop_on_nonfinite: 'no' is not a boolean"):
        make_args(tmp_path, stop_on_nonfinite="no")


WORKER = os.path.join(os.path.dirname(__file__), "nonfinite_worker.py")


def test_two_processes_stop_together(tmp_path):
    """DDP on two real processes (gloo): the check is summed over processes, so both raise at the same step
    (neither is left waiting in a collective), naming the teacher."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                             "127.0.0.1", "--master_port", str(free_port()), WORKER, str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1]
    assert "at optimizer step 1: the teacher's" in messages[0] and "averaged over 2 processes" in messages[0]
