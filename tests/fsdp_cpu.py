"""Test-only: run accelerate's FSDP2 on CPU processes (gloo).

accelerate switches to FSDP only from GPU-like distributed modes; with ``use_cpu=True`` it stays in
``MULTI_CPU`` and silently uses DDP. For the tests, the state is switched to FSDP after the accelerator is
built, so that the real FSDP2 code (``fully_shard``, DTensor parameters, sharded optimizer states) runs on
CPU. Nothing in the library depends on this.
"""

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from hf_prokt import ProKTTrainer

# BERT's default no-split modules include the embeddings, which accelerate's FSDP2 wrapping trips over.
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["BertLayer"]}


class CpuFsdpProKTTrainer(ProKTTrainer):
    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and self.accelerator.distributed_type == DistributedType.MULTI_CPU:
            # Every AcceleratorState() re-reads PartialState's shared dict: switch both.
            for shared in (PartialState._shared_state, self.accelerator.state.__dict__):
                shared["distributed_type"] = DistributedType.FSDP
                shared["device"] = torch.device("cpu")
            self.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = True
