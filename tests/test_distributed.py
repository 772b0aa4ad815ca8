"""Real multi-process ProKT (DDP, gloo, CPU): two processes equal one process with twice the batch."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.skipif(shutil.which("torchrun") is None and not hasattr(torch.distributed, "run"),
                    reason="torch.distributed.run is unavailable")
@pytest.mark.parametrize("extra, per_device_two, per_device_one", [
    ("", 8, 16),
    ("prokt_constraint=dual,dual_lr=5.0,gradient_accumulation_steps=2", 4, 8),
], ids=["penalty", "dual-accumulation"])
def test_two_processes_equal_one(tmp_path, extra, per_device_two, per_device_one):
    two, one = tmp_path / "two", tmp_path / "one"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), WORKER, str(two), str(per_device_two), extra], tmp_path)
    run([sys.executable, WORKER, str(one), str(per_device_one), extra], tmp_path)
    distributed, single = torch.load(two / "weights.pt"), torch.load(one / "weights.pt")
    assert (distributed["world_size"], single["world_size"]) == (2, 1)
    for model in ("student", "teacher"):
        for name, value in single[model].items():
            torch.testing.assert_close(distributed[model][name], value, atol=1e-6, rtol=0, msg=f"{model}.{name}")
    assert distributed["beta"] == pytest.approx(single["beta"], abs=1e-6)
    if "dual" in extra:
        assert single["beta"] != pytest.approx(0.5)
