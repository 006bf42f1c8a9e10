"""Fully sharded data parallel (FSDP2, `torch.distributed.fsdp.fully_shard`) for pre-training a DiT
whose weights, gradients, optimizer moments and EMA do not fit one device: each rank keeps 1/world
of them and gathers a unit's weights only while that unit runs.

The units follow how the DiT calls its parts: each block's self-attention and feed-forward (called
as modules, the bulk of the weights) are units of their own; the rest of the DiT (embeddings, norms,
cross-attention, whose context projections the DiT calls as methods before the blocks run) is the
root unit. The conditioners' small trainable layers stay whole on every rank, their gradients
averaged like DDP's. Gradients of sharded weights are averaged by FSDP's reduce-scatter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "shard_dit",
    "average_replicated_grads",
    "clip_grad_norm",
    "full_state_dict",
    "is_sharded",
    "local",
    "reshard_like",
]


def is_sharded(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def shard_dit(dit: nn.Module, device: torch.device, world: int) -> None:
    """Shard the DiT across the `world` ranks of the current process group, in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for block in dit.blocks:
        fully_shard(block.self_attn, mesh=mesh)
        fully_shard(block.ff, mesh=mesh)
    fully_shard(dit, mesh=mesh)


def average_replicated_grads(params: list[nn.Parameter], world: int, bucket: int = 2**24) -> None:
    """All-reduce (mean over ranks) the gradients of the parameters FSDP does not hold, in flat
    buckets of up to `bucket` elements: data parallelism for modules no DDP wrapper covers. A missing
    gradient counts as zeros, so every rank makes the same collective calls."""
    import torch.distributed as dist

    whole = [p for p in params if not is_sharded(p) and p.requires_grad]
    for p in whole:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    groups: dict[tuple, list[list[nn.Parameter]]] = {}
    filled: dict[tuple, int] = {}  # elements in each group's last chunk
    for p in whole:
        key = (p.grad.dtype, p.grad.device)
        chunks = groups.setdefault(key, [[]])
        if chunks[-1] and filled.get(key, 0) + p.numel() > bucket:
            chunks.append([])
            filled[key] = 0
        chunks[-1].append(p)
        filled[key] = filled.get(key, 0) + p.numel()
    for chunks in groups.values():
        for chunk in chunks:
            flat = torch.cat([p.grad.reshape(-1) for p in chunk])
            dist.all_reduce(flat)
            flat.div_(world)
            for p, part in zip(chunk, flat.split([p.numel() for p in chunk]), strict=True):
                p.grad.copy_(part.view_as(p.grad))


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients down so that their global L2 norm is at most `max_norm`; returns the norm
    before scaling. Sharded gradients count each rank's shard once (squares summed over the ranks),
    whole ones once (the same on every rank after averaging), so every rank scales alike."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    whole = [g for g in grads if not is_sharded(g)]
    shards = [g.to_local() for g in grads if is_sharded(g)]
    total = torch.nn.utils.get_total_norm(whole).double().square() if whole else 0.0
    if shards:
        import torch.distributed as dist

        part = torch.nn.utils.get_total_norm(shards).double().square()
        dist.all_reduce(part)
        total = total + part
    norm = float(total) ** 0.5
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        torch._foreach_mul_(whole + shards, scale)
    return norm


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with every sharded tensor gathered whole, on the CPU. Collective: every
    rank calls it; each gets the full dict. Unsharded CPU tensors are the module's own (not copies):
    use the dict before changing the weights."""
    state = module.state_dict()
    return {k: (v.full_tensor() if is_sharded(v) else v).detach().cpu() for k, v in state.items()}


def local(t: Any) -> Any:
    """A rank's own part of a sharded tensor (what it saves to resume), anything else unchanged."""
    return t.to_local() if is_sharded(t) else t


def reshard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A saved local part back as a sharded tensor laid out as `like` (an optimizer moment of a
    sharded parameter); a scalar (Adam's step count) or an unsharded `like` is returned as is."""
    if not is_sharded(like) or value.dim() == 0 or is_sharded(value):
        return value
    from torch.distributed.tensor import DTensor

    mesh, placements = like.device_mesh, like.placements
    return DTensor.from_local(value, mesh, placements, shape=like.shape, stride=like.stride())
