"""Refactors change nothing: a fixed set of generations (t2a, guided euler, a2a, inpainting, batch,
LoRA, sliding-window continuation) equals the stored outputs bit for bit on the build and CPU that
stored them (see `golden.py`), and within the parity bound on any other."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import END_TO_END_TOL
from golden import OUTPUTS, cases, fingerprint, run_case
from safetensors import safe_open

from stable_audio_3 import StableAudioModel

_MODELS: dict[str, StableAudioModel] = {}


def _stored() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(OUTPUTS), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        return tensors, json.loads(f.metadata()["fingerprint"])


@pytest.mark.parametrize("name", sorted(cases(OUTPUTS.parent)))
def test_generation_is_unchanged(name: str, tmp_path) -> None:
    stored, where = _stored()
    config, args = cases(tmp_path)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio = run_case(config, args, _MODELS)
    want = stored[name]
    assert audio.shape == want.shape and audio.dtype == want.dtype
    if where == fingerprint():
        assert torch.equal(audio, want), f"{name}: max |Δ| {(audio - want).abs().max().item():.3e}"
    else:  # another CPU or build: other kernels, same maths, the parity tests' bound for the config
        assert (audio - want).abs().max().item() <= END_TO_END_TOL[config]
