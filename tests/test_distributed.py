"""Real multi-process ProKT (DDP, gloo, CPU): two processes equal one process with twice the batch."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           # the processes import hf_prokt from this checkout, not from wherever it is installed
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
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


def test_run_glue_under_two_processes_saves_once_and_resumes(tmp_path):
    """The GLUE example under a real 2-process launch: one student saved, checkpoints that resume."""
    from tests.test_run_glue import common_args, model_dirs_in, single_sentence_files

    models = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    script = os.path.join(os.path.dirname(WORKER), "..", "examples", "glue", "run_glue.py")
    argv = common_args(tmp_path, train_file=train, validation_file=dev, teacher_model_name_or_path=models["teacher"],
                       student_num_layers=2, max_steps=4, save_strategy="steps", save_steps=2,
                       per_device_train_batch_size=4)

    def launch(extra):
        run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
             "--master_port", str(free_port()), script, *argv, *extra], tmp_path)

    launch([])
    out = tmp_path / "out"
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and (out / "checkpoint-4" / "teacher" / "model.safetensors").exists()
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 48
    assert (out / "model.safetensors").exists() and (out / "eval_results.json").exists()
    launch(["--max_steps", "6", "--resume_from_checkpoint", str(out / "checkpoint-4")])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_image_example_under_two_processes_with_feature_maps(tmp_path):
    """The image example on digits under a real 2-process launch, ProKT with stage-output distillation:
    each process reads its shard, one student and one checkpoint are written, and training resumes."""
    script = os.path.join(os.path.dirname(WORKER), "..", "examples", "image_classification",
                          "run_image_classification.py")
    out = tmp_path / "out"
    argv = ["--teacher_config", "resnet-tiny", "--student_config", "resnet-tiny", "--strategy", "prokt",
            "--hidden_distill_weight", "1.0", "--max_train_samples", "64", "--max_eval_samples", "20",
            "--per_device_train_batch_size", "8", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
            "--do_train", "--do_eval", "--output_dir", str(out), "--report_to", "none", "--use_cpu", "True",
            "--disable_tqdm", "True"]

    def launch(extra):
        run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
             "--master_port", str(free_port()), script, *argv, *extra], tmp_path)

    launch([])
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "teacher" / "model.safetensors").exists()
    assert (checkpoint / "distillation_projections.pt").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["train_batch_size"] == 8
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 20
    launch(["--max_steps", "3", "--resume_from_checkpoint", str(checkpoint)])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
