"""The teacher's own DeepSpeed engines, beside the student's (which the `Trainer` creates).

accelerate's `prepare` keeps one DeepSpeed engine (the one its `backward` drives), so the teacher is wrapped
by `deepspeed.initialize` directly, from the student's configuration once the `Trainer` has resolved its
``"auto"`` values:

- a frozen (KD) teacher gets an inference engine as transformers and TRL build one: no optimizer; under
  ZeRO-3 its parameters are partitioned across the processes (gathered layer by layer in its forward), under
  ZeRO-1/2 (which shard optimizer states and gradients, of which it has none) it stays whole (stage 0);
- a ProKT teacher gets a training engine with its own optimizer at the student's ZeRO stage, so ZeRO shards
  its optimizer states (1), gradients (2) and parameters (3) as it does the student's.
"""

from __future__ import annotations

import copy

from torch import nn

TEACHER_ENGINE_DIR = "teacher_engine"
"""The checkpoint sub-folder of the ProKT teacher's engine (`DeepSpeedEngine.save_checkpoint`)."""


def student_config(trainer) -> dict:
    """A copy of the student's DeepSpeed configuration, with every ``"auto"`` value resolved."""
    config = copy.deepcopy(trainer.accelerator.state.deepspeed_plugin.deepspeed_config)
    unresolved = sorted(_auto_keys(config))
    if unresolved:
        raise ValueError(f"the DeepSpeed configuration still has 'auto' values at {unresolved} when the teacher is "
                         "prepared. Give them values in the DeepSpeed configuration.")
    return config


def teacher_config(trainer) -> dict:
    """The student's resolved configuration without its ``optimizer`` and ``scheduler`` blocks: the teacher's
    engine gets no DeepSpeed optimizer of its own (a torch one, or none for inference)."""
    config = student_config(trainer)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    return config


def _auto_keys(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            yield prefix + key


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def deepspeed_config_of(args) -> dict | None:
    """The DeepSpeed configuration the arguments ask for (``deepspeed=``, or an accelerate DeepSpeed config
    through the environment), "auto" values unresolved; None without DeepSpeed."""
    if getattr(args, "hf_deepspeed_config", None) is not None:
        return args.hf_deepspeed_config.config
    plugin = getattr(args, "deepspeed_plugin", None)
    return None if plugin is None else plugin.deepspeed_config


def refuse_unsupported(args, strategy: str) -> None:
    """Refuse, before anything is built, what a teacher under DeepSpeed does not support here."""
    config = deepspeed_config_of(args)
    if config is None:
        return
    zero = config.get("zero_optimization", {})
    offloaded = [key for key in ("offload_optimizer", "offload_param")
                 if zero.get(key) and zero[key].get("device", "none") not in ("none", None)]
    if offloaded:
        raise ValueError(
            f"DeepSpeed offload ({', '.join(offloaded)}) with a teacher (strategy={strategy!r}) is not supported yet: "
            "neither the teacher's engine nor the checkpoints have been checked with it. Remove the offload from "
            "zero_optimization, or use strategy='finetune'."
        )
    if args.uses_intermediate_terms:
        raise ValueError(
            "the intermediate distillation terms (hidden/embedding/attention_distill_weight) are not supported under "
            "DeepSpeed: their projections are trained by the student's optimizer, which DeepSpeed's engine builds "
            "around the student's parameters alone. Set those weights to 0 under DeepSpeed, or use DDP."
        )
    save_strategy = getattr(args, "save_strategy", "no")
    save_strategy = getattr(save_strategy, "value", save_strategy)  # an IntervalStrategy after __post_init__
    saving = [f"{name}={value!r}" for name, value, off in (
        ("save_strategy", save_strategy, "no"), ("save_on_sigterm", getattr(args, "save_on_sigterm", False), False))
        if value != off]
    if saving:
        raise ValueError(
            f"checkpoints with a teacher under DeepSpeed are not written yet ({', '.join(saving)}): the teacher's "
            "engine state is not saved, so a run resumed from one would not continue the same teacher. Set "
            "save_strategy='no' and save_on_sigterm=False (save_model() at the end still writes the student), or "
            "use DDP / FSDP2, whose checkpoints hold the teacher."
        )
    if strategy == "prokt":
        blocks = [key for key in ("optimizer", "scheduler") if key in config]
        if blocks:
            raise ValueError(
                f"the DeepSpeed configuration has {' and '.join(repr(b) for b in blocks)} block(s), but the ProKT "
                "teacher's optimizer and scheduler are built like the student's by the Trainer (optim=, "
                "lr_scheduler_type=, teacher_learning_rate=). Remove the block(s) from the DeepSpeed configuration."
            )


def inference_engine(trainer, teacher: nn.Module):
    """A frozen teacher wrapped for inference (``deepspeed.initialize`` without optimizer), in eval mode."""
    import deepspeed

    config = teacher_config(trainer)
    if zero_stage(config) != 3:
        config["zero_optimization"] = {**config.get("zero_optimization", {}), "stage": 0}
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine


def training_engine(trainer, teacher: nn.Module, optimizer):
    """A ProKT teacher and its torch ``optimizer`` wrapped in a DeepSpeed engine at the student's ZeRO stage;
    returns ``(engine, the engine's optimizer)``. Its learning-rate scheduler stays outside the engine (the
    strategy steps it after each applied step)."""
    import deepspeed

    config = teacher_config(trainer)
    config["zero_allow_untested_optimizer"] = True  # a torch optimizer, as the Trainer gives the student's
    engine, engine_optimizer, *_ = deepspeed.initialize(model=teacher, optimizer=optimizer, config=config)
    return engine, engine_optimizer


def consolidated_weights(engine) -> dict | None:
    """The full weights of a teacher engine, on the CPU of the main process (None on the others). Under ZeRO-3 a
    collective: every process calls it."""
    if engine.zero_optimization_stage() == 3:
        weights = engine._zero3_consolidated_16bit_state_dict()
    else:
        weights = engine.module.state_dict()
    return None if weights is None else {k: v.detach().cpu() for k, v in weights.items()}
