"""Distributed data-parallel training with PyTorch DDP, as `torchrun` launches it:

    torchrun --nproc-per-node 4 -m medcls train --data DIR ...        # one machine, 4 GPUs
    medcls train --devices 4 --data DIR ...                           # the same, launched for you
    torchrun --nnodes 2 --node-rank 0 --master-addr HOST --master-port 29500 --nproc-per-node 4 -m medcls train ...

Every rank reads the same data and split; training batches are sharded (DistributedSampler), the
gradients averaged (DDP), training loss and scores gathered from all ranks; every rank scores
validation with the same weights, so early stopping agrees; only rank 0 logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from medcls.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Only rank 0 logs and writes files."""
        return self.rank == 0


SINGLE = Distributed()


def from_environment(device_name: str) -> Distributed:
    """The process group torchrun describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local_rank)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def device_for(state: Distributed, device) -> torch.device:
    if state.active and device.type == "cuda":
        return torch.device("cuda", state.local_rank)
    return device


def check_config(config, state: Distributed) -> None:
    if not state.active:
        return
    if config.class_balance == "sampler":
        raise ConfigError("class_balance=sampler cannot shard batches across processes: use weighted_loss with DDP")
    if config.folds or config.ensemble:
        raise ConfigError("--folds and --ensemble run one process per model: launch them without torchrun")


def wrap(model, state: Distributed, device):
    """The module the optimizer steps through: DDP when distributed (re-wrapped whenever the
    trainable parameters change), else the model itself."""
    if not state.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def gather(tensor: torch.Tensor, state: Distributed) -> torch.Tensor:
    """Concatenate a (N, ...) tensor from every rank (ranks may hold different N)."""
    if not state.active:
        return tensor
    import torch.distributed as dist

    pieces = [None] * state.world
    dist.all_gather_object(pieces, tensor.cpu())
    return torch.cat(pieces)


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` less `option VALUE` and `option=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


def launch(devices: int, argv: list[str]) -> int:
    """`medcls train --devices N ...`: re-run the same command under torchrun with N processes."""
    import subprocess
    import sys

    if devices < 2:
        raise ConfigError("--devices N starts N processes: give 2 or more")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "medcls", *argv]
    return subprocess.call(command)
