"""The teacher's persistence: its training state inside `Trainer` checkpoints, and the teacher as a model.

A ProKT checkpoint holds, next to the student's files:

- ``teacher/``: the teacher's weights (``save_pretrained``);
- ``teacher_optimizer.pt``, ``teacher_scheduler.pt``: its optimizer and scheduler;
- ``prokt_state.json``: the dual multiplier and the teacher's last learning rate;
- ``distillation_projections.pt``: the learned projections of the intermediate terms (any strategy).

Under FSDP2 the teacher is sharded: `gather_teacher_state` collects the full weights and optimizer state on
the CPU (a collective: every process calls it) and `load_teacher_state` lets every process read the full
state and keep its shards. `save_trainer_teacher` and `push_trainer_teacher` read the teacher from a trainer's
strategy; the other functions know neither the trainer nor the strategies.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import torch
from torch import nn

TEACHER_DIR = "teacher"
TEACHER_OPTIMIZER_NAME = "teacher_optimizer.pt"
TEACHER_SCHEDULER_NAME = "teacher_scheduler.pt"
DISTILLER_NAME = "distillation_projections.pt"
PROKT_STATE_NAME = "prokt_state.json"


def unwrap_optimizer(optimizer):
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def gather_full_weights(accelerator, wrapped_teacher: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights of a sharded (FSDP2) teacher, on the CPU (`Accelerator.get_state_dict`). A collective:
    every process calls it."""
    return accelerator.get_state_dict(wrapped_teacher)


def gather_teacher_state(accelerator, wrapped_teacher: nn.Module, optimizer) -> tuple[dict, dict]:
    """``(weights, optimizer_state)`` of a sharded teacher, full and on the CPU. A collective (accelerate has no
    gather of an optimizer's state: torch's ``get_optimizer_state_dict``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    weights = gather_full_weights(accelerator, wrapped_teacher)
    optimizer_state = get_optimizer_state_dict(
        wrapped_teacher, unwrap_optimizer(optimizer), options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return weights, optimizer_state


def save_teacher_state(output_dir: str, teacher: nn.Module, optimizer, scheduler, prokt_state: dict,
                       weights: dict | None = None, optimizer_state: dict | None = None) -> None:
    """Write the ProKT teacher's training state into the checkpoint folder ``output_dir``.

    Args:
        teacher: the unwrapped teacher (its ``save_pretrained`` writes ``teacher/``).
        optimizer, scheduler: the teacher's own.
        prokt_state: JSON-able extra state (``dual_beta``, ``teacher_learning_rate``).
        weights, optimizer_state: the gathered full state of a sharded teacher (`gather_teacher_state`), or
            None to take the teacher's and the optimizer's own.
    """
    teacher.save_pretrained(os.path.join(output_dir, TEACHER_DIR), state_dict=weights)
    torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(),
               os.path.join(output_dir, TEACHER_OPTIMIZER_NAME))
    torch.save(scheduler.state_dict(), os.path.join(output_dir, TEACHER_SCHEDULER_NAME))
    with open(os.path.join(output_dir, PROKT_STATE_NAME), "w") as f:
        json.dump(prokt_state, f)


def load_teacher_state(checkpoint: str, optimizer, scheduler, *, sharded_teacher: nn.Module | None = None,
                       load_weights: Callable[[str], None] | None = None, device="cpu") -> dict:
    """Restore the ProKT teacher's training state from ``checkpoint``; returns the ``prokt_state`` dict.

    Args:
        sharded_teacher: the FSDP2-wrapped teacher, whose processes each read the full state and keep their
            shards; None for an unsharded teacher, whose weights ``load_weights(teacher_dir)`` restores.
        device: where an unsharded teacher's optimizer state goes.
    """
    teacher_dir = os.path.join(checkpoint, TEACHER_DIR)
    if not os.path.isdir(teacher_dir):
        raise ValueError(
            f"{checkpoint} holds no ProKT teacher state ({TEACHER_DIR}/ is missing), so training cannot "
            "resume faithfully. Resume from a checkpoint written by ProKTTrainer with strategy='prokt' and "
            "save_only_model=False (save_only_model checkpoints keep the student's weights only)."
        )
    optimizer_path = os.path.join(checkpoint, TEACHER_OPTIMIZER_NAME)
    if sharded_teacher is not None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(sharded_teacher, read_saved_weights(teacher_dir), options=options)
        optimizer_state = torch.load(optimizer_path, map_location="cpu", weights_only=True)
        if optimizer_state.get("state"):  # a stateless optimizer (plain SGD) has nothing to restore
            set_optimizer_state_dict(sharded_teacher, unwrap_optimizer(optimizer), optimizer_state, options=options)
    else:
        load_weights(teacher_dir)
        optimizer.load_state_dict(torch.load(optimizer_path, map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(os.path.join(checkpoint, TEACHER_SCHEDULER_NAME), weights_only=True))
    with open(os.path.join(checkpoint, PROKT_STATE_NAME)) as f:
        return json.load(f)


def save_projections(output_dir: str, distiller: nn.Module) -> None:
    """The learned projections of the intermediate terms, into the checkpoint folder."""
    torch.save(distiller.state_dict(), os.path.join(output_dir, DISTILLER_NAME))


def load_projections(checkpoint: str, distiller: nn.Module) -> None:
    path = os.path.join(checkpoint, DISTILLER_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint} has no {DISTILLER_NAME}: it was not saved with the same "
                         "intermediate distillation weights. Resume with the arguments it was trained with.")
    distiller.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def write_teacher(folder: str, teacher: nn.Module, weights: dict | None = None, processing_class=None) -> None:
    """The teacher as a plain checkpoint (``weights``: gathered from FSDP shards, or None for its own), with
    the processor (tokenizer or image processor) when there is one."""
    teacher.save_pretrained(folder, state_dict=weights)
    if processing_class is not None:
        processing_class.save_pretrained(folder)


def save_trainer_teacher(trainer, output_dir: str) -> None:
    """Write ``trainer``'s teacher as a plain checkpoint with the processor (`write_teacher`). Under FSDP every
    process calls it: the teacher's shards are gathered first."""
    strategy = trainer.strategy
    if strategy.teacher_model is None:
        raise ValueError("this trainer has no teacher (strategy='finetune').")
    weights = strategy.full_teacher_weights()
    if trainer.args.should_save:
        write_teacher(output_dir, strategy.unwrapped_teacher(), weights, trainer.processing_class)


def push_trainer_teacher(trainer, repo_id: str, *, commit_message: str | None = None, token: str | None = None,
                         private: bool | None = None) -> None:
    """Push ``trainer``'s teacher to its own Hub repository ``repo_id`` (`push_teacher_to_hub`); under FSDP every
    process calls it (the shards are gathered), the main process pushes."""
    strategy = trainer.strategy
    if strategy.teacher_model is None:
        raise ValueError("push_teacher=True, but this trainer has no teacher (strategy='finetune').")
    weights = strategy.full_teacher_weights()
    if trainer.is_world_process_zero():
        push_teacher_to_hub(repo_id, strategy.unwrapped_teacher(), weights=weights,
                            processing_class=trainer.processing_class, commit_message=commit_message, token=token,
                            private=private)


def push_teacher_to_hub(repo_id: str, teacher: nn.Module, *, weights: dict | None = None, processing_class=None,
                        commit_message: str | None = None, token: str | None = None, private: bool | None = None):
    """Create (or reuse) the Hub repository ``repo_id`` and upload the teacher there, apart from the student."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        write_teacher(folder, teacher, weights, processing_class)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)


def read_saved_weights(folder: str) -> dict[str, torch.Tensor]:
    """The weights `save_pretrained` wrote in ``folder`` (one safetensors file, or an index and its shards)."""
    from safetensors.torch import load_file

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for name in files:
        weights.update(load_file(os.path.join(folder, name)))
    return weights
