"""The CLI's half of the bad-input table: every failure is one error line, exit 2 for bad input and
1 for runtime failures, never a traceback, never a file left behind. Run in-process for speed (the
subprocess behaviour, including Ctrl-C, is in test_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bad_input_files import make_bad_files
from conftest import checkpoint_dir

from stable_audio_3 import StableAudioModel
from stable_audio_3.apps import cli, train_cli

A = str(checkpoint_dir("A"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bad_files(tmp_path_factory.mktemp("bad_cli"))


CASES = [
    (["--steps", "100000"], 2, "--steps must be in \\[1, 1000\\]"),
    (["--steps", "abc"], 2, "argument --steps: invalid int value"),
    (["--format", "xyz"], 2, "argument --format: invalid choice"),
    (["--duration", "nan"], 2, "--duration must be > 0"),
    (["--duration", "0.0000001"], 2, "shorter than one sample"),
    (["--cfg-scale", "nan"], 2, "cfg_scale must be finite"),
    (["--seed", "-5"], 2, "seed must be -1"),
    (["--init-audio", "{f}/noise_bytes.wav"], 2, "init_audio: cannot read"),
    (["--init-audio", "{f}/empty.wav"], 2, "the file is empty"),
    (["--init-audio", "{f}/missing.wav"], 2, "--init-audio: no such file"),
    (
        ["--inpaint-audio", "{f}/good.wav", "--inpaint-start", "0.3", "--inpaint-end", "0.1"],
        2,
        "must be before end",
    ),
    (["--lora-ckpt-path", "{f}/random.safetensors"], 2, "not a readable safetensors"),
    (["--lora-ckpt-path", "{f}/exploit.ckpt"], 2, "objects other than tensors"),
    (["--lora-ckpt-path", "{f}/nan.safetensors"], 2, "NaN or infinite"),
    (["--model", "{f}/zero_weights"], 2, "not a readable safetensors"),
    (["--model", "{f}/bad_json"], 2, "is not valid JSON"),
    (["--model", "{f}/no_text_encoder"], 2, "text encoder not found"),
    (["--model", "/nonexistent/ckpt"], 2, "no checkpoint directory"),
    (["--device", "tpu"], 2, "device 'tpu'"),
    (["--model", "{f}/nan_weights"], 1, "NaN or infinite values"),
]


@pytest.mark.parametrize(("flags", "code", "message"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_each_failure_is_one_line(files, tmp_path, capsys, flags, code, message) -> None:
    out = tmp_path / "out"
    out.mkdir()
    base = ["--model", A, "--device", "cpu", "--prompt", "x", "--steps", "2", "--duration", "0.5"]
    argv = base + ["-o", str(out / "a.wav")] + [f.format(f=files) for f in flags]
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:  # argparse exits itself after printing its one line
        rc = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == code, err
    assert len(errors) == 1 and errors[0].startswith("stable-audio: error: "), err
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_an_unexpected_failure_is_exit_1_with_its_type(tmp_path, capsys, monkeypatch) -> None:
    def broken(self, **kwargs):
        raise KeyError("internal")

    monkeypatch.setattr(StableAudioModel, "generate", broken)
    rc = cli.main(["--model", A, "--device", "cpu", "--prompt", "x", "-o", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert rc == 1 and "stable-audio: error: KeyError: 'internal'" in err and "Traceback" not in err
    assert not (tmp_path / "a.wav").exists()


def test_debug_mode_shows_the_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STABLE_AUDIO_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(["--model", "/nonexistent/ckpt", "--prompt", "x", "-o", str(tmp_path / "a.wav")])


def test_training_cli_reports_bad_data_in_one_line(tmp_path, capsys) -> None:
    rc = train_cli.main(["--model", A, "--data", str(tmp_path / "none"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "training data not found" in err
