"""The final `save_model` is atomic per file and cleans up after itself (`hf_prokt.robustness.final_save`): a
SIGKILL in the middle of writing the weights leaves no partial file among the run's, the next save or run removes
what it left, and a full disk (injected, and a real tmpfs where mounting is permitted) raises "No space left on
device" naming the folder, with the partial save removed and the earlier files untouched."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors import safe_open
from transformers import BertConfig, BertForSequenceClassification

from hf_prokt import ProKTTrainer
from hf_prokt.robustness.disk_full import NoSpaceLeftError
from hf_prokt.robustness.final_save import STAGING_NAME
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.disk_space import FullDisk
from tests.mounts import tmpfs

WORKER = os.path.join(os.path.dirname(__file__), "kill_during_final_save_worker.py")


def big_student_trainer(output_dir, seed: int = 0) -> ProKTTrainer:
    """A fine-tuning trainer whose student's weights take 41 MB (a large vocabulary), so that writing them lasts."""
    config = BertConfig(vocab_size=80_000, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    import torch

    torch.manual_seed(seed)
    args = make_args(__import__("pathlib").Path(output_dir), output_dir=str(output_dir), strategy="finetune")
    return ProKTTrainer(model=BertForSequenceClassification(config), args=args)


def temp_files(folder):
    """Every ``.tmp*`` file under ``folder`` (relative paths)."""
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder)
                  for name in names if name.startswith(".tmp"))


def weight_names(path):
    with safe_open(str(path), "pt") as handle:
        return set(handle.keys())


def test_a_kill_while_the_weights_are_written_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out"
    big_student_trainer(out, seed=1).save_model()  # the earlier run's student
    earlier = (out / "model.safetensors").read_bytes()
    names = weight_names(out / "model.safetensors")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(WORKER)), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, WORKER, str(out)], stdout=subprocess.PIPE, stderr=log, env=env)
    for line in worker.stdout:  # libraries may print first
        if line.strip() == b"ready":
            break
    deadline, seen = time.monotonic() + 120, []
    while not seen and time.monotonic() < deadline and worker.poll() is None:
        seen = temp_files(out)
    worker.kill()  # SIGKILL, while safetensors' temporary file exists
    assert worker.wait() == -signal.SIGKILL
    assert seen, "no save of the worker was ever seen writing"
    # Only the staging folder held the partial write; the student in place is whole (the earlier one, or a
    # complete newer one when the kill came between two files' renames).
    assert all(path.startswith(STAGING_NAME + os.sep) for path in seen), seen
    assert [p for p in temp_files(out) if not p.startswith(STAGING_NAME)] == []
    assert weight_names(out / "model.safetensors") == names
    assert len((out / "model.safetensors").read_bytes()) == len(earlier)
    # The next save removes what the killed one left.
    big_student_trainer(out, seed=3).save_model()
    assert temp_files(out) == [] and not (out / STAGING_NAME).exists()
    assert weight_names(out / "model.safetensors") == names


def test_stale_files_of_interrupted_saves_are_removed_at_the_next_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tmpAb12Cd").write_bytes(b"\0" * 4096)  # what safetensors left in the folder before this fix
    (out / STAGING_NAME).mkdir()
    (out / STAGING_NAME / ".tmpXy34Zw").write_bytes(b"\0" * 4096)
    (out / ".tmp-notes").write_text("not a safetensors temporary file")
    args = make_args(tmp_path, strategy="finetune", max_steps=1)
    trainer = ProKTTrainer(model=tiny_bert(seed=1), args=args, train_dataset=toy_dataset(8))
    trainer.train()
    assert sorted(os.listdir(out)) == [".tmp-notes"]


def test_a_new_save_drops_the_shards_of_an_older_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json"):
        (out / name).write_text("an older sharded save")
    (out / "notes.txt").write_text("mine")
    ProKTTrainer(model=tiny_bert(seed=1), args=make_args(tmp_path, strategy="finetune")).save_model()
    assert {"model.safetensors", "config.json", "notes.txt", "training_args.bin", "README.md"} <= set(os.listdir(out))
    assert not any(name.startswith("model-") or name.endswith("index.json") for name in os.listdir(out))


def check_refused_without_trace(error, out, before):
    message = str(error.value)
    assert message.startswith(f"No space left on device while saving the model to {out}"), message
    assert "The partial save was removed; the files already in" in message
    assert "Free space on that file system" in message
    assert not (out / STAGING_NAME).exists() and temp_files(out) == []
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_full_disk_during_the_final_save_injected(tmp_path, monkeypatch):
    out = tmp_path / "out"
    ProKTTrainer(model=tiny_bert(seed=1), args=make_args(tmp_path, strategy="finetune")).save_model()
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    FullDisk(monkeypatch, budget=10_000)
    trainer = ProKTTrainer(model=tiny_bert(seed=2), args=make_args(tmp_path, strategy="finetune"))
    with pytest.raises(NoSpaceLeftError) as error:
        trainer.save_model()
    check_refused_without_trace(error, out, before)


def test_a_full_disk_during_the_final_save_on_a_real_small_file_system(tmp_path):
    with tmpfs(tmp_path / "small", "size=8m") as small:
        out = small / "out"
        out.mkdir()
        (out / "notes.txt").write_text("kept")
        trainer = big_student_trainer(out)  # 41 MB of weights on an 8 MB file system
        with pytest.raises(NoSpaceLeftError) as error:
            trainer.save_model()
        check_refused_without_trace(error, out, {"notes.txt": b"kept"})
        assert shutil.disk_usage(small).used < 1 << 20  # nothing is left filling the disk
