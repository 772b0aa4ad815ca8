"""DeepSpeed ZeRO with a teacher, on real CPU processes (gloo): a ProKT teacher with its own engine at the
student's ZeRO stage, a KD teacher in an inference engine (partitioned under ZeRO-3); equal to one plain
process, and the refused combinations.

DeepSpeed's CPU accelerator JIT-compiles its shared-memory communication op on first use (about a minute,
once per machine, cached under ~/.cache/torch_extensions): the `compiled_comm_op` fixture builds it in this
process before any worker starts, so the workers only load it."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("deepspeed")

from hf_prokt.deepspeed.engines import refuse_unsupported  # noqa: E402
from tests.test_distributed import free_port  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "deepspeed_worker.py")
CPU = {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def compiled_comm_op():
    """DeepSpeed's CPU communication op, compiled (or loaded from the cache) by one process."""
    code = "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load(verbose=False)"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **CPU}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def launch(tmp_path, name, processes, per_device_batch, stage, strategy, extra=""):
    env = {**os.environ, **CPU,
           # the processes import hf_prokt from this checkout, not from wherever it is installed
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
    out = tmp_path / name
    out.mkdir()
    command = [WORKER, str(out), str(per_device_batch), str(stage), strategy, extra]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                   "--master_port", str(free_port()), *command]
    result = subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


def results(folder):
    ranks = [json.loads(path.read_text()) for path in sorted(folder.glob("rank*.json"))]
    return torch.load(folder / "weights.pt"), ranks


def assert_same(a, b, atol):
    for model in ("student", "teacher"):
        assert set(a[model]) == set(b[model])
        for name, value in b[model].items():
            torch.testing.assert_close(a[model][name], value, atol=atol, rtol=0, msg=f"{model}.{name}")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The plain one-process runs with twice the per-device batch, one per strategy (shared by the stages)."""
    runs = {}

    def run(strategy):
        if strategy not in runs:
            runs[strategy] = results(launch(tmp_path_factory.mktemp("one"), "one", 1, 16, -1, strategy))
        return runs[strategy]

    return run


@pytest.mark.parametrize("strategy, stage", [("prokt", 2), ("prokt", 3), ("kd", 2), ("kd", 3)],
                         ids=["prokt-zero2", "prokt-zero3", "kd-zero2", "kd-zero3"])
def test_zero_two_processes_equal_one(tmp_path, compiled_comm_op, one_process, strategy, stage):
    """2 processes with a per-device batch of 8 under ZeRO end with the models, training losses and evaluation
    loss of one plain process with a batch of 16 (to 2e-6: ZeRO reduces and steps flat fp32 buffers)."""
    (zero, ranks), (single, _) = results(launch(tmp_path, "zero", 2, 8, stage, strategy)), one_process(strategy)
    assert (zero["world_size"], zero["deepspeed"], single["world_size"], single["deepspeed"]) == (2, True, 1, False)
    assert zero["teacher_engine"] == "DeepSpeedEngine"
    assert_same(zero, single, atol=2e-6)
    assert zero["losses"] == pytest.approx(single["losses"], abs=1e-6) and len(zero["losses"]) == 3
    assert zero["metrics"]["eval_loss"] == pytest.approx(single["metrics"]["eval_loss"], abs=1e-6)
    if strategy == "prokt":  # the teacher was trained
        assert max(float((single["teacher"][k] - single["initial_teacher"][k]).abs().max())
                   for k in single["teacher"]) > 1e-3
    assert ranks[0]["losses"] == ranks[1]["losses"]
    # ZeRO-3 partitions both models (a KD teacher too: each process holds a part); ZeRO-1/2 keep them whole.
    for rank in ranks:
        held = rank["local_parameters"]
        if stage == 3:
            assert 0 < held["teacher"] < rank["total_parameters"]["teacher"]
            assert 0 < held["student"] < rank["total_parameters"]["student"]
        else:
            assert held == rank["total_parameters"]
    if stage < 3:
        assert ranks[0]["student_checksum"] == ranks[1]["student_checksum"]


def ds_args(config: dict, **fields):
    fields = {"uses_intermediate_terms": False, **fields}
    return SimpleNamespace(hf_deepspeed_config=SimpleNamespace(config=config), deepspeed_plugin=None, **fields)


@pytest.mark.parametrize("strategy, config, fields, message", [
    ("prokt", {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, {},
     r"offload \(offload_optimizer\) with a teacher"),
    ("kd", {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}, {}, r"offload \(offload_param\)"),
    ("kd", {"zero_optimization": {"stage": 2}}, {"uses_intermediate_terms": True},
     "intermediate distillation terms .* not supported under DeepSpeed"),
    ("prokt", {"zero_optimization": {"stage": 1}, "optimizer": {"type": "AdamW"}}, {},
     "'optimizer' block.*Remove the block"),
    ("kd", {"zero_optimization": {"stage": 3}}, {"save_strategy": "steps"},
     r"checkpoints with a teacher under DeepSpeed are not written yet \(save_strategy='steps'\)"),
    ("prokt", {"zero_optimization": {"stage": 2}}, {"save_on_sigterm": True}, r"save_on_sigterm=True"),
], ids=["offload-optimizer", "offload-param", "intermediate", "optimizer-block", "checkpoints", "sigterm-save"])
def test_refused_combinations(strategy, config, fields, message):
    args = ds_args(config, **fields)
    with pytest.raises(ValueError, match=message):
        refuse_unsupported(args, strategy)


def test_supported_configurations_pass():
    refuse_unsupported(ds_args({"zero_optimization": {"stage": 3, "offload_param": {"device": "none"}}}), "prokt")
    refuse_unsupported(ds_args({"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}}), "kd")
    refuse_unsupported(SimpleNamespace(hf_deepspeed_config=None, deepspeed_plugin=None), "prokt")  # no DeepSpeed
