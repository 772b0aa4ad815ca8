"""DeepSpeed under a multi-process launch on a host without an accelerator (CPU processes, gloo).

`TrainingArguments` sets up DeepSpeed's distributed state without a backend: on a GPU host accelerate picks
NCCL, but without an accelerator it then counts one process, and DeepSpeed's batch-size check fails
(``train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size``).
`configure_cpu_deepspeed_state` creates accelerate's state first, with DeepSpeed on and the backend named
(``ddp_backend``, default gloo), and tells the arguments to keep it. On a host with an accelerator, or without
a launcher, or with a state already configured, it does nothing.
"""

from __future__ import annotations

import os

import torch

USE_DEEPSPEED = "ACCELERATE_USE_DEEPSPEED"


def host_has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.is_available()
    return torch.cuda.is_available()


def configure_cpu_deepspeed_state(args) -> bool:
    """Create accelerate's DeepSpeed state with ``args.ddp_backend`` (default ``"gloo"``) when ``args`` asks for
    DeepSpeed (``deepspeed=``) under a launcher (``LOCAL_RANK``) on a host without an accelerator, and set
    ``args.accelerator_config.use_configured_state`` so that the arguments keep it. Returns whether it did.
    """
    from accelerate import PartialState

    if not args.deepspeed or args.use_cpu or int(os.environ.get("LOCAL_RANK", -1)) == -1:
        return False
    if host_has_accelerator():
        return False
    if PartialState._shared_state:  # configured already: kept if it is DeepSpeed's (a second set of arguments)
        from accelerate.utils import DistributedType

        if PartialState().distributed_type != DistributedType.DEEPSPEED:
            return False
        args.accelerator_config.use_configured_state = True
        return True
    previous = os.environ.get(USE_DEEPSPEED)
    os.environ[USE_DEEPSPEED] = "true"  # what TrainingArguments sets while it creates the state for DeepSpeed
    try:
        PartialState(backend=args.ddp_backend or "gloo", timeout=args.ddp_timeout_delta)
    finally:
        if previous is None:
            del os.environ[USE_DEEPSPEED]
        else:
            os.environ[USE_DEEPSPEED] = previous
    args.accelerator_config.use_configured_state = True
    return True
