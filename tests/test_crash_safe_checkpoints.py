"""Checkpoints are complete or ignored: staged, marked and renamed; resume and rotation use complete ones only;
a process killed (SIGKILL) anywhere in a save resumes to the same result as an uninterrupted run."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from hf_prokt import ProKTTrainer
from hf_prokt.robustness import crash_safe_checkpoints as safe_checkpoints
from tests.conftest import make_args, tiny_bert, toy_dataset


def build(tmp_path, **overrides):
    args = make_args(tmp_path, **{"max_steps": 4, "save_strategy": "steps", "save_steps": 2, **overrides})
    return ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, hidden=24, seed=2), args=args,
                        train_dataset=toy_dataset(48))


def test_a_save_is_written_aside_then_marked_and_renamed(tmp_path):
    trainer = build(tmp_path)
    seen = []
    write_rng = trainer._save_rng_state

    def spy(output_dir):  # one of the last writes of a save: the final folder must not exist yet
        seen.append((output_dir, os.path.exists(os.path.join(trainer.args.output_dir, os.path.basename(output_dir)))))
        write_rng(output_dir)

    trainer._save_rng_state = spy
    trainer.train()
    out = tmp_path / "out"
    assert seen == [(str(out / f".partial-checkpoint-{s}" / f"checkpoint-{s}"), False) for s in (2, 4)]
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4"]
    for step in (2, 4):
        marker = json.loads((out / f"checkpoint-{step}" / safe_checkpoints.COMPLETE_MARKER).read_text())
        assert marker["global_step"] == step
        assert {"model.safetensors", "teacher/model.safetensors", "teacher_optimizer.pt", "optimizer.pt",
                "rng_state.pth", "trainer_state.json", "prokt_state.json"} <= set(marker["files"])
        assert safe_checkpoints.why_incomplete(str(out / f"checkpoint-{step}")) is None
    assert safe_checkpoints.last_complete_checkpoint(str(out)) == str(out / "checkpoint-4")


def test_resume_true_takes_the_last_complete_checkpoint_and_says_what_it_skipped(tmp_path, caplog):
    build(tmp_path).train()
    out = tmp_path / "out"
    with open(out / "checkpoint-4" / "teacher_optimizer.pt", "r+b") as handle:  # a torn write
        handle.truncate(100)
    (out / "checkpoint-6").mkdir()  # a folder another tool left half-written
    (out / "checkpoint-6" / "model.safetensors").write_bytes(b"")

    resumed = build(tmp_path)
    with caplog.at_level(logging.INFO, logger="hf_prokt.robustness.crash_safe_checkpoints"):
        resumed.train(resume_from_checkpoint=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "hf_prokt.robustness.crash_safe_checkpoints"]
    assert any("Skipping" in m and "checkpoint-6" in m and "no checkpoint_complete.json" in m for m in messages)
    assert any("Skipping" in m and "checkpoint-4" in m and "teacher_optimizer.pt has 100 bytes" in m
               for m in messages)
    assert any(m.startswith(f"Resuming from {out / 'checkpoint-2'}") for m in messages)
    assert resumed.state.global_step == 4
    # The save of step 4 again replaced the torn folder with a complete one.
    assert safe_checkpoints.why_incomplete(str(out / "checkpoint-4")) is None


def test_resume_true_without_a_complete_checkpoint_names_them(tmp_path):
    # The Trainer's own words first ("No valid checkpoint found in output directory"), then why.
    out = tmp_path / "out"
    no_valid = re.escape(f"No valid checkpoint found in output directory ({out}): resume_from_checkpoint=True, but ")
    (out / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"^{no_valid}none of the checkpoints .* is complete \(checkpoint-2: "
                                         r"no checkpoint_"):
        build(tmp_path).train(resume_from_checkpoint=True)
    (out / "checkpoint-2").rmdir()
    with pytest.raises(ValueError, match=rf"^{no_valid}{re.escape(str(out))} holds no checkpoint-\* folder"):
        build(tmp_path).train(resume_from_checkpoint=True)


def test_rotation_keeps_complete_checkpoints_over_incomplete_ones(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-9").mkdir(parents=True)  # newest by number, but incomplete
    build(tmp_path, save_steps=1, save_total_limit=2).train()
    assert sorted(os.listdir(out)) == ["checkpoint-3", "checkpoint-4", "checkpoint-9"]
    assert safe_checkpoints.last_complete_checkpoint(str(out)) == str(out / "checkpoint-4")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks one child per kill point")
def test_a_process_killed_anywhere_in_a_save_resumes_to_the_uninterrupted_result(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "kill_during_save_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, worker, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    events, runs = results["events"], results["runs"]
    publish = events.index("os.rename checkpoint-3") + 1  # the rename of the staged folder
    assert {"open checkpoint_complete.json.tmp", "os.mkdir teacher", "native-write teacher_optimizer.pt"} <= set(events)
    assert len(runs) >= 7
    for k, run in runs.items():
        assert run["killed"], (k, run)
        expected = "checkpoint-3" if int(k) > publish else "checkpoint-2"
        assert len(run["resumed_from"]) == 1 and expected in run["resumed_from"][0], (k, run)
        assert run["identical"] and run["global_step"] == 4, (k, run)


def test_an_earlier_best_checkpoint_is_recorded_when_saves_and_evaluations_differ(tmp_path):
    """Saving every step and evaluating every epoch: an epoch's evaluation comes after its last step's checkpoint,
    and the Trainer records that checkpoint as the best at the next save, finding it in the run folder (not in the
    staging folder it writes into)."""
    args = make_args(tmp_path, strategy="finetune", save_strategy="steps", save_steps=1, eval_strategy="epoch",
                     max_steps=-1, num_train_epochs=3, learning_rate=1e-4,
                     metric_for_best_model="loss", greater_is_better=True)  # "best": the first, highest loss
    trainer = ProKTTrainer(model=tiny_bert(), args=args, train_dataset=toy_dataset(32), eval_dataset=toy_dataset(32))
    trainer.train()
    best = trainer.state.best_global_step
    assert best in (4, 8)  # an epoch is 4 steps: the best epoch's checkpoint has later saves
    assert trainer.state.best_model_checkpoint == str(tmp_path / "out" / f"checkpoint-{best}")
