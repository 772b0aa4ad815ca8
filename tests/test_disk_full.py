"""A checkpoint that does not fit on the disk (`hf_prokt.robustness.disk_full`, crash-safe saving): "No space left on
device" naming the checkpoint and the folder, its partial staging folder removed, the earlier checkpoints complete.
Injected at the lowest writes (every machine) and on a real small tmpfs (where mounting is permitted)."""

import os

import pytest
from transformers import TrainerCallback

from hf_prokt import ProKTTrainer
from hf_prokt.robustness.crash_safe_checkpoints import STAGING_PREFIX, last_complete_checkpoint, why_incomplete
from hf_prokt.robustness.disk_full import NoSpaceLeftError, is_no_space
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.disk_space import FullDisk
from tests.mounts import tmpfs


class FillDiskAtStep(TrainerCallback):
    def __init__(self, disk, step):
        self.disk, self.step = disk, step

    def on_step_end(self, args, state, control, **kwargs):
        self.disk.enabled = state.global_step >= self.step


def checkpointing_trainer(tmp_path, output_dir, callbacks=()):
    args = make_args(tmp_path, output_dir=str(output_dir), strategy="finetune", max_steps=3, save_strategy="steps",
                     save_steps=1)
    return ProKTTrainer(model=tiny_bert(seed=1), args=args, train_dataset=toy_dataset(24), callbacks=list(callbacks))


def check_stopped_at_checkpoint_2(error, out):
    message = str(error.value)
    assert message.startswith(f"No space left on device while saving checkpoint-2 to {out}"), message
    assert "The partial save was removed" in message and "save_total_limit" in message
    assert sorted(os.listdir(out)) == ["checkpoint-1"]  # no checkpoint-2, no staging folder
    assert why_incomplete(str(out / "checkpoint-1")) is None
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-1")


def test_a_full_disk_during_a_checkpoint_injected(tmp_path, monkeypatch):
    out = tmp_path / "out"
    disk = FullDisk(monkeypatch, budget=20_000, enabled=False)
    trainer = checkpointing_trainer(tmp_path, out, [FillDiskAtStep(disk, 2)])
    with pytest.raises(NoSpaceLeftError) as error:
        trainer.train()
    assert disk.refused  # the injected disk did refuse a write
    check_stopped_at_checkpoint_2(error, out)


def test_a_full_disk_during_a_checkpoint_on_a_real_small_file_system(tmp_path):
    checkpointing_trainer(tmp_path, tmp_path / "measure").train()
    size = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(tmp_path / "measure" / "checkpoint-1") for name in names)
    with tmpfs(tmp_path / "small", f"size={size * 3 // 2 + 64 * 1024}") as small:
        out = small / "out"
        with pytest.raises(NoSpaceLeftError) as error:
            checkpointing_trainer(tmp_path, out).train()
        check_stopped_at_checkpoint_2(error, out)
        left = {os.path.relpath(os.path.join(root, name), small) for root, _, names in os.walk(small) for name in names}
        assert all(path.startswith(os.path.join("out", "checkpoint-1") + os.sep) for path in left), left


def test_torchs_short_write_counts_as_full_only_on_a_full_file_system(tmp_path):
    short_write = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 7823424 vs 7823312")
    assert not is_no_space(short_write, str(tmp_path))  # plenty of space here: another cause, reported as it is
    assert is_no_space(OSError(28, "No space left on device"), str(tmp_path))
    try:
        raise short_write from OSError(28, "No space left on device")
    except RuntimeError as chained:
        assert is_no_space(chained, str(tmp_path))
    assert not STAGING_PREFIX.startswith(".tmp")
