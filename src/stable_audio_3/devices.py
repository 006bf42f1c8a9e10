"""Device and precision selection."""

from __future__ import annotations

import warnings

import torch

from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError, OutOfMemoryError

__all__ = ["resolve_device", "resolve_dtype", "as_out_of_memory"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None picks CUDA, then MPS, then CPU; an explicit device must be available."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise ArgumentTypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ArgumentValueError(f"device {device!r} is not a valid torch device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ArgumentValueError(f"device {device!r} requested but MPS is not available")
    return dev


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(
    device: torch.device, model_half: bool | None, dtype: torch.dtype | str | None = None
) -> torch.dtype:
    """float16 on CUDA unless `model_half=False`; float32 on CPU and MPS (as the reference).
    An explicit `dtype` (float32, float16 or bfloat16) overrides both."""
    if model_half is not None and not isinstance(model_half, bool):
        raise ArgumentTypeError(f"model_half must be True, False or None, got {model_half!r}")
    if dtype is not None:
        if model_half is not None:
            raise ArgumentValueError("give either model_half or dtype, not both")
        resolved = _DTYPES.get(dtype) if isinstance(dtype, str) else dtype
        if resolved not in _DTYPES.values():
            raise ArgumentValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        return resolved
    if model_half is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if model_half and device.type != "cuda":
        warnings.warn(
            f"model_half=True is only used on CUDA; running in float32 on {device.type}", stacklevel=3
        )
        return torch.float32
    return torch.float16 if model_half else torch.float32


def as_out_of_memory(err: BaseException, what: str) -> OutOfMemoryError | None:
    """A device allocation failure as one error that says what asked for the memory (`what`)."""
    text = str(err)
    markers = ("out of memory", "can't allocate memory", "DefaultCPUAllocator")
    if not isinstance(err, (torch.OutOfMemoryError, MemoryError)) and not any(m in text for m in markers):
        return None
    return OutOfMemoryError(
        f"out of memory generating {what}: lower batch_size or duration, use chunked_decode=True, or a "
        "smaller dtype"
    )
