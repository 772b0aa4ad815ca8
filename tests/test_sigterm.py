"""SIGTERM during train(): a complete checkpoint of the step it arrived in, then exit 143 on every process; resuming
from it gives the uninterrupted run bit for bit. Real signals, real processes (tests/sigterm_worker.py)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from transformers import TrainerCallback

from hf_prokt import ProKTTrainer
from hf_prokt.robustness import crash_safe_checkpoints
from hf_prokt.robustness.sigterm import SigtermFlag, TrainingTerminated
from hf_prokt.scripting.shutdown import run_script
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset
from tests.sigterm_worker import MAX_STEPS, STOP_AT, build
from tests.test_distributed import REPO_ROOT, free_port

WORKER = os.path.join(os.path.dirname(__file__), "sigterm_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}


def launch(folder, save_on_sigterm=True, rank=None, world_size=1, port=None, waiting_rank=0):
    env = dict(ENV)
    if rank is not None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, WORKER, str(folder), "1" if save_on_sigterm else "0", str(waiting_rank)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, processes, limit_s=240):
    """Until ``path`` exists; a process that ends first fails the test with its output."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        for process in processes:
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"exited {process.returncode} before {path.name}:\n{out[-2000:]}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"no {path.name} after {limit_s} s"
        time.sleep(0.05)


def finish(process):
    out, err = process.communicate(timeout=240)
    return process.returncode, err


def checkpoints(out):
    return sorted((p.name for p in out.iterdir() if p.name.startswith("checkpoint-")), key=lambda n: int(n[11:]))


def test_sigterm_saves_the_step_and_exits_143_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path):
    process = launch(tmp_path)
    wait_for(tmp_path / "ready-0", [process])
    os.kill(process.pid, signal.SIGTERM)
    code, err = finish(process)
    assert code == 143, err[-3000:]
    out = tmp_path / "out"
    assert checkpoints(out) == ["checkpoint-3", f"checkpoint-{STOP_AT}"]  # steps 4 and 5 were not lost
    assert crash_safe_checkpoints.why_incomplete(str(out / f"checkpoint-{STOP_AT}")) is None
    state = json.loads((out / f"checkpoint-{STOP_AT}" / "trainer_state.json").read_text())
    assert state["global_step"] == STOP_AT and (out / f"checkpoint-{STOP_AT}" / "teacher_optimizer.pt").exists()
    assert not (tmp_path / "finished").exists()
    # One line, no traceback: the checkpoint and how to resume.
    message = (f"Training stopped by SIGTERM after optimizer step {STOP_AT}; its checkpoint is "
               f"{out / f'checkpoint-{STOP_AT}'}. Resume with --resume_from_checkpoint last (the example scripts) "
               "or trainer.train(resume_from_checkpoint=True).")
    assert err.strip().splitlines()[-1] == message and "Traceback" not in err

    resumed, student, teacher = build(tmp_path)
    resumed.train(resume_from_checkpoint=True)
    reference, reference_student, reference_teacher = build(tmp_path / "straight")
    reference.train()
    assert resumed.state.global_step == MAX_STEPS
    for got, expected in ((student, reference_student), (teacher, reference_teacher)):
        for name, value in parameters_of(expected).items():
            assert torch.equal(parameters_of(got)[name], value), name
    assert resumed.dual_beta == reference.dual_beta != 0.5


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    port = free_port()
    processes = [launch(tmp_path, rank=rank, world_size=2, port=port, waiting_rank=1) for rank in (0, 1)]
    try:
        wait_for(tmp_path / "ready-1", processes)
        os.kill(processes[1].pid, signal.SIGTERM)  # rank 0 never gets it
        results = [finish(process) for process in processes]
    finally:  # a failure must not leave a process waiting in a collective
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [code for code, _ in results] == [143, 143], results[0][1][-3000:] + results[1][1][-3000:]
    out = tmp_path / "out"
    assert checkpoints(out) == ["checkpoint-3", f"checkpoint-{STOP_AT}"]
    assert crash_safe_checkpoints.why_incomplete(str(out / f"checkpoint-{STOP_AT}")) is None
    assert "SIGTERM received by 1 of 2 processes" in results[0][1] + results[1][1]
    # The main process prints the one line; the other none.
    last_line = results[0][1].strip().splitlines()[-1]
    assert last_line.startswith(f"Training stopped by SIGTERM after optimizer step {STOP_AT}; its checkpoint is ")
    assert "Training stopped by SIGTERM" not in results[1][1]


def test_without_save_on_sigterm_the_signal_ends_the_process_unsaved(tmp_path):
    process = launch(tmp_path, save_on_sigterm=False)
    wait_for(tmp_path / "ready-0", [process])
    os.kill(process.pid, signal.SIGTERM)
    code, _ = finish(process)
    assert code == -signal.SIGTERM  # ended by the signal itself, as without the library
    assert checkpoints(tmp_path / "out") == ["checkpoint-3"]


# ---- in this process: the handler's life, repeated signals, a signal after the last step


class SendSigterm(TrainerCallback):
    """Sends this process SIGTERM ``times`` times at the end of step ``at`` (or at the end of training)."""

    def __init__(self, at=None, times=1):
        self.at, self.times = at, times

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGTERM)

    def on_train_end(self, args, state, control, **kwargs):
        if self.at is None:
            os.kill(os.getpid(), signal.SIGTERM)


def trainer_with(tmp_path, callback, **overrides):
    args = make_args(tmp_path, **{"max_steps": 4, **overrides})
    return ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, hidden=24, seed=2), args=args,
                        train_dataset=toy_dataset(48), callbacks=[callback])


@pytest.fixture
def recorded_sigterm():
    """A Python SIGTERM handler that records, in place while the test runs (restored afterwards)."""
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGTERM, previous)


def test_repeated_signals_without_checkpoint_steps_give_one_checkpoint_and_the_handler_is_restored(
        tmp_path, recorded_sigterm):
    before = signal.getsignal(signal.SIGTERM)
    trainer = trainer_with(tmp_path, SendSigterm(at=2, times=2), save_strategy="no")  # a launcher forwards one more
    with pytest.raises(TrainingTerminated) as stopped:
        trainer.train()
    assert stopped.value.code == 143 and isinstance(stopped.value, SystemExit) and stopped.value.step == 2
    assert stopped.value.checkpoint == str(tmp_path / "out" / "checkpoint-2")
    assert checkpoints(tmp_path / "out") == ["checkpoint-2"]
    assert crash_safe_checkpoints.why_incomplete(str(tmp_path / "out" / "checkpoint-2")) is None
    assert signal.getsignal(signal.SIGTERM) is before and recorded_sigterm == []  # nothing passed on
    assert not trainer.sigterm_received and not trainer.is_in_train


class SigtermWhileSaving(TrainerCallback):
    """Sends SIGTERM once a scheduled save is done: the next check is the end of the epoch, at the same step."""

    def __init__(self):
        self.saves = []

    def on_save(self, args, state, control, **kwargs):
        self.saves.append(state.global_step)
        if len(self.saves) == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_during_the_last_save_of_an_epoch_stops_at_its_end_without_saving_again(tmp_path, recorded_sigterm):
    callback = SigtermWhileSaving()
    trainer = trainer_with(tmp_path, callback, max_steps=12, save_strategy="steps", save_steps=6)  # 6 steps an epoch
    with pytest.raises(TrainingTerminated) as stopped:
        trainer.train()
    assert stopped.value.step == 6 and callback.saves == [6] and trainer.state.epoch == 1.0
    assert checkpoints(tmp_path / "out") == ["checkpoint-6"]


def test_a_signal_after_the_last_step_is_passed_on_to_the_previous_handler(tmp_path, recorded_sigterm):
    trainer = trainer_with(tmp_path, SendSigterm(at=None))
    trainer.train()  # complete: nothing to save
    assert recorded_sigterm == [signal.SIGTERM] and trainer.state.global_step == 4
    assert not (tmp_path / "out").exists() or checkpoints(tmp_path / "out") == []


def test_the_flag_leaves_an_ignored_sigterm_and_other_threads_alone(recorded_sigterm):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with SigtermFlag() as flag:
        assert not flag.installed and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    outside = []
    thread = threading.Thread(target=lambda: outside.append(SigtermFlag().__enter__().installed))
    thread.start()
    thread.join()
    assert outside == [False]


def test_save_on_sigterm_must_be_a_boolean(tmp_path):
    with pytest.raises(ValueError, match=r"ProKTTrainingArguments.save_on_sigterm: 'no' is not a boolean"):
        make_args(tmp_path, save_on_sigterm="no")


def test_run_script_exits_143_with_one_line(capsys):
    def stopped():
        raise TrainingTerminated("out/checkpoint-7", 7)

    with pytest.raises(SystemExit) as exit_info:
        run_script(stopped)
    assert exit_info.value.code == 143 and type(exit_info.value) is SystemExit
    assert capsys.readouterr().err == f"{TrainingTerminated('out/checkpoint-7', 7)}\n"
    assert run_script(lambda: None) is None
