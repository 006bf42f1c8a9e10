"""A fixed set of generations whose outputs are stored, so refactors can prove they changed nothing.

`python tests/golden.py` (re)writes `fixtures/golden/generations.safetensors` with this host's
outputs; `test_golden.py` regenerates every case and compares. Bit identity is only meaningful on
the build and CPU that wrote the file (other CPUs take other kernels), so the file records that
fingerprint and the test asserts `torch.equal` where it matches and the parity bound elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FIXTURES, checkpoint_dir  # noqa: E402

from stable_audio_3 import StableAudioModel  # noqa: E402

GOLDEN = FIXTURES / "golden"
OUTPUTS = GOLDEN / "generations.safetensors"
LORA = GOLDEN / "lora.safetensors"


def _sine(seconds: float, sr: int) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.stack([0.3 * torch.sin(2 * torch.pi * 220 * t), 0.2 * torch.sin(2 * torch.pi * 330 * t)])


def source_file(tmp: Path, sr: int) -> Path:
    """A WAV source (the path form of an audio input)."""
    path = tmp / "source.wav"
    sf.write(str(path), _sine(1.5, sr).numpy().T.astype(np.float32), sr)
    return path


def cases(tmp: Path) -> dict[str, tuple[str, dict]]:
    """name -> (config, generate() arguments)."""
    sr_a = 6000
    common = {"steps": 4, "progress": False}
    return {
        "t2a": ("A", {"prompt": "warm analog pad", "duration": 1.0, "seed": 3, **common}),
        "t2a_guided_euler": (
            "B",
            {
                "prompt": "drums",
                "negative_prompt": "noise",
                "cfg_scale": 3.0,
                "duration": 1.0,
                "seed": 5,
                **common,
            },
        ),
        "a2a": (
            "A",
            {
                "prompt": "lofi",
                "duration": 1.5,
                "seed": 0,
                "init_audio": (_sine(1.5, sr_a), sr_a),
                "init_noise_level": 0.5,
                **common,
            },
        ),
        "inpaint_two_regions": (
            "A",
            {
                "prompt": "lofi",
                "duration": 1.5,
                "seed": 1,
                "inpaint_audio": str(source_file(tmp, sr_a)),
                "inpaint_mask_start_seconds": [0.25, 0.9],
                "inpaint_mask_end_seconds": [0.6, 1.3],
                **common,
            },
        ),
        "batch_per_item": (
            "A",
            {
                "prompt": ["glitchy drums", "pad"],
                "negative_prompt": ["noise", ""],
                "duration": [1.5, 1.0],
                "cfg_scale": 2.0,
                "apg_scale": 0.5,
                "seed": 11,
                **common,
            },
        ),
        "lora": ("A", {"prompt": "tone", "duration": 1.0, "seed": 2, "lora_strength": 0.8, **common}),
        "sliding_window_continuation": (
            "E",
            {
                "prompt": "drone",
                "duration": 2.0,
                "seed": 4,
                "inpaint_audio": (_sine(1.0, 3000), 3000),
                "inpaint_mask_start_seconds": 1.0,
                "inpaint_mask_end_seconds": 2.0,
                **common,
            },
        ),
    }


def fingerprint() -> dict[str, str]:
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "torch": torch.__version__,
        "cpu": cpu,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
    }


def run_case(config: str, args: dict, models: dict[str, StableAudioModel]) -> torch.Tensor:
    if config not in models:
        models[config] = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu")
    model = models[config]
    if "lora_strength" in args:
        model.load_lora(LORA)
        try:
            return model.generate(**args)
        finally:
            model.unload_lora()
    return model.generate(**args)


def write() -> None:
    import tempfile
    import warnings

    from safetensors.torch import save_file

    models: dict[str, StableAudioModel] = {}
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (config, args) in cases(Path(tmp)).items():
            outputs[name] = run_case(config, args, models).contiguous()
    save_file(outputs, str(OUTPUTS), metadata={"fingerprint": json.dumps(fingerprint())})
    print(f"wrote {len(outputs)} cases to {OUTPUTS}")


if __name__ == "__main__":
    write()
