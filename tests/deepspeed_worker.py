"""A few ProKT / KD steps under DeepSpeed ZeRO on CPU processes (gloo), or in one plain process for the
reference; saves both models' full weights and the losses. Launched by tests/test_deepspeed.py."""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_prokt import ProKTTrainer  # noqa: E402
from hf_prokt.deepspeed.engines import consolidated_weights  # noqa: E402
from hf_prokt.scripting.shutdown import end_process  # noqa: E402
from tests.conftest import make_args, tiny_bert, toy_dataset  # noqa: E402


def zero_config(stage: int) -> dict:
    """A ZeRO configuration whose batch sizes, accumulation and clipping come from the training arguments."""
    config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
              "zero_optimization": {"stage": stage}}
    if stage == 3:
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return config


def parse(extra: str) -> dict:
    overrides = dict(item.split("=", 1) for item in extra.split(",") if item)
    return {k: (int(v) if k.endswith("steps") else float(v) if k.endswith(("lr", "weight")) else v)
            for k, v in overrides.items()}


def full_weights(trainer, wrapped, model) -> dict:
    """Every process calls it (ZeRO-3 gathers); the main process gets the full weights."""
    if trainer.is_deepspeed_enabled and hasattr(wrapped, "zero_optimization_stage"):
        return consolidated_weights(wrapped)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def held_parameters(model) -> int:
    """The parameter elements this process holds (under ZeRO-3 its partitions, ``ds_tensor``)."""
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())


def main(output_dir: str, per_device_batch: int, stage: int, strategy: str, extra: str) -> None:
    overrides = parse(extra)
    resume = overrides.pop("resume_from_checkpoint", None)
    student, teacher = tiny_bert(seed=1), tiny_bert(layers=3, hidden=24, seed=2)
    initial_teacher = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    total = {"student": sum(p.numel() for p in student.parameters()),
             "teacher": sum(p.numel() for p in teacher.parameters())}
    sharding = {"deepspeed": zero_config(stage), "use_cpu": False} if stage >= 0 else {}
    settings = dict(strategy=strategy, optim="adamw_torch", lr_scheduler_type="linear", max_grad_norm=1.0,
                    learning_rate=1e-2, teacher_learning_rate=1e-2, max_steps=3, dataloader_drop_last=True,
                    per_device_train_batch_size=per_device_batch, evaluate_teacher=False, save_on_sigterm=False,
                    **sharding)
    args = make_args(Path(output_dir), **{**settings, **overrides})
    trainer = ProKTTrainer(model=student, teacher_model=teacher, args=args, train_dataset=toy_dataset(64, seed=7),
                           eval_dataset=toy_dataset(32, seed=8))
    trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate()
    student_state = full_weights(trainer, trainer.model_wrapped, student)
    teacher_state = full_weights(trainer, trainer.strategy.wrapped_teacher, teacher)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    checksum = sum(float(p.detach().double().sum()) for p in trainer.model.parameters() if p.numel())
    # What this process holds (ZeRO-3 leaves each parameter's partition, p.numel() == 0 outside a forward).
    local = {"student": held_parameters(student), "teacher": held_parameters(teacher)}
    if trainer.args.process_index == 0:
        torch.save({"student": student_state, "teacher": teacher_state, "world_size": trainer.args.world_size,
                    "deepspeed": trainer.is_deepspeed_enabled, "initial_teacher": initial_teacher,
                    "metrics": metrics, "losses": losses,
                    "teacher_engine": type(trainer.strategy.wrapped_teacher).__name__},
                   os.path.join(output_dir, "weights.pt"))
    with open(os.path.join(output_dir, f"rank{trainer.args.process_index}.json"), "w") as f:
        json.dump({"losses": losses, "student_checksum": checksum, "local_parameters": local,
                   "total_parameters": total}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
    end_process()
