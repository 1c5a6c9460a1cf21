"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node N -m collapse_kit.cli train ...`` starts N processes with RANK,
LOCAL_RANK and WORLD_SIZE set; :func:`setup` joins them into one process group (gloo on CPU,
NCCL on GPU, one GPU per process). Every process builds the same global batches from the same
seed and trains on its share (rows ``rank::world_size``). Each share keeps the global batch's
sequence and token counts (``Batch.totals``, as a micro-batch does), so every model's loss on
it is its share of the global batch's mean, per-token and per-sequence terms alike; DDP averages
the gradients over ranks, so each rank's loss is scaled by ``world_size`` and a step equals the
single-process step on the whole global batch. Every rank evaluates (identical weights, seeded
evaluation, so identical decisions); only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if WORLD_SIZE > 1; returns (info, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if torch.cuda.device_count() < world:
            raise ValueError(f"torchrun started {world} processes but only "
                             f"{torch.cuda.device_count()} GPUs are visible; use "
                             f"--nproc_per_node {torch.cuda.device_count()}")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard(batch, info: DistInfo):
    """This rank's rows of a global batch, carrying the global totals, and its loss weight.

    The weight is ``world_size``: the rank's loss is already its share of the global mean (the
    global counts divide it) and DDP divides the summed gradients by ``world_size``. Returns
    (None, 0.0) when the global batch has fewer rows than processes: every rank then skips it,
    so all ranks take the same number of optimizer steps.
    """
    if not info.enabled:
        return batch, 1.0
    if batch.history.shape[0] < info.world_size:
        return None, 0.0
    rows = slice(info.rank, None, info.world_size)
    part = type(batch)(batch.history[rows], batch.target[rows], batch.offset,
                       (batch.n_rows, batch.n_tokens))
    return part, float(info.world_size)


def sum_across_ranks(values: dict) -> dict:
    """Each value (a tensor, or a number) summed over all ranks (identity in one process).

    The trainer logs the epoch's losses with it: a rank's loss is only its share of the global
    batch's mean, the sum of the shares is the mean."""
    if not values or not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    keys = list(values)
    flat = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).detach().cpu()
                        for k in keys])
    if dist.get_backend() == "nccl":
        flat = flat.cuda()
    dist.all_reduce(flat)
    return dict(zip(keys, flat.cpu().tolist()))
