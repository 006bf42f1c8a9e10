"""The demo model that ships inside the package: it loads by name with no network and no token,
is small, makes sound that is neither silence nor clipping, and is what the CLI uses by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf
import torch

from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE, AutoencoderModel, StableAudioModel
from stable_audio_3.generation_config import load_generation_config
from stable_audio_3.official.hub import demo_model_dir

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "", "HF_HOME": "/nonexistent-hf-home"}


def test_the_demo_model_is_small_package_data() -> None:
    folder = demo_model_dir()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    config = json.loads((folder / "model_config.json").read_text())
    assert config["sample_rate"] == 16000
    assert config["model"]["diffusion"]["diffusion_objective"] == "rf_denoiser"
    assert {"model.safetensors", "model_config.json"} <= {p.name for p in files}


def test_it_loads_by_name_and_follows_a_prompt_into_audible_sound() -> None:
    model = StableAudioModel.from_pretrained(DEMO_MODEL, device="cpu")
    assert model.sample_rate == 16000
    # it ships the guidance it was evaluated with (configs/demo/generation_config.json)
    recipe = Path(__file__).resolve().parents[1] / "configs" / "demo" / "generation_config.json"
    assert model.generation_defaults == load_generation_config(recipe)
    audio = model.generate("drum kit, rock beat, 120 BPM", duration=3.0, seed=0, progress=False)
    assert model.last_record.cfg_scale == model.generation_defaults["cfg_scale"]
    assert audio.shape == (1, 2, 48000) and torch.isfinite(audio).all()
    rms = audio.pow(2).mean().sqrt()
    assert 0.01 < rms < 0.9 and audio.abs().max() <= 1.0
    assert AutoencoderModel.from_pretrained(DEMO_MODEL, device="cpu").sample_rate == 16000


def test_the_cli_uses_it_by_default_offline_with_a_one_line_notice(tmp_path: Path) -> None:
    out = tmp_path / "piano.wav"
    done = subprocess.run(
        [sys.executable, "-m", "stable_audio_3", "--prompt", "acoustic grand piano, C4 note",
         "--duration", "2", "--seed", "1", "--output", str(out)],
        capture_output=True, text=True, env=OFFLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(DEMO_NOTICE) == 1
    wave, rate = sf.read(str(out))
    assert rate == 16000 and wave.shape == (32000, 2)


def test_without_duration_the_cli_makes_the_models_longest_clip_up_to_30_s(tmp_path: Path) -> None:
    out = tmp_path / "drums.wav"
    done = subprocess.run(
        [sys.executable, "-m", "stable_audio_3", "-p", "drum kit, rock beat, 100 BPM", "--steps", "2",
         "--output", str(out)],
        capture_output=True, text=True, env=OFFLINE, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model_max = json.loads(out.with_name("drums.wav.json").read_text())["arguments"]["duration"]
    assert model_max == StableAudioModel.from_pretrained(DEMO_MODEL, device="cpu").max_duration < 30
    assert sf.info(str(out)).frames == int(model_max * 16000)
