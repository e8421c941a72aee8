"""Runs a script under Accelerate's FSDP2 code path on CPU processes (gloo), for the tests: Accelerate turns FSDP on
only for accelerator device types and otherwise silently falls back to DDP. This launcher, started by torchrun with
the environment `accelerate launch --config_file examples/accelerate_configs/fsdp.yaml` would set, makes
`AcceleratorState` keep the FSDP plugin it is given on CPU too; everything else (sharding with `fully_shard`, the
Trainer's FSDP checkpointing, gathering the state dict) is Accelerate's and the Trainer's own code.

    python -m torch.distributed.run --nproc_per_node 2 tests/accelerate_fsdp_on_cpu.py examples/train_stage2.py ...
"""

from __future__ import annotations

import runpy
import sys

import accelerate.state as accelerate_state
from accelerate.utils import DistributedType

_original_init = accelerate_state.AcceleratorState.__init__


def _init_keeping_fsdp_on_cpu(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        accelerate_state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = plugin
        if self._mixed_precision != "no":
            plugin.set_mixed_precision(self._mixed_precision)


if __name__ == "__main__":
    accelerate_state.AcceleratorState.__init__ = _init_keeping_fsdp_on_cpu
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
