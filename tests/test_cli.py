"""`stable-audio`: every mode writes one file per item cut to its duration, with a sidecar record from
which `generate()` reproduces the file bit for bit; bad input is exit 2 and one line, before any model
loads; Ctrl-C is exit 130 with nothing written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, checkpoint_dir

from stable_audio_3 import StableAudioModel

A = str(checkpoint_dir("A"))
SR = 6000
LORA = FIXTURES / "golden" / "lora.safetensors"
_MODELS: dict[str, StableAudioModel] = {}


def _model(path: str = A) -> StableAudioModel:
    if path not in _MODELS:
        _MODELS[path] = StableAudioModel.from_pretrained(path, device="cpu")
    return _MODELS[path]


def _source(tmp: Path, seconds: float = 1.5) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    path = tmp / "source.wav"
    sf.write(str(path), wave.astype(np.float32), SR)
    return path


def _run(*argv: str) -> tuple[int, str, str]:
    """The command in its own process, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "stable_audio_3", *argv], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def _regenerated(sidecar: Path) -> torch.Tensor:
    """The item a sidecar describes, generated again from its record through the Python API."""
    record = json.loads(sidecar.read_text())
    model = _model(record["model"])
    if record["loras"]:
        model.load_lora([entry["path"] for entry in record["loras"]])
        for i, entry in enumerate(record["loras"]):
            model.set_lora_strength(entry["strength"], lora_index=i)
            model.set_lora_interval(*entry["interval"], lora_index=i)
            model.set_lora_layers(entry["include"], entry["exclude"], lora_index=i)
    try:
        audio = model.generate(**record["arguments"], progress=False)
    finally:
        model.unload_lora()
    durations = record["arguments"]["duration"]
    duration = durations[record["item"]] if isinstance(durations, list) else durations
    return audio[record["item"], :, : int(duration * SR)]


def _file(path: Path) -> torch.Tensor:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SR
    return torch.from_numpy(data.T.copy())


@pytest.mark.slow
def test_batch_writes_one_file_per_item_cut_to_its_duration(tmp_path) -> None:
    out = tmp_path / "new" / "folder" / "beat.wav"
    code, stdout, _ = _run(
        "--model",
        A,
        "-p",
        "drums",
        "pad",
        "--duration",
        "1.5",
        "1.0",
        "--negative-prompt",
        "noise",
        "--cfg-scale",
        "2",
        "--steps",
        "3",
        "-o",
        str(out),
    )
    assert code == 0
    paths = [out.with_name("beat_0.wav"), out.with_name("beat_1.wav")]
    assert stdout.split() == [str(p) for p in paths]
    for path, seconds in zip(paths, (1.5, 1.0), strict=True):
        audio = _file(path)
        assert audio.shape == (2, int(seconds * SR))
        record = json.loads(path.with_name(path.name + ".json").read_text())
        assert record["seed"] >= 0 and record["arguments"]["seed"] == record["seed"]
        assert record["record"]["sigmas"] and "sampling" in record["record"]["timings"]
        assert record["versions"]["torch"] == torch.__version__
        assert torch.equal(audio, _regenerated(path.with_name(path.name + ".json")))
    tags = sf.SoundFile(str(paths[0]))
    assert json.loads(tags.comment)["seed"] == record["seed"]


@pytest.mark.parametrize(
    "mode", ["a2a", "inpaint_two_regions", "continuation", "lora", "lora_interval_and_layers"]
)
def test_every_mode_round_trips_through_its_record(mode, tmp_path) -> None:
    source = str(_source(tmp_path))
    extra = {
        "a2a": ["--init-audio", source, "--init-noise-level", "0.5"],
        "inpaint_two_regions": [
            "--inpaint-audio",
            source,
            "--inpaint-start",
            "0.25",
            "0.9",
            "--inpaint-end",
            "0.6",
            "1.3",
        ],
        "continuation": [
            "--inpaint-audio",
            source,
            "--inpaint-start",
            "1.5",
            "--inpaint-end",
            "2.5",
            "--duration",
            "2.5",
        ],
        "lora": ["--lora-ckpt-path", str(LORA), "--lora-strength", "0.7"],
        "lora_interval_and_layers": [
            "--lora-ckpt-path",
            str(LORA),
            str(LORA),
            "--lora-strength",
            "0.7",
            "0.4",
            "--lora-interval",
            "0.3:1",
            "0:1",
            "--lora-include",
            "transformer.layers.0",
            "--lora-exclude",
            "cross_attn",
        ],
    }[mode]
    out = tmp_path / "o.flac"
    argv = ["--model", A, "-p", "lofi", "--steps", "3", "--seed", "5", "-o", str(out), *extra]
    if "--duration" not in extra:
        argv += ["--duration", "1.5"]
    code, _, err = _run(*argv)
    assert code == 0, err
    record = json.loads(out.with_name("o.flac.json").read_text())
    audio = _file(out)
    assert audio.shape[-1] == int(float(argv[argv.index("--duration") + 1]) * SR)
    # FLAC holds 24-bit samples: the regenerated item, written the same way, is the same file.
    again = tmp_path / "again.flac"
    sf.write(str(again), _regenerated(out.with_name("o.flac.json")).numpy().T, SR, subtype="PCM_24")
    assert torch.equal(_file(again), audio)
    if mode == "lora":
        assert record["loras"][0]["strength"] == pytest.approx(0.7)
    if mode == "lora_interval_and_layers":
        first, second = record["loras"]
        assert first["interval"] == [0.3, 1.0] and second["interval"] == [0.0, 1.0]
        assert first["include"] == second["include"] == ["transformer.layers.0"]
        assert first["exclude"] == ["cross_attn"] and second["strength"] == pytest.approx(0.4)


@pytest.mark.slow
def test_existing_files_are_kept_unless_overwrite(tmp_path) -> None:
    out = tmp_path / "x.wav"
    argv = ["--model", A, "-p", "a", "--duration", "0.5", "--steps", "2", "-o", str(out)]
    assert _run(*argv)[0] == 0
    before = out.read_bytes()
    code, _, err = _run(*argv)
    assert code == 2 and "exists" in err and "--overwrite" in err and out.read_bytes() == before
    assert _run(*argv, "--overwrite", "--seed", "9")[0] == 0
    assert out.read_bytes() != before


BAD = {
    "negative duration": (["--duration", "-1"], "--duration"),
    "too many durations": (["-p", "a", "b", "--duration", "1", "2", "3"], "--duration"),
    "batch vs prompts": (["-p", "a", "b", "--batch-size", "3"], "--batch-size"),
    "unknown extension": (["-o", "{tmp}/x.xyz"], ".xyz"),
    "format mismatch": (["-o", "{tmp}/x.wav", "--format", "flac"], "--format"),
    "mp3 rate": (["-o", "{tmp}/x.mp3"], "6000 Hz"),
    "output is a folder": (["-o", "{tmp}/"], "folder"),
    "parent is a file": (["-o", "{tmp}/source.wav/x.wav"], "is a file"),
    "missing init audio": (["--init-audio", "{tmp}/nope.wav"], "--init-audio"),
    "regions without audio": (["--inpaint-start", "1", "--inpaint-end", "2"], "--inpaint-audio"),
    "unpaired regions": (
        ["--inpaint-audio", "{tmp}/source.wav", "--inpaint-start", "1", "2", "--inpaint-end", "2"],
        "--inpaint-start",
    ),
    "missing lora": (["--lora-ckpt-path", "{tmp}/nope.safetensors"], "--lora-ckpt-path"),
    "strengths vs loras": (["--lora-ckpt-path", str(LORA), "--lora-strength", "1", "2"], "--lora-strength"),
    "missing model": (["--model", "{tmp}/no-model"], "no-model"),
    "bad interval": (["--lora-ckpt-path", str(LORA), "--lora-interval", "0.8:0.2"], "--lora-interval"),
    "interval not a range": (["--lora-ckpt-path", str(LORA), "--lora-interval", "half"], "--lora-interval"),
    "intervals vs loras": (
        ["--lora-ckpt-path", str(LORA), "--lora-interval", "0:1", "0:1"],
        "--lora-interval",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2_before_loading(case, tmp_path) -> None:
    _source(tmp_path)
    flags, words = BAD[case]
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    argv = ["--model", A, "-p", "a", "--steps", "2"] + (
        ["-o", str(tmp_path / "out.wav")] if "-o" not in flags else []
    )
    code, stdout, err = _run(*argv, *flags)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert words in lines[-1] and lines[-1].startswith("stable-audio: error:")
    assert not any("loading" in line for line in lines) or case == "missing model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.wav"]


@pytest.mark.slow
def test_bad_values_found_by_the_model_are_one_line_too(tmp_path) -> None:
    code, _, err = _run("--model", A, "-p", "a", "--duration", "9999", "-o", str(tmp_path / "x.wav"))
    assert code == 2 and "duration" in err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from stable_audio_3.apps.cli import build_parser; "
        "text = build_parser().format_help(); print('torch' in sys.modules, '--inpaint-start' in text)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_help_shows_defaults_but_never_a_bare_none() -> None:
    from stable_audio_3.apps.cli import build_parser

    text = " ".join(build_parser().format_help().split())  # unwrapped
    assert "(default: 6.0)" in text and not any(f"(default: {v})" in text for v in ("None", "False", "[]"))
    assert "--duration DURATION [DURATION ...] seconds: one, or one per item (default: 30, at most" in text


@pytest.mark.slow
def test_ctrl_c_exits_130_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "long.wav"
    cmd = [
        sys.executable,
        "-m",
        "stable_audio_3",
        "--model",
        A,
        "-p",
        "a",
        "--duration",
        "300",  # long enough that sampling is still running when the signal arrives
        "--steps",
        "1000",
        "-o",
        str(out),
    ]
    # A shell's background job inherits SIGINT ignored, and Python then installs no handler:
    # restore the default so the child sees Ctrl-C as a user's terminal delivers it.
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until sampling has started
        if "step 1/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in rest and "Traceback" not in rest
    assert list(tmp_path.iterdir()) == []
