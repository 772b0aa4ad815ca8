"""A few ProKT / KD steps under FSDP2 on CPU processes (tests/fsdp_cpu.py), or under DDP / one process for
the reference; saves both models' full weights. Launched by tests/test_fsdp.py."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_prokt.scripting.shutdown import end_process  # noqa: E402
from tests.conftest import make_args, tiny_bert, toy_dataset  # noqa: E402
from tests.fsdp_cpu import FSDP_CONFIG, CpuFsdpProKTTrainer  # noqa: E402


def main(output_dir: str, per_device_batch: int, mode: str, strategy: str, extra: str) -> None:
    overrides = dict(item.split("=", 1) for item in extra.split(",") if item)
    overrides = {k: (int(v) if k.endswith("steps") else float(v) if k.endswith("weight") else v)
                 for k, v in overrides.items()}
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    sharding = {"fsdp": dict(fsdp=True, fsdp_config=FSDP_CONFIG),
                "fsdp1": dict(fsdp=True, fsdp_config={**FSDP_CONFIG, "version": 1, "sync_module_states": False}),
                "none": {}}[mode]
    # AdamW (not plain SGD): torch's loader of full optimizer states needs per-parameter state to resume.
    settings = dict(strategy=strategy, optim="adamw_torch", lr_scheduler_type="linear", max_grad_norm=1.0,
                    learning_rate=1e-2, teacher_learning_rate=1e-2, max_steps=3, dataloader_drop_last=True,
                    per_device_train_batch_size=per_device_batch, **sharding)
    args = make_args(__import__("pathlib").Path(output_dir), **{**settings, **overrides})
    trainer = CpuFsdpProKTTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=toy_dataset(64, seed=7), eval_dataset=toy_dataset(32, seed=8))
    trainer.train(resume_from_checkpoint=overrides.get("resume_from_checkpoint"))
    metrics = trainer.evaluate()
    student_state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    teacher_state = (trainer.accelerator.get_state_dict(trainer.strategy.wrapped_teacher) if strategy == "prokt"
                     else teacher.state_dict())
    if trainer.args.process_index == 0:
        torch.save({"student": {k: v.cpu() for k, v in student_state.items()},
                    "teacher": {k: v.cpu() for k, v in teacher_state.items()},
                    "world_size": trainer.args.world_size, "fsdp": trainer.is_fsdp_enabled, "metrics": metrics},
                   os.path.join(output_dir, "weights.pt"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    end_process()
