"""CUDA-graph capture of the sampling step: one graph launch per step instead of hundreds of kernels.

At short durations a GPU spends most of a DiT step launching kernels (a forward is ~40 per block), not
running them. The step's velocity model (`guidance.Denoiser`, one branch: plain or guided) is captured
once per shape into a graph that reads static buffers; every step copies x and t in and replays it.
Graphs are kept across generations: a later generation of the same shape copies its conditioning into
the captured buffers instead of capturing again.

Capture needs a step that never reads device memory on the host (no `.item()`, no `bool(tensor)`):
`Denoiser` called with `guided=` and `valid_lengths` is written that way. The tests capture on CPU
with an emulator that replays the recorded operators and rejects such reads (`tests/graph_emulator.py`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from stable_audio_3.pipeline.guidance import Denoiser

__all__ = ["Capture", "capture_cuda_graph", "StepGraphs"]

# capture(fn) runs fn under capture and returns (replay, static output of fn).
Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]


def capture_cuda_graph(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Capture `fn` in a `torch.cuda.CUDAGraph` after two warm-up runs on a side stream (library
    handles, kernel selection and the allocator settle there, as PyTorch's documentation asks)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


@dataclass
class _Graph:
    denoiser: Denoiser  # owns the conditioning buffers the graph reads
    x: torch.Tensor  # static inputs
    t: torch.Tensor
    out: torch.Tensor  # static output, overwritten by every replay
    replay: Callable[[], None]
    loaded: weakref.ref  # the denoiser whose conditioning the buffers hold now


class StepGraphs:
    """Captured denoiser steps of one model, least recently used dropped past `max_graphs`.

    Everything that shapes a graph is in its key: branch, guidance settings (guided branch), valid
    lengths, the shapes and dtypes of x, t and every conditioning buffer (the padding mask included).
    The model clears the cache whenever its weights change identity (LoRA load/unload/merge, compile).
    """

    def __init__(self, capture: Capture = capture_cuda_graph, max_graphs: int = 4) -> None:
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self._capture = capture
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self.captures = 0  # graphs captured so far (a reused graph does not count)

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        self._graphs.clear()

    def step(self, denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, guided: bool) -> torch.Tensor:
        """`denoiser(x, t, guided=guided)`, by replaying a captured graph (captured on first use)."""
        x, t = denoiser.inputs(x, t)
        length = x.shape[-1]
        state = denoiser.state(guided, length)  # prepares the branch eagerly, outside any capture
        key = (
            guided,
            denoiser.guidance if guided else None,
            denoiser.valid_lengths,
            _layout(x),
            _layout(t),
            tuple(_layout(s) for s in state),
        )
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._new_graph(denoiser, x, t, guided)
            self._graphs[key] = graph
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            if graph.loaded() is not denoiser:
                for dst, src in zip(graph.denoiser.state(guided, length), state, strict=True):
                    dst.copy_(src)
                graph.loaded = weakref.ref(denoiser)
        graph.x.copy_(x)
        graph.t.copy_(t)
        graph.replay()
        return graph.out.clone()

    def _new_graph(self, denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, guided: bool) -> _Graph:
        static_x, static_t = x.clone(), t.clone()
        replay, out = self._capture(lambda: denoiser(static_x, static_t, guided=guided))
        self.captures += 1
        return _Graph(denoiser, static_x, static_t, out, replay, weakref.ref(denoiser))


def _layout(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device
