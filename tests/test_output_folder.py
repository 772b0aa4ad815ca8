"""An output folder that cannot be written to is refused before the first step (`hf_prokt.robustness.output_folder`):
the Python API (trainer construction and `train()`) and the example scripts' `start_of_run`."""

import os

import pytest

from hf_prokt import ProKTTrainer
from hf_prokt.robustness.output_folder import OutputFolderError, check_writable
from hf_prokt.scripting.run_folder import start_of_run
from tests.conftest import make_args, tiny_bert, toy_dataset
from tests.mounts import tmpfs


def trainer_for(tmp_path, output_dir, **overrides):
    args = make_args(tmp_path, output_dir=str(output_dir), **overrides)
    return ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(seed=2), args=args,
                        train_dataset=toy_dataset(16))


def test_a_parent_that_is_a_file_is_refused_at_construction(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("notes kept here")
    with pytest.raises(OutputFolderError) as caught:
        trainer_for(tmp_path, blocker / "run")
    message = str(caught.value)
    assert f"output_dir {blocker / 'run'} cannot be written to: not a directory" in message
    assert f"({blocker} is a file)" in message and "Pass another output_dir" in message
    assert blocker.read_text() == "notes kept here"


def test_the_folder_itself_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputFolderError, match=r"not a directory \(it is a file\)"):
        check_writable(str(tmp_path / "out"))


def test_a_read_only_file_system_is_refused_before_the_first_step(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        with pytest.raises(OutputFolderError) as caught:
            trainer_for(tmp_path, read_only / "run")
        assert "read-only file system" in str(caught.value) and str(read_only / "run") in str(caught.value)
        assert "remount it read-write" in str(caught.value)
        # The folder changed after construction: train() refuses it before any step.
        trainer = trainer_for(tmp_path, tmp_path / "fine", save_strategy="no")
        trainer.args.output_dir = str(read_only)
        with pytest.raises(OutputFolderError, match="read-only file system"):
            trainer.train()
        assert trainer.state.global_step == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputFolderError, match="permission denied"):
            trainer_for(tmp_path, locked)
    finally:
        locked.chmod(0o700)


def test_scripts_refuse_before_loading_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    args = make_args(tmp_path, output_dir=str(tmp_path / "file" / "out"), do_train=True)
    with pytest.raises(OutputFolderError, match=r"--output_dir .* not a directory"):
        start_of_run(args, overwrite_output_dir=False)


def test_a_writable_folder_is_left_as_it_was(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("k")
    check_writable(str(tmp_path / "out" / "new" / "deeper"))
    check_writable(str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["keep.txt", "new"]
