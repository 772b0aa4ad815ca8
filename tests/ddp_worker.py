"""Run a few ProKT steps and save both models; launched by tests/test_distributed.py (one or two processes)."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_prokt import ProKTTrainer  # noqa: E402
from hf_prokt.scripting.shutdown import end_process  # noqa: E402
from tests.conftest import make_args, tiny_bert, toy_dataset  # noqa: E402


def main(output_dir: str, per_device_batch: int, extra: str) -> None:
    overrides = dict(item.split("=", 1) for item in extra.split(",") if item)
    overrides = {k: (v if k == "prokt_constraint" else int(v) if k.endswith("steps") else float(v))
                 for k, v in overrides.items()}
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    args = make_args(
        __import__("pathlib").Path(output_dir), optim="sgd", lr_scheduler_type="constant", max_grad_norm=1.0,
        learning_rate=0.5, teacher_learning_rate=0.3, max_steps=3, per_device_train_batch_size=per_device_batch,
        dataloader_drop_last=True, **overrides,
    )
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(64, seed=7))
    trainer.train()
    if trainer.args.process_index == 0:
        torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(), "beta": trainer.dual_beta,
                    "world_size": trainer.args.world_size}, os.path.join(output_dir, "weights.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
    end_process()
