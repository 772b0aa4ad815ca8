"""A ProKT run whose teacher diverges, on each process of a torchrun launch; each process writes the message
of the error that stopped it. Launched by tests/test_nonfinite.py."""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_prokt import ProKTTrainer  # noqa: E402
from hf_prokt.robustness.nonfinite import NonFiniteLossError  # noqa: E402
from hf_prokt.scripting.shutdown import end_process  # noqa: E402
from tests.conftest import make_args, tiny_bert, toy_dataset  # noqa: E402


def main(folder: str) -> None:
    args = make_args(pathlib.Path(folder), max_steps=4, teacher_learning_rate=1e12, per_device_train_batch_size=4,
                     dataloader_drop_last=True)
    trainer = ProKTTrainer(model=tiny_bert(seed=1), teacher_model=tiny_bert(layers=3, hidden=24, seed=2), args=args,
                           train_dataset=toy_dataset(64))
    try:
        trainer.train()
        message = "no error"
    except NonFiniteLossError as error:
        message = str(error)
    pathlib.Path(folder, f"rank{trainer.args.process_index}.txt").write_text(message)


if __name__ == "__main__":
    main(sys.argv[1])
    end_process()
