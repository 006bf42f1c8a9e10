"""A CPU stand-in for CUDA-graph capture, to test graph-captured code without a GPU.

`capture_emulated(fn)` runs `fn` once while recording every ATen operator with the very tensors it
read and wrote, and returns `(replay, output)`. `replay()` re-executes the recorded operators on the
same tensors, writing each result into the tensor recorded for it, and runs no Python of `fn`: like a
CUDA graph, it sees new data only where it was copied into a captured tensor, and any decision `fn`
made in Python is frozen. Operators that read device memory on the host (`.item()`, `bool(tensor)`)
or draw random numbers raise at capture, as they would break (or silently freeze) a CUDA capture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

HOST_READS = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
}


class NotCapturable(RuntimeError):
    """`fn` did something a CUDA graph cannot capture."""


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS:
            raise NotCapturable(f"{func} reads device memory on the host")
        if torch.Tag.nondeterministic_seeded in func.tags and _dropout(func, args, kwargs) != 0.0:
            raise NotCapturable(f"{func} draws random numbers")
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out, _fresh_outputs(out, args, kwargs)))
        return out


def _dropout(func, args: tuple, kwargs: dict) -> float | None:
    """The `dropout_p` argument of an attention operator (random only when non-zero), else None."""
    for i, arg in enumerate(func._schema.arguments):
        if arg.name == "dropout_p":
            return float(kwargs.get("dropout_p", args[i] if i < len(args) else arg.default_value))
    return None


def _storages(value, found: set[int]) -> set[int]:
    if isinstance(value, torch.Tensor):
        found.add(value.untyped_storage().data_ptr())
    elif isinstance(value, (tuple, list)):
        for v in value:
            _storages(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _storages(v, found)
    return found


def _fresh_outputs(out, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The outputs that got memory of their own. The others are views of inputs or inputs updated in
    place (decided from the actual storage: `contiguous` and friends alias only sometimes), which a
    replay of the operator updates by itself."""
    inputs = _storages(kwargs, _storages(args, set()))
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in inputs]


def capture_emulated(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Record `fn` (after one eager warm-up run, as CUDA capture does) and return (replay, output)."""
    fn()
    recorder = _Recorder()
    with recorder:
        out = fn()
    ops = recorder.ops

    def replay() -> None:
        for func, args, kwargs, recorded, fresh in ops:
            result = func(*args, **kwargs)
            if not fresh:
                continue
            results = result if isinstance(result, (tuple, list)) else [result]
            outs = recorded if isinstance(recorded, (tuple, list)) else [recorded]
            for r, f in zip(outs, results, strict=True):
                if any(r is t for t in fresh):
                    r.copy_(f)

    return replay, out
