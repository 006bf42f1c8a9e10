"""What every training stage shares: processes and devices, precision, progress, metrics, EMA and
resumable state. A stage supplies its modules, its loss and what it writes at a checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stable_audio_3.training import sharding
from stable_audio_3.training.sharding import local, reshard_like

__all__ = [
    "distributed",
    "start_processes",
    "stop_processes",
    "autocast",
    "progress_bar",
    "MetricsLog",
    "EMA",
    "save_state",
    "load_state",
    "forked_rng",
    "wrap_ddp",
    "shard_if_asked",
    "gradient_averaging",
    "save_and_write",
    "state_file",
    "Optimisation",
    "Reporter",
]


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment (0, 1, 0 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def start_processes(device: str | torch.device | None) -> tuple[int, int, str | torch.device | None]:
    """(rank, world size, device); joins the process group when launched by torchrun."""
    rank, world, local_rank = distributed()
    if world == 1:
        return rank, world, device
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def stop_processes(world: int) -> None:
    """Leave the process group (called from the trainers' `finally`). After a clean run every rank
    first meets the others at a barrier, so none tears its gloo connections down while a peer's last
    collective (an FSDP state-dict gather) is still in flight, which can abort the peer; after an
    exception it leaves at once, as a barrier could wait forever on a rank that died."""
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            if sys.exc_info()[0] is None:
                dist.barrier()
            dist.destroy_process_group()


def wrap_ddp(module: nn.Module, world: int, device: torch.device) -> nn.Module:
    if world == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shard_if_asked(dits: list[nn.Module], device: torch.device, world: int, choice: str) -> bool:
    """Shard the DiTs with FSDP (`sharding.shard_dit`) when `choice` is "fsdp" and there are
    several processes; True when it did (the modules' parameters are new objects then)."""
    fsdp = choice == "fsdp" and world > 1
    if fsdp:
        for dit in dits:
            sharding.shard_dit(dit, device, world)
    return fsdp


def gradient_averaging(params: list[nn.Parameter], world: int) -> Callable[[], None] | None:
    """The `before_step` of an `Optimisation` whose module no DDP wrapper covers: the mean over the
    ranks of its gradients (those FSDP does not reduce itself); None in one process."""
    if world == 1:
        return None
    return lambda: sharding.average_replicated_grads(params, world)


def state_file(out: Path, rank: int, fsdp: bool, stem: str = "train_state") -> Path:
    """Where a run's resume state goes: one file (rank 0's), or under FSDP one per rank."""
    return out / (f"{stem}.rank{rank}.pt" if fsdp else f"{stem}.pt")


def save_and_write(
    rank: int,
    fsdp: bool,
    save: Callable[[], None],
    averaged: contextlib.AbstractContextManager,
    networks: nn.Module,
    write: Callable[[dict[str, torch.Tensor] | None], None],
) -> None:
    """A checkpoint step: the resume state (`save`) and the checkpoint folder (`write`, given the
    gathered state dict under FSDP, else None), with the EMA weights (`averaged`) in place. Rank 0
    alone, except under FSDP, where every rank saves its own shards and takes part in gathering."""
    if rank != 0 and not fsdp:
        return
    save()
    with averaged:
        state = sharding.full_state_dict(networks) if fsdp else None
        if rank == 0:
            write(state)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 (default, "auto") or fp16 autocast on CUDA; on a CPU full precision unless "bf16" is
    asked for (CPUs with AMX or AVX-512 BF16 run it several times faster); "fp32": never."""
    if precision == "fp32" or (device.type != "cuda" and precision != "bf16"):
        return contextlib.nullcontext()
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn(
            "precision='bf16' on a CPU without native bf16 (AMX or AVX-512 BF16): it is emulated and "
            "can be tens of times slower than fp32; use precision='fp32' on this machine",
            UserWarning,
            stacklevel=2,
        )
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def progress_bar(enabled: bool, total: int, start: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="step")


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (and TensorBoard scalars when asked)."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool = False) -> None:
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.start = time.monotonic()
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        entry = {"step": step, "time": round(time.monotonic() - self.start, 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EMA:
    """An exponential moving average of parameters, kept in float32 on their device.

    The decay warms up as `min(decay, (1 + n) / (10 + n))` after n updates, so a short run's
    average is not dominated by the initial weights."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the current weights after optimizer step number `step` (1-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach().float(), 1.0 - decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the trained ones, restored afterwards."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved, strict=True):
                    p.copy_(s)


def save_state(
    path: Path, step: int, params: list[nn.Parameter], opt, ema: EMA | None, gen, rng, **extra
) -> None:
    """Everything a resumed run needs to continue bit for bit, written atomically. Of a sharded
    tensor (FSDP) only this rank's part is saved: each rank writes its own file."""
    optimizer = opt.state_dict()
    optimizer["state"] = {
        i: {k: local(v) for k, v in moments.items()} for i, moments in optimizer["state"].items()
    }
    state = {
        "step": step,
        "params": [local(p).detach().cpu() for p in params],
        "optimizer": optimizer,
        "ema": None if ema is None else [local(s).cpu() for s in ema.shadow],
        "generator": gen.get_state(),
        "rng": rng.getstate(),
        **extra,
    }
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(
    path: Path, params: list[nn.Parameter], opt, ema: EMA | None, gen, rng: random.Random
) -> dict[str, Any]:
    """Restore what `save_state` wrote; returns the state (its "step" is where to continue)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            local(p).copy_(saved)
        if ema is not None and state["ema"] is not None:
            for s, saved in zip(ema.shadow, state["ema"], strict=True):
                local(s).copy_(saved)
    opt.load_state_dict(state["optimizer"])
    for p, moments in opt.state.items():  # the moments of sharded parameters sharded again
        for k, v in moments.items():
            moments[k] = reshard_like(v, p)
    gen.set_state(state["generator"])
    version, internal, gauss = state["rng"]
    rng.setstate((version, tuple(internal), gauss))
    return state


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Seed PyTorch's global generator for code that only draws from it (module initialisers), and
    restore the caller's state afterwards: the user's global RNG is never changed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def lr_factor(step: int, warmup: int, total: int, decay: int, cooldowns: tuple[int, ...] = ()) -> float:
    """The learning rate of (0-based) `step` over the peak: a linear warm-up over `warmup` steps,
    constant, then a linear cool-down over the last `decay` of `total` steps (the last at 1/decay). The
    cool-down is what a fixed budget gains from (a constant rate never settles). `cooldowns` are
    earlier steps where a cool-down also ends, the rate back at its peak after each: one run then
    follows the schedule of a run resumed with more steps (`steps` raised, `resume`)."""
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if decay and total:
        end = min([e for e in cooldowns if e > step] + [total])
        factor = min(factor, max(0.0, (end - step) / decay))
    return factor


class Optimisation:
    """AdamW over `params` (the official betas), their EMA and the run's random streams, with
    exact save and resume: what each stage's loop needs besides its loss."""

    def __init__(
        self,
        params: list[nn.Parameter],
        cfg: Any,
        rank: int,
        state_path: Path,
        warmup_steps: int = 0,
        before_step: Callable[[], None] | None = None,
        decay_steps: int = 0,
        cooldowns: tuple[int, ...] = (),
    ) -> None:
        self.params = params
        self.before_step = before_step  # e.g. averaging gradients FSDP does not reduce
        self.lr, self.warmup_steps, self.decay_steps = cfg.lr, warmup_steps, decay_steps
        self.cooldowns = tuple(cooldowns)
        self.max_grad_norm = float(getattr(cfg, "max_grad_norm", 0.0))
        self.grad_norm = 0.0  # of the last step, before clipping (0 when not clipping)
        self.total_steps = int(getattr(cfg, "steps", 0))
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.ema = EMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.gen = torch.Generator().manual_seed(cfg.seed + rank)
        self.rng = random.Random(cfg.seed + rank)
        self.state_path = state_path
        self.step = 0

    def resume(self) -> int:
        if self.state_path.is_file():
            state = load_state(self.state_path, self.params, self.opt, self.ema, self.gen, self.rng)
            self.step = int(state["step"])
        return self.step

    def apply(self, loss: torch.Tensor) -> float:
        """One optimizer step on `loss`; returns its value."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.before_step is not None:
            self.before_step()
        if self.max_grad_norm > 0:  # a rare huge batch loss then moves the weights by a bounded step
            self.grad_norm = sharding.clip_grad_norm(self.params, self.max_grad_norm)
        if self.warmup_steps or self.decay_steps:  # a function of the step alone (exact on resume)
            factor = lr_factor(
                self.step, self.warmup_steps, self.total_steps, self.decay_steps, self.cooldowns
            )
            for group in self.opt.param_groups:
                group["lr"] = self.lr * factor
        self.opt.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.step)
        return float(loss.detach())

    @property
    def logged(self) -> dict[str, float]:
        """What a stage logs about the last step besides its losses: the gradient norm when clipping."""
        return {"grad_norm": self.grad_norm} if self.max_grad_norm > 0 else {}

    @property
    def current_lr(self) -> float:
        """The learning rate of the last step (after warm-up)."""
        return float(self.opt.param_groups[0]["lr"])

    def save(self, **extra: Any) -> None:
        save_state(self.state_path, self.step, self.params, self.opt, self.ema, self.gen, self.rng, **extra)

    def averaged(self) -> contextlib.AbstractContextManager:
        """The EMA weights in place while the context is open (the trained ones without an EMA)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()


class Reporter:
    """A stage's progress: one metrics line per step (rank 0) and a progress bar showing `shown`."""

    def __init__(
        self, out: Path, cfg: Any, rank: int, start: int, desc: str, shown: tuple[str, ...], total: int = 0
    ) -> None:
        self.log = MetricsLog(out, enabled=rank == 0, tensorboard=cfg.tensorboard)
        self.bar = progress_bar(cfg.progress and rank == 0, total or cfg.steps, start, desc)
        self.shown = shown

    def step(self, step: int, **values: float) -> None:
        self.log.write(step, **values)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{values[k]:.4f}" for k in self.shown if k in values})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
