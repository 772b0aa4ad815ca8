"""An output_dir holding an earlier run is refused unless overwritten (then set aside until the new student is
saved, and put back when the new run fails before its first checkpoint) or resumed, and
``--resume_from_checkpoint true|last`` resumes from its last checkpoint: `hf_prokt.scripting.run_folder` and both
example scripts."""

import json
import os

import pytest

from hf_prokt.robustness.crash_safe_checkpoints import write_completeness_marker
from hf_prokt.scripting.run_folder import (
    PREVIOUS_RUN_DIR,
    PreviousRun,
    check_output_dir,
    clear_previous_run,
    previous_run_files,
    resolve_resume_checkpoint,
    set_aside_previous_run,
)
from tests.test_image_classification import QUIET
from tests.test_image_classification import SCRIPT as IMAGE_SCRIPT
from tests.test_run_glue import common_args, load_script, model_dirs_in, single_sentence_files
from tests.test_run_ner import SCRIPT as NER_SCRIPT
from tests.test_run_ner import model_dirs as ner_model_dirs  # noqa: F401 (a fixture)
from tests.test_run_ner import tagged_sentences, write_conll


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


def test_resolve_resume_checkpoint(tmp_path):
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        write_completeness_marker(str(tmp_path / f"checkpoint-{step}"), step)
    (tmp_path / "checkpoint-11").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoint-12").mkdir()  # a save that was interrupted: no completeness marker, skipped
    last = str(tmp_path / "checkpoint-10")
    for value in (True, "true", "True", "last", " LAST "):
        assert resolve_resume_checkpoint(value, str(tmp_path)) == last, value
    for value in (None, False, "", "false", "None"):
        assert resolve_resume_checkpoint(value, str(tmp_path)) is None, value
    assert resolve_resume_checkpoint(str(tmp_path / "checkpoint-2"), "elsewhere") == str(tmp_path / "checkpoint-2")
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint last: no checkpoint-\* folder in .*empty"):
        resolve_resume_checkpoint("last", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint ckpt-3: no such folder.*'last'"):
        resolve_resume_checkpoint("ckpt-3", str(tmp_path))
    only_incomplete = tmp_path / "interrupted"
    (only_incomplete / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"^No valid checkpoint found in output directory \(.*interrupted\): .*none of "
                                         r"the checkpoints .* is complete \(checkpoint-3: no checkpoint_"):
        resolve_resume_checkpoint("true", str(only_incomplete))


def test_check_and_clear_keep_what_is_not_a_run(tmp_path):
    check_output_dir(str(tmp_path / "new"), False, None)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    check_output_dir(str(tmp_path), False, None)  # no run here: the user's own files are no reason to refuse
    for name in ("config.json", "all_results.json", "training_curves.png", "predict_results_sst2.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    write_completeness_marker(str(tmp_path / "checkpoint-4"), 4)
    (tmp_path / ".partial-checkpoint-6" / "checkpoint-6").mkdir(parents=True)  # an interrupted save's staging
    with pytest.raises(ValueError, match=r"already holds a training run \(all_results\.json, checkpoint-4, "
                                         r"config\.json, .*--overwrite_output_dir.*--resume_from_checkpoint last"):
        check_output_dir(str(tmp_path), False, None)
    check_output_dir(str(tmp_path), True, None)
    check_output_dir(str(tmp_path), False, str(tmp_path / "checkpoint-4"))
    with pytest.raises(ValueError, match="pass one of them"):
        check_output_dir(str(tmp_path), True, str(tmp_path / "checkpoint-4"))
    removed = clear_previous_run(str(tmp_path))
    assert len(removed) == 6 and previous_run_files(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path)) == ["data", "notes.txt"]


def earlier_run(folder) -> dict:
    """A finished run's files in ``folder`` beside a file of the user's; returns the snapshot."""
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("mine")
    for name in ("config.json", "model.safetensors", "all_results.json"):
        (folder / name).write_text(f"old {name}")
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "trainer_state.json").write_text("{}")
    write_completeness_marker(str(folder / "checkpoint-4"), 4)
    return snapshot(folder)


def new_run_files(folder, checkpoint: bool) -> None:
    (folder / "trainer_state.json").write_text("new")
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "trainer_state.json").write_text("{}")
    if checkpoint:
        write_completeness_marker(str(folder / "checkpoint-1"), 1)


def test_a_run_that_fails_before_its_first_checkpoint_puts_the_earlier_run_back(tmp_path):
    before = earlier_run(tmp_path)
    moved = set_aside_previous_run(str(tmp_path))
    assert len(moved) == 4 and sorted(os.listdir(tmp_path)) == [PREVIOUS_RUN_DIR, "notes.txt"]
    with pytest.raises(RuntimeError, match="NaN"):
        with PreviousRun(str(tmp_path), is_main=True).kept_until_saved():
            new_run_files(tmp_path, checkpoint=False)  # an interrupted save: no completeness marker
            raise RuntimeError("NaN loss")
    assert snapshot(tmp_path) == before


def test_a_run_that_fails_after_a_checkpoint_keeps_both_and_its_student_deletes_the_earlier_one(tmp_path):
    before = earlier_run(tmp_path)
    set_aside_previous_run(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with PreviousRun(str(tmp_path), is_main=True).kept_until_saved():
            new_run_files(tmp_path, checkpoint=True)
            raise KeyboardInterrupt
    assert (tmp_path / "checkpoint-1").is_dir()  # resumable
    kept = {os.path.relpath(path, PREVIOUS_RUN_DIR): content for path, content in snapshot(tmp_path).items()
            if path.startswith(PREVIOUS_RUN_DIR)}
    assert kept == {path: content for path, content in before.items() if path != "notes.txt"}
    with pytest.raises(ValueError, match=f"set aside in {PREVIOUS_RUN_DIR}"):
        check_output_dir(str(tmp_path), False, None)
    # The resumed run (no --overwrite_output_dir) writes its student: the earlier run goes.
    with PreviousRun(str(tmp_path), is_main=True).kept_until_saved():
        (tmp_path / "model.safetensors").write_text("new")
    assert not (tmp_path / PREVIOUS_RUN_DIR).exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_an_overwrite_after_a_killed_overwrite_keeps_the_run_set_aside_first(tmp_path):
    before = earlier_run(tmp_path)
    set_aside_previous_run(str(tmp_path))
    new_run_files(tmp_path, checkpoint=False)  # then the process was killed
    assert set_aside_previous_run(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path)) == [PREVIOUS_RUN_DIR, "notes.txt"]
    with pytest.raises(OSError):
        with PreviousRun(str(tmp_path), is_main=True).kept_until_saved():
            raise OSError("disk full")
    assert snapshot(tmp_path) == before


def test_a_move_interrupted_by_a_kill_is_completed(tmp_path):
    before = earlier_run(tmp_path)
    partial = tmp_path / f"{PREVIOUS_RUN_DIR}.partial"
    partial.mkdir()
    os.replace(tmp_path / "config.json", partial / "config.json")  # killed after moving one file
    set_aside_previous_run(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [PREVIOUS_RUN_DIR, "notes.txt"]
    with pytest.raises(ValueError):
        with PreviousRun(str(tmp_path), is_main=True).kept_until_saved():
            raise ValueError("bad")
    assert snapshot(tmp_path) == before


def test_run_glue_overwrite_that_fails_in_its_final_save_leaves_the_earlier_student(run_glue, tmp_path,
                                                                                   monkeypatch):
    models = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    base = dict(train_file=train, validation_file=dev, teacher_model_name_or_path=models["teacher"],
                student_num_layers=2, max_steps=1, save_strategy="no")
    run_glue.main(common_args(tmp_path, **base))
    out = tmp_path / "out"
    before = snapshot(out)

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hf_prokt.ProKTTrainer.save_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_glue.main(common_args(tmp_path, overwrite_output_dir=True, **base))
    assert snapshot(out) == before


@pytest.fixture(scope="module")
def run_glue():
    return load_script()


def test_run_glue_refuses_overwrites_and_resumes_an_earlier_run(run_glue, tmp_path):
    models = model_dirs_in(tmp_path / "models")
    train, dev = single_sentence_files(tmp_path)
    base = dict(train_file=train, validation_file=dev, teacher_model_name_or_path=models["teacher"],
                student_num_layers=2, max_steps=2, logging_steps=1)
    run_glue.main(common_args(tmp_path, save_strategy="steps", save_steps=1, plot=True, eval_strategy="steps",
                              eval_steps=1, **base))
    out = tmp_path / "out"
    assert {"checkpoint-1", "checkpoint-2", "training_curves.png"} <= set(os.listdir(out))
    before = snapshot(out)

    with pytest.raises(ValueError, match=r"already holds a training run .*--resume_from_checkpoint last"):
        run_glue.main(common_args(tmp_path, **base))
    assert snapshot(out) == before

    # Resuming: the last checkpoint in output_dir, named on the command line.
    for value in ("true", "last"):
        results = run_glue.main(common_args(tmp_path, resume_from_checkpoint=value, **{**base, "max_steps": 3}))
        assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
        assert results["train_samples"] == 48
    assert not (out / "checkpoint-3").exists()  # resumed runs saved nothing new (save_strategy no)

    # A refusal of the new run's inputs leaves the old run whole, even with --overwrite_output_dir.
    with pytest.raises(ValueError, match="'review'"):
        run_glue.main(common_args(tmp_path, overwrite_output_dir=True, text_columns="review", **base))
    assert (out / "checkpoint-2").is_dir() and (out / "training_curves.png").exists()

    # Overwriting: the old checkpoints, plot and results are gone; the results are the new run's alone.
    run_glue.main(common_args(tmp_path, overwrite_output_dir=True, do_eval=False, **base))
    names = set(os.listdir(out))
    assert not any(name.startswith("checkpoint-") for name in names) and "training_curves.png" not in names
    assert "eval_results.json" not in names
    assert not any(key.startswith("eval_") for key in json.loads((out / "all_results.json").read_text()))


def test_image_example_refuses_overwrites_and_resumes(tmp_path):
    from tests.conftest import load_example

    script = load_example(IMAGE_SCRIPT, "run_image_classification")
    out = tmp_path / "out"
    argv = ["--student_config", "resnet-tiny", "--strategy", "finetune", "--max_train_samples", "16",
            "--max_eval_samples", "8", "--max_steps", "1", "--do_train", "--output_dir", str(out), *QUIET]
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint last: no checkpoint-\* folder"):
        script.main([*argv, "--resume_from_checkpoint", "last"])
    out.mkdir()
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")
    (out / "training_curves.png").write_bytes(b"old")
    with pytest.raises(ValueError, match="already holds a training run"):
        script.main(argv)
    assert snapshot(out) == {os.path.join("checkpoint-7", "trainer_state.json"): b"{}",
                             "training_curves.png": b"old"}
    script.main([*argv, "--overwrite_output_dir", "True", "--save_strategy", "steps", "--save_steps", "1"])
    names = set(os.listdir(out))
    assert "checkpoint-7" not in names and "training_curves.png" not in names and "checkpoint-1" in names
    script.main([*argv, "--max_steps", "2", "--resume_from_checkpoint", "true"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_run_ner_refuses_overwrites_and_resumes(ner_model_dirs, tmp_path):  # noqa: F811
    from tests.conftest import load_example
    from tests.test_run_ner import common_args as ner_args

    script = load_example(NER_SCRIPT, "run_ner")
    train = write_conll(tmp_path / "train.txt", tagged_sentences(16, 0))
    test = write_conll(tmp_path / "test.txt", tagged_sentences(3, 1), tagged=False, docstart=False)
    base = dict(strategy="finetune", train_file=train, test_file=test, do_eval=False, do_predict=True,
                model_name_or_path=ner_model_dirs["student"], max_steps=2)
    script.main(ner_args(tmp_path, save_strategy="steps", save_steps=1, **base))
    out = tmp_path / "out"
    assert {"checkpoint-1", "checkpoint-2", "predictions.txt"} <= set(os.listdir(out))
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"already holds a training run .*--resume_from_checkpoint last"):
        script.main(ner_args(tmp_path, **base))
    assert snapshot(out) == before
    script.main(ner_args(tmp_path, resume_from_checkpoint="last", **{**base, "max_steps": 3}))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    script.main(ner_args(tmp_path, overwrite_output_dir=True, **{**base, "do_predict": False}))
    names = set(os.listdir(out))
    assert not any(name.startswith("checkpoint-") for name in names) and "predictions.txt" not in names
