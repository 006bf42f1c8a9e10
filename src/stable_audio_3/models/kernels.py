"""CPU matrix-multiply dispatch for inference.

PyTorch runs float32 `F.linear` on CPU through MKL, which on AMD processors takes its AVX2 code path.
oneDNN (also shipped inside every x86 PyTorch build) uses the AVX-512 units it finds, which is faster
for the DiT's shapes on the CPUs measured (figures per host in benchmarks/README.md).
Both compute in IEEE float32; only the order of the additions differs.

The oneDNN entry point (`torch.ops.mkldnn._linear_pointwise`) is an internal operator of PyTorch's CPU
inductor backend, so it is probed once (present, and equal to `F.linear` on a small product) and every
call falls back to `F.linear` when it is unavailable, would need autograd, or is being traced by
`torch.compile` (whose CPU backend chooses its own matmul kernels).
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

__all__ = ["onednn_linear_available", "linear"]


@cache
def onednn_linear_available() -> bool:
    """Whether this PyTorch build can run float32 linear layers through oneDNN (checked numerically)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 48, generator=gen)
        w = torch.randn(40, 48, generator=gen)
        b = torch.randn(40, generator=gen)
        with torch.inference_mode():
            got = op(x, w, b, "none", [], "")
            want = F.linear(x, w, b)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5))
    except (RuntimeError, TypeError):
        return False


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool = True
) -> torch.Tensor:
    """`F.linear`, through oneDNN for float32 CPU inference when available (same result up to float32
    rounding); training, other devices and other dtypes take `F.linear` unchanged."""
    if (
        onednn
        and not torch.compiler.is_compiling()  # compiled graphs keep F.linear: the compiler picks kernels
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 2
        and weight.dim() == 2
        and x.shape[-1] == weight.shape[1] > 0
        and x.numel() > 0
        and not (torch.is_grad_enabled() and _needs_grad(x, weight, bias))
        and onednn_linear_available()
    ):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), bias, "none", [], "")
    return F.linear(x, weight, bias)
