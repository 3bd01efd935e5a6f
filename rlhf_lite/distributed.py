"""Data-parallel training on several GPUs (or CPU processes) with PyTorch DDP and torchrun.

Data parallelism: every process holds a full replica of the model and computes the loss on its
own shard of each batch; during backward, DistributedDataParallel (DDP) all-reduces (averages)
the gradients, so every replica takes the same optimizer step and the replicas stay identical.
A step on W processes is a step on their combined batch, about W times faster.

Launch one process per GPU with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT for each of them:

    torchrun --standalone --nproc_per_node=2 -m rlhf_lite.pipeline --preset gpt2

The entry point joins the process group with `process_group()` (backend nccl on CUDA, gloo
on CPU); SFT, the reward model and PPO then train data-parallel, pretraining too. A plain
`python ...` run or a notebook sets none of those variables: no process group is created,
nothing is wrapped, every helper here is a no-op, and the numbers are exactly those of a run
without this module.

Conventions (tested in tests/test_distributed.py):
- Batch sizes in the configs are global. Each process takes every W-th example of a step's
  batch (`shard`, the split of torch's DistributedSampler), so a recipe trains the same model
  on any number of processes, and its checkpoint's recipe stays valid.
- A loss that is a mean over its shard (e.g. over response tokens) is rescaled by the shard's
  share of the global count (`scale_for_global_mean`): DDP's gradient average is then the
  gradient of the mean over the whole batch, even when shards hold different token counts.
- Only rank 0 writes files (`save_on_main`); the others wait for it at a barrier, so no
  process reads a checkpoint before it is complete.
- Every process evaluates on the whole validation set: identical weights give identical
  numbers, so all histories agree without communication.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .utils import SEED_STRIDES, atomic_save, pick_device


def is_distributed() -> bool:
    """True inside a process group (launched by torchrun and joined with `init_from_env`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the process that writes checkpoints, reports and logs."""
    return rank() == 0


def init_from_env() -> torch.device:
    """Join the process group described by torchrun's environment; return this process's device.

    On CUDA each process drives the GPU of its LOCAL_RANK (made the current device, so plain
    "cuda" means it) over nccl; on CPU the processes talk over gloo. Without WORLD_SIZE in the
    environment (not launched by torchrun) nothing happens and the usual device is returned.
    """
    if "WORLD_SIZE" not in os.environ:
        return pick_device()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not is_distributed():
        # env:// reads RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return device


def _comm_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cleanup() -> None:
    """Leave the process group (a no-op outside one)."""
    if is_distributed():
        dist.destroy_process_group()


@contextmanager
def process_group():
    """`with process_group() as device:` joins torchrun's group (if any) and always leaves it."""
    device = init_from_env()
    try:
        yield device
    finally:
        cleanup()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in DDP inside a process group, `model` itself otherwise.

    DDP broadcasts rank 0's parameters when it wraps, so replicas start identical; train
    through the wrapper (its backward averages the gradients) and keep using `model` for
    everything else (generation, evaluation, saving), which shares the same parameters.
    """
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model,
                                   device_ids=[device.index] if device.type == "cuda" else None)


def shard(batch):
    """This process's share of a batch (a tensor, split along dim 0, or a list; or a tuple or
    dict of them, each split alike): every W-th item from position `rank` on. Shards differ
    in size by at most one item."""
    w = world_size()
    if w == 1:
        return batch
    if isinstance(batch, tuple):
        return tuple(shard(part) for part in batch)
    if isinstance(batch, dict):
        return {name: shard(part) for name, part in batch.items()}
    n = len(batch)
    if n < w:
        raise ValueError(f"a batch of {n} examples cannot be split over {w} processes: "
                         f"every process needs at least one (use a batch size >= {w})")
    return batch[rank()::w]


def scale_for_global_mean(loss: torch.Tensor, count: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, global mean loss) for a `loss` that is a mean over `count` terms.

    Process r holds L_r = S_r / n_r, the mean of its n_r terms (tokens, pairs...). The loss of
    the combined batch is sum_r S_r / N with N = sum_r n_r. DDP averages gradients over the W
    processes, so backpropagating L_r * W * n_r / N gives exactly the gradient of the combined
    loss, whatever the n_r. The second value, sum_r n_r L_r / N, is that combined loss (for
    logging; equal on every process). Outside a process group: (loss, loss.detach()).
    """
    if not is_distributed():
        return loss, loss.detach()
    totals = torch.tensor([count, count * loss.item()], dtype=torch.float64,
                          device=_comm_device())
    dist.all_reduce(totals)
    total_count, total_sum = totals.tolist()
    return loss * (world_size() * count / total_count), torch.tensor(total_sum / total_count)


def reduce_metrics(metrics: dict[str, float], rules: dict[str, str]) -> dict[str, float]:
    """Metrics combined over processes, each by its rule in `rules` ("mean" or "max"), equal on
    every rank."""
    if not is_distributed():
        return metrics
    names = list(metrics)
    values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64,
                          device=_comm_device())
    is_max = torch.tensor([rules[k] == "max" for k in names], device=values.device)
    sums, maxima = values.where(~is_max, 0.0), values.where(is_max, -torch.inf)
    dist.all_reduce(sums)
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
    reduced = torch.where(is_max, maxima, sums / world_size())
    return dict(zip(names, reduced.tolist()))


def save_on_main(obj, path) -> None:
    """`utils.atomic_save(obj, path)` on rank 0 only; every process waits until it is written."""
    if is_main_process():
        atomic_save(obj, path)
    barrier()


def seed_for_rank(seed: int) -> int:
    """A seed of this process's own: `seed` on rank 0 (and in a single process)."""
    return seed + SEED_STRIDES["rank"] * rank()


def per_process(n: int, what: str) -> int:
    """n / W for a global size `n` (e.g. "PPOConfig.batch_size"), which W must divide: every
    process must run the same number of gradient steps, or DDP waits forever for a missing one."""
    w = world_size()
    if n % w:
        raise ValueError(f"{what} = {n} is not divisible by the {w} processes: "
                         f"pick a multiple of {w}")
    return n // w
