"""A checkpoint folder's recommended guidance (`generation_config.json`): checked when read, used by
`generate()` and the CLI wherever the caller leaves guidance out, shipped by `export`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given
from hypothesis import strategies as st

from stable_audio_3 import StableAudioModel
from stable_audio_3.errors import CheckpointError
from stable_audio_3.generation_config import (
    FILENAME,
    fill_defaults,
    folder_generation_config,
    load_generation_config,
    parse_generation_config,
)
from stable_audio_3.training import ExportConfig, export_checkpoint

RECOMMENDED = {"cfg_scale": 2.5, "cfg_interval": [0.5, 1.0], "apg_scale": 0.5}
ARGS = {"prompt": "lofi", "duration": 1.0, "steps": 3, "seed": 3, "progress": False}


def _folder_with(tmp_path: Path, content: str) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir("A"), folder)
    (folder / FILENAME).write_text(content)
    return folder


@pytest.fixture(scope="module")
def recommended_model(tmp_path_factory: pytest.TempPathFactory) -> StableAudioModel:
    folder = _folder_with(tmp_path_factory.mktemp("rec"), json.dumps(RECOMMENDED))
    return StableAudioModel.from_pretrained(folder, device="cpu")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "JSON object"),
        ({"steps": 8}, "unknown key"),
        ({"cfg_scale": -1}, "cfg_scale"),
        ({"cfg_scale": "3"}, "cfg_scale"),
        ({"cfg_scale": True}, "cfg_scale"),
        ({"cfg_scale": float("nan")}, "cfg_scale"),
        ({"cfg_interval": [0.6, 0.5]}, "cfg_interval"),
        ({"cfg_interval": [0.0, 2.0]}, "cfg_interval"),
        ({"cfg_interval": [0.5]}, "cfg_interval"),
        ({"cfg_interval": "0.5 1"}, "cfg_interval"),
        ({"apg_scale": 1.5}, "apg_scale"),
        ({"apg_scale": -0.1}, "apg_scale"),
        ({"apg_scale": None}, "apg_scale"),
    ],
)
def test_bad_recommendations_name_the_file_and_the_key(data: object, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as info:
        parse_generation_config(data, "/x/generation_config.json")
    assert "/x/generation_config.json" in str(info.value)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 20), st.floats(0, 1))
def test_valid_recommendations_read_back_as_floats(a: float, b: float, scale: float, apg: float) -> None:
    lo, hi = sorted((a, b))
    got = parse_generation_config({"cfg_scale": scale, "cfg_interval": [lo, hi], "apg_scale": apg}, "f")
    assert got == {"cfg_scale": scale, "cfg_interval": (lo, hi), "apg_scale": apg}
    filled = fill_defaults({"cfg_scale": None, "cfg_interval": (0.1, 0.2), "apg_scale": None}, got)
    assert filled == {"cfg_scale": scale, "cfg_interval": (0.1, 0.2), "apg_scale": apg}  # given stays
    official = fill_defaults({"cfg_scale": None, "cfg_interval": None, "apg_scale": None}, {})
    assert official == {"cfg_scale": 1.0, "cfg_interval": (0.0, 1.0), "apg_scale": 1.0}


def test_unreadable_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match=str(path)):
        load_generation_config(path)
    assert folder_generation_config(tmp_path / "none") == {}


def test_official_folders_keep_the_official_defaults() -> None:
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    assert model.generation_defaults == {}
    model.generate(**ARGS)
    assert (model.last_record.cfg_scale, model.last_record.cfg_interval) == (1.0, [0.0, 1.0])
    assert model.last_record.apg_scale == 1.0


def test_generate_uses_the_folder_recommendation_unless_told(recommended_model: StableAudioModel) -> None:
    m = recommended_model
    default = m.generate(**ARGS)
    record = m.last_record
    assert (record.cfg_scale, record.cfg_interval, record.apg_scale) == (2.5, [0.5, 1.0], 0.5)
    assert torch.equal(default, m.generate(**ARGS, cfg_scale=2.5, cfg_interval=(0.5, 1.0), apg_scale=0.5))
    unguided = m.generate(**ARGS, cfg_scale=1.0)
    assert (m.last_record.cfg_scale, m.last_record.cfg_interval) == (1.0, [0.5, 1.0])
    assert not torch.equal(default, unguided)  # the recommendation changes the audio
    pure_apg = m.generate(**ARGS, apg_scale=1.0)
    assert (m.last_record.cfg_scale, m.last_record.apg_scale) == (2.5, 1.0)
    assert not torch.equal(default, pure_apg)  # and so does its apg_scale
    m.check_arguments(**ARGS)  # a server's acceptance check resolves the same way
    with pytest.raises(ValueError, match="cfg_interval"):
        m.check_arguments(**ARGS, cfg_interval=(0.9, 0.1))


def test_a_bad_file_stops_loading_with_its_path(tmp_path: Path) -> None:
    folder = _folder_with(tmp_path, '{"cfg_scale": -2}')
    with pytest.raises(CheckpointError, match="cfg_scale") as info:
        StableAudioModel.from_pretrained(folder, device="cpu")
    assert str(folder / FILENAME) in str(info.value)


def test_export_ships_a_checked_recommendation(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RECOMMENDED))
    source = str(checkpoint_dir("A"))
    config = ExportConfig(model=source, output=str(tmp_path / "out"), generation_config=str(good))
    out = export_checkpoint(config)
    assert json.loads((out / FILENAME).read_text()) == RECOMMENDED
    bad = tmp_path / "bad.json"
    bad.write_text('{"cfg_interval": [1, 0]}')
    with pytest.raises(CheckpointError, match="cfg_interval"):
        ExportConfig(model=source, output=str(tmp_path / "never"), generation_config=str(bad))
    assert not (tmp_path / "never").exists()


def test_cli_leaves_guidance_to_the_model_unless_given() -> None:
    from stable_audio_3.apps.cli import build_parser, check_generation

    parser = build_parser()
    _, left = check_generation(parser.parse_args(["-p", "x", "--duration", "1"]))
    assert left["cfg_scale"] is None and left["cfg_interval"] is None and left["apg_scale"] is None
    argv = ["-p", "x", "--duration", "1", "--cfg-scale", "3", "--cfg-interval", "0.5", "1"]
    argv += ["--apg-scale", "0"]
    _, given_args = check_generation(parser.parse_args(argv))
    assert given_args["cfg_scale"] == 3.0 and given_args["cfg_interval"] == (0.5, 1.0)
    assert given_args["apg_scale"] == 0.0


def test_the_ui_starts_its_cfg_controls_at_the_recommendation(recommended_model: StableAudioModel) -> None:
    from stable_audio_3.apps.ui_controls import _guidance_defaults

    note, scale, interval, apg = _guidance_defaults(recommended_model)
    assert (scale, interval, apg) == (2.5, (0.5, 1.0), 0.5) and "no effect" not in note
    official = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    assert _guidance_defaults(official)[1:] == (1.0, (0.0, 1.0), 1.0)
