"""FSDP2 with a teacher, on real CPU processes (gloo): ProKT's teacher sharded like the student, a KD teacher
whole on every process; equal to one process, exact resume, and the refused combinations.

accelerate runs FSDP only on accelerators; `tests/fsdp_cpu.py` switches its state to FSDP on CPU so that the
real FSDP2 code runs here (see that file). The GPU path is the same code on another device."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from hf_prokt.strategies import check_trainer_setup
from tests.test_distributed import free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "fsdp_worker.py")


def launch(tmp_path, name, processes, per_device_batch, mode, strategy, extra=""):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           # the processes import hf_prokt from this checkout, not from wherever it is installed
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
    out = tmp_path / name
    command = [WORKER, str(out), str(per_device_batch), mode, strategy, extra]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                   "--master_port", str(free_port()), *command]
    result = subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    return result, out


def weights(folder):
    return torch.load(folder / "weights.pt")


def assert_same(a, b, atol):
    for model in ("student", "teacher"):
        assert set(a[model]) == set(b[model])
        for name, value in b[model].items():
            torch.testing.assert_close(a[model][name], value, atol=atol, rtol=0, msg=f"{model}.{name}")


@pytest.mark.parametrize("strategy, per_device_two, per_device_one, extra", [
    ("prokt", 8, 16, ""),
    ("prokt", 4, 8, "gradient_accumulation_steps=2"),  # the teacher's window: no gradient sync until its end
    ("kd", 8, 16, ""),
], ids=["prokt", "prokt-accumulation", "kd"])
def test_fsdp2_two_processes_equal_one(tmp_path, strategy, per_device_two, per_device_one, extra):
    result, two = launch(tmp_path, "two", 2, per_device_two, "fsdp", strategy, extra)
    assert result.returncode == 0, result.stderr[-3000:]
    result, one = launch(tmp_path, "one", 1, per_device_one, "none", strategy, extra)
    assert result.returncode == 0, result.stderr[-3000:]
    sharded, single = weights(two), weights(one)
    assert (sharded["world_size"], sharded["fsdp"], single["world_size"]) == (2, True, 1)
    assert_same(sharded, single, atol=1e-5)
    if strategy == "prokt":  # the sharded teacher changed, and is evaluated like the student
        teacher_losses = (sharded["metrics"]["eval_teacher_loss"], single["metrics"]["eval_teacher_loss"])
        assert teacher_losses[0] == pytest.approx(teacher_losses[1], abs=1e-5)
    assert sharded["metrics"]["eval_loss"] == pytest.approx(single["metrics"]["eval_loss"], abs=1e-5)


def test_fsdp2_prokt_resumes_exactly(tmp_path):
    """4 steps with a checkpoint at step 2, against resuming from that checkpoint: identical models."""
    result, full = launch(tmp_path, "full", 2, 8, "fsdp", "prokt", "max_steps=4,save_strategy=steps,save_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = full / "out" / "checkpoint-2"
    assert (checkpoint / "teacher" / "model.safetensors").exists() and (checkpoint / "teacher_optimizer.pt").exists()
    result, resumed = launch(tmp_path, "resumed", 2, 8, "fsdp", "prokt",
                             f"max_steps=4,resume_from_checkpoint={checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same(weights(resumed), weights(full), atol=0)


@pytest.mark.parametrize("mode, extra, message", [
    ("fsdp1", "", "FSDP2 only, and this is FSDP1"),
    ("fsdp", "hidden_distill_weight=1.0", "intermediate distillation terms .* not supported under FSDP"),
])
def test_unsupported_sharded_setups_are_refused_before_training(tmp_path, mode, extra, message):
    result, out = launch(tmp_path, "run", 2, 8, mode, "prokt", extra)
    assert result.returncode != 0
    assert __import__("re").search(message, result.stderr), result.stderr[-3000:]
    assert not (out / "weights.pt").exists() and not list((out / "out").glob("checkpoint-*"))


def test_deepspeed_with_a_teacher_refuses_checkpoints_offload_and_intermediate_terms():
    """Checked before anything is built, without deepspeed installed (tests/test_deepspeed.py runs the engines)."""
    from hf_prokt.deepspeed.engines import refuse_unsupported

    def ds_args(zero: dict, **fields):
        fields = {"uses_intermediate_terms": False, "save_strategy": "no", "save_on_sigterm": False, **fields}
        return SimpleNamespace(hf_deepspeed_config=SimpleNamespace(config={"zero_optimization": zero}),
                               deepspeed_plugin=None, **fields)

    for strategy in ("kd", "prokt"):
        refuse_unsupported(ds_args({"stage": 3}), strategy)  # supported: no checkpoints, no offload
        with pytest.raises(ValueError, match=r"checkpoints with a teacher under DeepSpeed are not written yet "
                                             r"\(save_strategy='steps', save_on_sigterm=True\).*save_strategy='no'"):
            refuse_unsupported(ds_args({"stage": 2}, save_strategy="steps", save_on_sigterm=True), strategy)
        with pytest.raises(ValueError, match=r"offload \(offload_param\)"):
            refuse_unsupported(ds_args({"stage": 3, "offload_param": {"device": "cpu"}}), strategy)
        with pytest.raises(ValueError, match="intermediate distillation terms"):
            refuse_unsupported(ds_args({"stage": 2}, uses_intermediate_terms=True), strategy)
    refuse_unsupported(SimpleNamespace(hf_deepspeed_config=None, deepspeed_plugin=None), "prokt")  # no DeepSpeed
    check_trainer_setup(SimpleNamespace(strategy="finetune", deepspeed="ds.json"), {})
