"""Kill a training process (SIGKILL) at chosen points of one checkpoint save, then resume each killed run.

Launched by tests/test_crash_safe_checkpoints.py as ``python kill_during_save_worker.py FOLDER``. The
process imports once and forks one child per kill point: the child trains with a checkpoint at every step
and kills itself at the k-th file-system event (a file opened for writing, a folder made, a rename, a
deletion: Python's audit events) of the save of step 3. The parent then resumes every killed run with
``resume_from_checkpoint=True`` and compares the result with an uninterrupted run. Results go to
FOLDER/results.json.
"""

import json
import logging
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_prokt import ProKTTrainer  # noqa: E402
from tests.conftest import make_args, parameters_of, tiny_bert, toy_dataset  # noqa: E402

KILLED_SAVE, MAX_STEPS = 3, 4
WRITE_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "native-write"}


class KillDuringSave(ProKTTrainer):
    kill_at: int | None = None  # the k-th event of the watched save; None: only record the events
    events: list[str] = []
    watching = False

    def _save_checkpoint(self, model, trial):
        KillDuringSave.watching = self.state.global_step == KILLED_SAVE
        try:
            super()._save_checkpoint(model, trial)
        finally:
            KillDuringSave.watching = False


def audit(event, args):
    if not KillDuringSave.watching:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if not writing or not isinstance(path, str):
            return
    elif event not in WRITE_EVENTS:
        return
    KillDuringSave.events.append(f"{event} {os.path.basename(str(args[0]))}")
    if KillDuringSave.kill_at == len(KillDuringSave.events):
        os.kill(os.getpid(), signal.SIGKILL)


def build(folder, max_steps, cls=ProKTTrainer):
    args = make_args(__import__("pathlib").Path(folder), max_steps=max_steps, save_strategy="steps", save_steps=1,
                     save_total_limit=2, prokt_constraint="dual", dual_lr=5.0)
    student, teacher = tiny_bert(seed=1, dropout=0.1), tiny_bert(layers=3, hidden=24, seed=2, dropout=0.1)
    return cls(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(48)), student, teacher


def watch_writer(module, name):
    """torch.save and safetensors write through native code, which raises no audit event: add one."""
    write = getattr(module, name)

    def watched(obj, path, *args, **kwargs):
        audit("native-write", (path,))
        return write(obj, path, *args, **kwargs)

    setattr(module, name, watched)


def child(folder, kill_at):
    import torch
    import transformers.modeling_utils

    watch_writer(torch, "save")
    watch_writer(transformers.modeling_utils, "safe_save_file")
    sys.addaudithook(audit)
    KillDuringSave.kill_at = kill_at
    trainer, _, _ = build(folder, MAX_STEPS)  # the same schedule as the uninterrupted run
    trainer.__class__ = KillDuringSave
    trainer.train()
    with open(os.path.join(folder, "events.json"), "w") as handle:
        json.dump(KillDuringSave.events, handle)


def run_child(folder, kill_at):
    pid = os.fork()
    if pid == 0:
        try:
            child(folder, kill_at)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def main(root):
    # 1. The events of one save, in a child that is not killed.
    run_child(os.path.join(root, "count"), None)
    with open(os.path.join(root, "count", "events.json")) as handle:
        events = json.load(handle)
    n = len(events)
    publish = events.index("os.rename checkpoint-3") + 1
    points = sorted({1, publish - 1, publish, publish + 1, n} | set(range(2, publish, max(1, publish // 5))))
    statuses = {k: run_child(os.path.join(root, f"kill{k}"), k) for k in points}
    # 2. The uninterrupted run, then each killed run resumed in this process.
    reference, student, teacher = build(os.path.join(root, "straight"), MAX_STEPS)
    reference.train()
    expected = {"student": parameters_of(student), "teacher": parameters_of(teacher)}
    results = {"events": events, "runs": {}}
    for k in points:
        folder = os.path.join(root, f"kill{k}")
        records = []
        handler = logging.Handler()
        handler.emit = lambda record, records=records: records.append(record.getMessage())
        logging.getLogger("hf_prokt.robustness.crash_safe_checkpoints").addHandler(handler)
        try:
            resumed, student, teacher = build(folder, MAX_STEPS)
            resumed.train(resume_from_checkpoint=True)
        finally:
            logging.getLogger("hf_prokt.robustness.crash_safe_checkpoints").removeHandler(handler)
        got = {"student": parameters_of(student), "teacher": parameters_of(teacher)}
        results["runs"][k] = {
            "killed": os.WIFSIGNALED(statuses[k]) and os.WTERMSIG(statuses[k]) == signal.SIGKILL,
            "event": events[k - 1],
            "resumed_from": [m for m in records if m.startswith("Resuming from")],
            "skipped": [m for m in records if m.startswith("Skipping")],
            "identical": all((got[m][name] == value).all().item() for m in got for name, value in expected[m].items()),
            "global_step": resumed.state.global_step,
        }
    with open(os.path.join(root, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hf_prokt.robustness.crash_safe_checkpoints").setLevel(logging.INFO)
    main(sys.argv[1])
