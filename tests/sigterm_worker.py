"""A ProKT run that reaches optimizer step STOP_AT, says so and waits there for SIGTERM; launched by
tests/test_sigterm.py as ``python sigterm_worker.py FOLDER SAVE_ON_SIGTERM WAITING_RANK`` (one process, or one of
two with RANK / WORLD_SIZE / MASTER_* set).

At the end of step STOP_AT the process whose rank is WAITING_RANK writes FOLDER/ready-<rank> and waits until it has
received SIGTERM (with save_on_sigterm) or until the signal ends it (without); the other process goes on into the
end-of-step agreement and waits there. No sleep races the signal: the test sends it once the file exists.
"""

import os
import pathlib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import TrainerCallback  # noqa: E402

from hf_prokt import ProKTTrainer  # noqa: E402
from hf_prokt.scripting.shutdown import run_script  # noqa: E402
from tests.conftest import make_args, tiny_bert, toy_dataset  # noqa: E402

MAX_STEPS, SAVE_STEPS, STOP_AT = 8, 3, 5
WAIT_LIMIT_S = 120  # a signal that never comes fails the test instead of hanging it


def build(folder, save_on_sigterm=True, per_device_batch=8):
    """The run of the test: checkpoints at steps 3 and 6, dropout and the dual multiplier (state to resume)."""
    args = make_args(pathlib.Path(folder), max_steps=MAX_STEPS, save_strategy="steps", save_steps=SAVE_STEPS,
                     prokt_constraint="dual", dual_lr=5.0, save_on_sigterm=save_on_sigterm,
                     per_device_train_batch_size=per_device_batch, dataloader_drop_last=True)
    student, teacher = tiny_bert(seed=1, dropout=0.1), tiny_bert(layers=3, hidden=24, seed=2, dropout=0.1)
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(64))
    return trainer, student, teacher


class WaitForSigterm(TrainerCallback):
    def __init__(self, folder, waiting_rank):
        self.folder, self.waiting_rank, self.trainer = folder, waiting_rank, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != STOP_AT or args.process_index != self.waiting_rank:
            return
        pathlib.Path(self.folder, f"ready-{args.process_index}").write_text(str(os.getpid()))
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not self.trainer.sigterm_received:  # without save_on_sigterm the signal ends the process here
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.01)


def main(folder, save_on_sigterm, waiting_rank):
    trainer, _, _ = build(folder, save_on_sigterm, per_device_batch=8 // int(os.environ.get("WORLD_SIZE", "1")))
    callback = WaitForSigterm(folder, waiting_rank)
    callback.trainer = trainer
    trainer.add_callback(callback)
    trainer.train()
    pathlib.Path(folder, "finished").write_text("")


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])))
