"""`end_process`: under a process group, every process exits 0 after Python's exit work is done by hand."""

import os
import subprocess
import sys

from hf_prokt.scripting.shutdown import end_process
from tests.test_distributed import free_port

SCRIPT = """
import atexit, os, sys, threading, time
import torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from hf_prokt.scripting.shutdown import end_process
dist.init_process_group("gloo")
rank = dist.get_rank()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))  # keeps the group alive
model(torch.ones(2, 4)).sum().backward()
dist.all_reduce(torch.ones(100))
atexit.register(lambda: open(os.path.join({out!r}, f"atexit{{rank}}"), "w").close())
def late():
    time.sleep(0.5)
    open(os.path.join({out!r}, f"thread{{rank}}"), "w").close()
threading.Thread(target=late).start()
sys.stdout.write(f"unflushed{{rank}}")  # no newline: still in the buffer at the exit
end_process()
raise AssertionError("end_process returned")
"""


def test_end_process_runs_the_exit_work_and_exits_zero_on_every_process(tmp_path):
    script = tmp_path / "script.py"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script.write_text(SCRIPT.format(root=root, out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                             "127.0.0.1", "--master_port", str(free_port()), str(script)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"atexit{rank}").exists() and (tmp_path / f"thread{rank}").exists()
        assert f"unflushed{rank}" in result.stdout
    assert "end_process returned" not in result.stderr


def test_end_process_returns_in_a_single_process():
    assert end_process() is None
