"""`stable-audio batch`: JSONL and CSV files, one record per item, resuming, merged calls whose
items equal their batch-1 generations, and bad lines named before any model loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import checkpoint_dir

from stable_audio_3 import StableAudioModel
from stable_audio_3.apps.entry import main

MODEL = str(checkpoint_dir("A"))
FAST = {"steps": 3, "duration_padding": 0.2}
ATOL = 2e-4  # batched vs batch-1 matmuls (tests/test_item_seeds.py)


def _write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def _run(jobs: Path, out: Path, *flags: str) -> int:
    return main(["batch", str(jobs), "--output-dir", str(out), "--model", MODEL, *flags])


def test_items_are_written_with_records_and_match_batch_one_calls(tmp_path: Path) -> None:
    jobs = _write_jsonl(
        tmp_path / "jobs.jsonl",
        [
            {"prompt": "rain", "duration": 0.5, "seed": 1, **FAST},
            {"prompt": ["wind", "fire"], "duration": 0.4, "seed": 10, "name": "pair", **FAST},
            {"prompt": "x", "duration": 0.5, "seed": 3, "steps": 2, "duration_padding": 0.2},
        ],
    )
    assert _run(jobs, tmp_path / "out", "--max-batch", "4") == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items"], summary["written"], summary["failed"]) == (4, 4, 0)
    model = StableAudioModel.from_pretrained(MODEL, device="cpu")
    for name, prompt, duration, seed, steps in [
        ("line00001", "rain", 0.5, 1, 3), ("pair_0", "wind", 0.4, 10, 3), ("pair_1", "fire", 0.4, 11, 3),
        ("line00003", "x", 0.5, 3, 2),
    ]:  # fmt: skip
        audio, rate = sf.read(out / f"{name}.wav", dtype="float32", always_2d=True)
        record = json.loads((out / f"{name}.wav.json").read_text())
        assert record["seed"] == seed and record["arguments"]["prompt"] == prompt
        alone = model.generate(
            prompt, duration=duration, seed=seed, steps=steps, duration_padding_sec=0.2, progress=False
        )[0].numpy()
        assert audio.T.shape == alone.shape and rate == model.sample_rate
        np.testing.assert_allclose(audio.T, alone, atol=ATOL, rtol=0)
    # the three 3-step items shared one call
    assert json.loads((out / "pair_1.wav.json").read_text())["record"]["extra"]["batch_items"] == 3


def test_a_rerun_skips_finished_items_and_refuses_a_changed_line(tmp_path: Path, capsys) -> None:
    lines = [{"prompt": "a", "duration": 0.3, "seed": 1, **FAST}, {"prompt": "b", "duration": 0.3, **FAST}]
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", lines)
    assert _run(jobs, tmp_path / "out") == 0
    first = (tmp_path / "out" / "line00001.wav").read_bytes()
    (tmp_path / "out" / "line00002.wav.json").unlink()  # as if the run died before this item finished
    assert _run(jobs, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["skipped"]) == (1, 1)
    assert (tmp_path / "out" / "line00001.wav").read_bytes() == first
    capsys.readouterr()
    _write_jsonl(jobs, [{**lines[0], "prompt": "changed"}, lines[1]])
    assert _run(jobs, tmp_path / "out") == 2
    assert "exists from another request" in capsys.readouterr().err
    assert _run(jobs, tmp_path / "out", "--overwrite") == 0


def test_csv_files_with_several_values_per_cell(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "name,prompt,duration,seed,steps,duration_padding\ndrums,kick|snare,0.3,5,3,0.2\nsolo,pad,0.4,,3,0.2\n"
    )
    assert _run(jobs, tmp_path / "out", "--format", "flac") == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("*.flac"))
    assert names == ["drums_0.flac", "drums_1.flac", "solo.flac"]
    assert json.loads((tmp_path / "out" / "drums_1.flac.json").read_text())["seed"] == 6


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"duration": 1.0}, "line 1: the following arguments are required: -p/--prompt"),
        ({"prompt": "a", "steps": "many"}, "line 1: argument --steps: invalid int value"),
        ({"prompt": "a", "model": "medium"}, "unknown field 'model' (set it for the whole run"),
        ({"prompt": "a", "colour": "red"}, "unknown field 'colour'"),
        ({"prompt": "a", "name": "../escape"}, "must be a plain file name"),
        ({"prompt": "a", "inpaint_start": 1.0, "inpaint_end": 2.0}, "need --inpaint-audio"),
        ({"prompt": "a", "init_audio": "/no/such.wav"}, "--init-audio: no such file"),
    ],
)
def test_bad_lines_are_one_line_errors_naming_the_line(tmp_path: Path, capsys, line, message) -> None:
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [line])
    assert _run(jobs, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_duplicate_names_and_bad_json_are_refused(tmp_path: Path, capsys) -> None:
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a", "name": "x"}, {"prompt": "b", "name": "x"}])
    assert _run(jobs, tmp_path / "out") == 2
    assert "also used on line 1" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    assert _run(tmp_path / "bad.jsonl", tmp_path / "out") == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err


def test_outputs_to_a_filesystem_uri(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a", "duration": 0.3, "seed": 2, **FAST}])
    assert main(["batch", str(jobs), "--output-dir", "memory://batch-test", "--model", MODEL]) == 0
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/batch-test", detail=False)) == [
        "line00001.wav", "line00001.wav.json", "summary.json",
    ]  # fmt: skip
    assert main(["batch", str(jobs), "--output-dir", "memory://batch-test", "--model", MODEL]) == 0
    assert json.loads(fs.cat_file("/batch-test/summary.json"))["skipped"] == 1


def _failing_first_calls(monkeypatch, failures: int) -> list[int]:
    """generate() raises a device error on its first `failures` calls; returns the batch sizes asked."""
    real, calls = StableAudioModel.generate, []

    def flaky(self, *args, **kwargs):
        calls.append(len(kwargs["prompt"]) if isinstance(kwargs["prompt"], list) else 1)
        if len(calls) <= failures:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StableAudioModel, "generate", flaky)
    return calls


def test_a_failed_call_is_retried_item_by_item_and_reported(tmp_path: Path, monkeypatch) -> None:
    lines = [{"prompt": p, "duration": 0.3, "seed": s, **FAST} for p, s in (("a", 1), ("b", 2))]
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", lines)
    calls = _failing_first_calls(monkeypatch, 1)
    assert _run(jobs, tmp_path / "out", "--max-batch", "2") == 0
    assert calls == [2, 1, 1]  # the merged call failed; each item then ran alone
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["failed"]) == (2, 0)
    assert [o["attempts"] for o in summary["outputs"]] == [2, 2]


def test_items_that_keep_failing_are_reported_and_a_rerun_resumes(tmp_path: Path, monkeypatch, capsys):
    lines = [{"prompt": p, "duration": 0.3, "seed": s, **FAST} for p, s in (("a", 1), ("b", 2))]
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", lines)
    _failing_first_calls(monkeypatch, 3)
    assert _run(jobs, tmp_path / "out", "--max-batch", "1", "--retries", "1") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["failed"]) == (1, 1)
    failure = summary["failures"][0]  # item 1 failed twice; item 2 failed once, then passed
    assert failure["name"] == "line00001" and failure["attempts"] == 2
    assert "illegal memory access" in failure["error"]
    assert summary["outputs"][0]["attempts"] == 2
    assert "failed: line00001 (line 1)" in capsys.readouterr().err
    assert _run(jobs, tmp_path / "out") == 0  # generate() works again: only the failed item runs
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["written"], summary["skipped"], summary["failed"]) == (1, 1, 0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "2"], "--workers and --gpus-per-worker need --ray"),
        (["--ray", "--workers", "0"], "--workers must be >= 1"),
        (["--retries", "-1"], "--retries must be >= 0"),
    ],
)
def test_bad_run_flags_are_one_line_errors(tmp_path: Path, capsys, flags, message) -> None:
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a"}])
    assert _run(jobs, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_ray_mode_without_ray_says_how_to_install_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "a", "duration": 0.3, **FAST}])
    assert _run(jobs, tmp_path / "out", "--ray") == 2
    assert "pip install 'stable-audio-3[ray]'" in capsys.readouterr().err


def test_a_line_without_duration_gets_30_s_or_the_models_maximum(tmp_path: Path) -> None:
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [{"prompt": "rain", "seed": 1, "steps": 2}])
    out = tmp_path / "out"
    assert main(["batch", str(jobs), "--output-dir", str(out), "--model", "demo"]) == 0
    longest = StableAudioModel.from_pretrained("demo", device="cpu").max_duration
    record = json.loads((out / "line00001.wav.json").read_text())
    assert record["arguments"]["duration"] == longest < 30
    assert sf.info(str(out / "line00001.wav")).frames == int(longest * 16000)
