"""The bad-input table: every case is a call a new user could make, with the outcome it must have.

Each failing call must raise an error of ours (`StableAudioError`, a ValueError/TypeError where the
input is at fault) whose message names the argument (and the file); afterwards the model must
generate the same audio bit for bit, so nothing was half-applied. Accepted edge cases must return
finite audio of the documented shape. Linked from the README ("Reliability").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bad_input_files import GOOD_LORA, SR, make_bad_files
from conftest import checkpoint_dir
from test_lora import make_lora_file

from stable_audio_3 import (
    MAX_STEPS,
    ArgumentTypeError,
    ArgumentValueError,
    AudioInputError,
    AutoencoderModel,
    CheckpointError,
    ConfigError,
    LoRAFileError,
    MissingFileError,
    NonFiniteOutputError,
    StableAudioError,
    StableAudioModel,
    read_audio,
    write_audio,
)

BASE = {"prompt": "rain on a tin roof", "duration": 0.5, "steps": 2, "seed": 3, "progress": False}
OK = None  # the call must succeed with finite output


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[StableAudioModel, Path], Any]
    error: type[BaseException] | None
    match: str = ""


def gen(**kwargs: Any) -> Callable[[StableAudioModel, Path], Any]:
    """A generate() call with BASE overridden; values that are callables get the files folder."""

    def call(model: StableAudioModel, files: Path) -> Any:
        args = {
            k: v(files) if callable(v) and k not in ("callback", "cancel") else v for k, v in kwargs.items()
        }
        return model.generate(**(BASE | args))

    return call


def load(folder: str, **kwargs: Any) -> Callable[[StableAudioModel, Path], Any]:
    return lambda model, files: StableAudioModel.from_pretrained(
        files / folder, **({"device": "cpu"} | kwargs)
    )


def load_ae(folder: str) -> Callable[[StableAudioModel, Path], Any]:
    return lambda model, files: AutoencoderModel.from_pretrained(files / folder, device="cpu")


def lora(*names: str, **kwargs: Any) -> Callable[[StableAudioModel, Path], Any]:
    def call(model: StableAudioModel, files: Path) -> Any:
        paths = [GOOD_LORA if n == "good" else files / n for n in names]
        return model.load_lora(paths, **{k: files / v for k, v in kwargs.items()})

    return call


def wav(name: str) -> Callable[[Path], str]:
    return lambda files: str(files / name)


def region(**kwargs: Any) -> dict[str, Any]:
    return {"inpaint_audio": wav("good.wav"), **kwargs}


AUDIO_FILE_CASES = [
    Case(f"{arg}-{name}", gen(**{arg: wav(name), **extra}), err, f"{arg}.*{name}")
    for arg, extra in (
        ("init_audio", {}),
        ("inpaint_audio", {"inpaint_mask_start_seconds": 0.1, "inpaint_mask_end_seconds": 0.2}),
    )
    for name, err in (
        ("empty.wav", AudioInputError),
        ("noise_bytes.wav", AudioInputError),
        ("text.wav", AudioInputError),
        ("truncated.wav", AudioInputError),
        ("image.flac", AudioInputError),
        ("folder.wav", MissingFileError),
        ("missing.wav", MissingFileError),
    )
]

CHECKPOINT_CASES = [
    Case("weights-zero-bytes", load("zero_weights"), CheckpointError, "zero_weights/model.safetensors"),
    Case(
        "weights-truncated",
        load("truncated_weights"),
        CheckpointError,
        "truncated_weights.*truncated or corrupt",
    ),
    Case("weights-random-bytes", load("random_weights"), CheckpointError, "random_weights/model.safetensors"),
    Case("weights-are-a-pickle", load("pickle_weights"), CheckpointError, "not a readable safetensors"),
    Case("weights-int-tensor", load("int_tensor"), CheckpointError, "wrong dtype .*int32"),
    Case("weights-missing-tensor", load("missing_tensor"), CheckpointError, "missing 1 tensor"),
    Case("weights-file-missing", load("no_weights"), MissingFileError, "lacks model.safetensors"),
    Case(
        "config-invalid-json", load("bad_json"), ConfigError, "bad_json/model_config.json is not valid JSON"
    ),
    Case("config-json-list", load("list_json"), ConfigError, "must hold a JSON object"),
    Case("config-binary", load("binary_json"), ConfigError, "binary_json/model_config.json"),
    Case("config-bad-value", load("bad_value_json"), ConfigError, "bad_value_json.*fast"),
    Case("config-no-model", load("no_model_json"), ConfigError, "missing required key config.model"),
    Case("text-encoder-missing", load("no_text_encoder"), FileNotFoundError, "no_text_encoder/text_encoder"),
    Case("text-encoder-bad-config", load("bad_te_config"), CheckpointError, "bad_te_config/text_encoder"),
    Case("text-encoder-bad-weights", load("bad_te_weights"), CheckpointError, "bad_te_weights/text_encoder"),
    Case("text-encoder-bad-tokenizer", load("bad_tokenizer"), CheckpointError, "bad_tokenizer/text_encoder"),
    Case("model-dir-missing", load("nowhere"), MissingFileError, "name_or_path: no checkpoint directory"),
    Case(
        "model-unknown-name",
        lambda m, f: StableAudioModel.from_pretrained("huge"),
        ArgumentValueError,
        "unknown model 'huge'",
    ),
    Case(
        "model-path-none",
        lambda m, f: StableAudioModel.from_pretrained(None),
        ArgumentTypeError,
        "name_or_path must be a path",
    ),
    Case(
        "model-path-int", lambda m, f: StableAudioModel.from_pretrained(5), ArgumentTypeError, "name_or_path"
    ),
    Case("device-unknown", load("zero_weights", device="tpu"), ArgumentValueError, "device 'tpu'"),
    Case("device-wrong-type", load("zero_weights", device=1.5), ArgumentTypeError, "device must be"),
    Case("dtype-unknown", load("zero_weights", dtype="float8"), ArgumentValueError, "dtype must be one of"),
    Case("model-half-string", load("zero_weights", model_half="yes"), ArgumentTypeError, "model_half"),
    Case(
        "text-encoder-dtype-string",
        load("zero_weights", text_encoder_dtype="half"),
        ArgumentTypeError,
        "text_encoder_dtype",
    ),
    Case(
        "text-encoder-backend",
        load("bad_te_config", text_encoder_backend="x"),
        ArgumentValueError,
        "text_encoder_backend",
    ),
    Case(
        "autoencoder-zero-bytes", load_ae("zero_weights"), CheckpointError, "zero_weights/model.safetensors"
    ),
    Case("autoencoder-invalid-json", load_ae("bad_json"), ConfigError, "not valid JSON"),
    Case("autoencoder-json-list", load_ae("list_json"), ConfigError, "must hold a JSON object"),
    Case("autoencoder-no-model", load_ae("no_model_json"), ConfigError, "holds no autoencoder config"),
    Case(
        "nan-weights-never-return-nan",
        lambda m, f: StableAudioModel.from_pretrained(f / "nan_weights", device="cpu").generate(**BASE),
        NonFiniteOutputError,
        "NaN or infinite",
    ),
]

LORA_CASES = [
    Case("lora-nan-tensor", lora("nan.safetensors"), LoRAFileError, "nan.safetensors.*NaN or infinite"),
    Case("lora-inf-tensor", lora("inf.safetensors"), LoRAFileError, "inf.safetensors.*NaN or infinite"),
    Case("lora-int-tensor", lora("int.safetensors"), LoRAFileError, "not a floating-point tensor"),
    Case(
        "lora-config-invalid-json",
        lora("bad_config.safetensors"),
        LoRAFileError,
        "lora_config metadata is not valid JSON",
    ),
    Case("lora-config-json-list", lora("list_config.safetensors"), LoRAFileError, "must be a JSON object"),
    Case("lora-config-rank-0", lora("bad_rank.safetensors"), LoRAFileError, "bad_rank.*rank"),
    Case("lora-wrong-shape", lora("wrong_shape.safetensors"), LoRAFileError, "has shape \\(3, 3\\)"),
    Case("lora-unknown-layer", lora("unknown_layer.safetensors"), LoRAFileError, "unknown_layer"),
    Case("lora-not-lora-keys", lora("not_lora_keys.safetensors"), LoRAFileError, "not an official LoRA key"),
    Case("lora-no-tensors", lora("empty.safetensors"), LoRAFileError, "contains no tensors"),
    Case("lora-zero-bytes", lora("zero.safetensors"), LoRAFileError, "zero.safetensors: not a readable"),
    Case(
        "lora-random-bytes", lora("random.safetensors"), LoRAFileError, "random.safetensors: not a readable"
    ),
    Case("lora-random-ckpt", lora("random.ckpt"), LoRAFileError, "random.ckpt cannot be loaded"),
    Case("lora-exploit-pickle", lora("exploit.ckpt"), LoRAFileError, "objects other than tensors"),
    Case("lora-ckpt-not-dict", lora("list.ckpt"), LoRAFileError, "expected a dict of tensors"),
    Case(
        "lora-peft-bad-adapter-config",
        lora("peft/adapter_model.safetensors"),
        LoRAFileError,
        "adapter_config.json is not valid JSON",
    ),
    Case("lora-missing", lora("nope.safetensors"), MissingFileError, "LoRA file not found"),
    Case("lora-good-then-bad", lora("good", "nan.safetensors"), LoRAFileError, "nan.safetensors"),
    Case("lora-good-then-missing", lora("good", "nope.safetensors"), MissingFileError, "nope.safetensors"),
    Case("lora-paths-none", lambda m, f: m.load_lora(None), ArgumentTypeError, "paths must be"),
    Case("lora-paths-int", lambda m, f: m.load_lora(5), ArgumentTypeError, "paths must be"),
    Case("lora-paths-empty", lambda m, f: m.load_lora([]), ArgumentTypeError, "non-empty list"),
    Case(
        "lora-paths-list-of-int",
        lambda m, f: m.load_lora([GOOD_LORA, 3]),
        ArgumentTypeError,
        "paths must be a path",
    ),
    Case("svd-bases-unused", lambda m, f: m.load_lora(GOOD_LORA, svd_bases_path=3), OK),  # not an -xs LoRA
    Case(
        "svd-bases-exploit",
        lora("xs.safetensors", svd_bases_path="bases_exploit.pt"),
        LoRAFileError,
        "svd_bases_path.*objects other than tensors",
    ),
    Case(
        "svd-bases-incomplete",
        lora("xs.safetensors", svd_bases_path="bases_incomplete.pt"),
        LoRAFileError,
        "must map weight names",
    ),
    Case(
        "svd-bases-missing",
        lora("xs.safetensors", svd_bases_path="nope.pt"),
        MissingFileError,
        "svd_bases_path: file not found",
    ),
    Case(
        "strength-without-lora",
        lambda m, f: m.set_lora_strength(0.5),
        ArgumentValueError,
        "no LoRA is loaded",
    ),
    Case(
        "strength-inf",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_strength(float("inf"))),
        ArgumentValueError,
        "strength must be finite",
    ),
    Case(
        "strength-nan",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_strength(float("nan"))),
        ArgumentValueError,
        "strength must be finite",
    ),
    Case(
        "strength-string",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_strength("0.5")),
        ArgumentTypeError,
        "strength must be a number",
    ),
    Case(
        "lora-index-float",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_strength(0.5, lora_index=0.5)),
        ArgumentTypeError,
        "lora_index must be an int",
    ),
    Case(
        "lora-index-out-of-range",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_strength(0.5, lora_index=1)),
        ArgumentValueError,
        "lora_index 1 is out of range",
    ),
    Case(
        "lora-interval-nan",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_interval(float("nan"), 1.0)),
        ArgumentValueError,
        "interval low must be finite",
    ),
    Case(
        "lora-layers-int",
        lambda m, f: (m.load_lora(GOOD_LORA), m.set_lora_layers(include=5)),
        ArgumentTypeError,
        "include must be",
    ),
    Case(
        "generate-lora-strength-nan",
        lambda m, f: (m.load_lora(GOOD_LORA), m.generate(**BASE, lora_strength=float("nan"))),
        ArgumentValueError,
        "lora_strength must be finite",
    ),
    Case("generate-lora-strength-no-lora", gen(lora_strength=0.5), ArgumentValueError, "no LoRA is loaded"),
]

GENERATE_CASES = [
    Case("prompt-none", gen(prompt=None), ArgumentValueError, "prompt is required"),
    Case("prompt-empty-list", gen(prompt=[]), ArgumentValueError, "prompt is an empty list"),
    Case("prompt-bytes", gen(prompt=b"rain"), ArgumentTypeError, "prompt must be a string"),
    Case("prompt-list-with-none", gen(prompt=["a", None]), ArgumentTypeError, "prompt must be a string"),
    Case("negative-prompt-int", gen(negative_prompt=5), ArgumentTypeError, "negative_prompt"),
    Case("duration-zero-samples", gen(duration=1e-6), ArgumentValueError, "shorter than one sample"),
    Case("duration-negative", gen(duration=-1.0), ArgumentValueError, "duration must be > 0"),
    Case("duration-inf", gen(duration=float("inf")), ArgumentValueError, "duration must be finite"),
    Case("duration-bool", gen(duration=True), ArgumentTypeError, "duration must be a number"),
    Case("duration-empty-list", gen(duration=[]), ArgumentValueError, "duration has 0 items"),
    Case("duration-over-max", gen(duration=1e6), ArgumentValueError, "duration must be <="),
    Case("steps-huge", gen(steps=10**8), ArgumentValueError, f"steps must be <= {MAX_STEPS}"),
    Case("steps-zero", gen(steps=0), ArgumentValueError, "steps must be >= 1"),
    Case("steps-float", gen(steps=2.0), ArgumentTypeError, "steps must be an int"),
    Case("steps-string", gen(steps="8"), ArgumentTypeError, "steps must be an int"),
    Case("batch-size-zero", gen(batch_size=0), ArgumentValueError, "batch_size must be >= 1"),
    Case("batch-size-huge", gen(batch_size=10**9), ArgumentValueError, "batch_size must be <= 1024"),
    Case("batch-size-string", gen(batch_size="2"), ArgumentTypeError, "batch_size must be an int"),
    Case("seed-negative", gen(seed=-7), ArgumentValueError, "seed must be -1"),
    Case("seed-float", gen(seed=1.5), ArgumentTypeError, "seed must be an int"),
    Case("seed-array", gen(seed=np.array([1, 2])), ArgumentTypeError, "seed must be an int"),
    Case("cfg-scale-nan", gen(cfg_scale=float("nan")), ArgumentValueError, "cfg_scale must be finite"),
    Case("cfg-interval-number", gen(cfg_interval=0.5), ArgumentTypeError, "cfg_interval must be a pair"),
    Case(
        "cfg-interval-outside", gen(cfg_interval=(0.0, 2.0)), ArgumentValueError, "cfg_interval must be <= 1"
    ),
    Case("cfg-norm-threshold-string", gen(cfg_norm_threshold="1"), ArgumentTypeError, "cfg_norm_threshold"),
    Case("scale-phi-outside", gen(scale_phi=5), ArgumentValueError, "scale_phi must be <= 1"),
    Case("apg-scale-nan", gen(apg_scale=float("nan")), ArgumentValueError, "apg_scale must be finite"),
    Case("sample-size-string", gen(sample_size="abc"), ArgumentTypeError, "sample_size must be an int"),
    Case("sample-size-tiny", gen(sample_size=1), ArgumentValueError, "sample_size must be >="),
    Case(
        "sample-size-not-multiple",
        gen(sample_size=1000),
        ArgumentValueError,
        "sample_size must be a multiple",
    ),
    Case("sigmas-string", gen(sigmas="1,0"), ArgumentTypeError, "sigmas must be a tensor"),
    Case("sigmas-object", gen(sigmas=object()), ArgumentTypeError, "sigmas must be a tensor"),
    Case("sigmas-nan", gen(sigmas=[1.0, float("nan"), 0.0]), ArgumentValueError, "sigmas must be finite"),
    Case("sigmas-wrong-length", gen(sigmas=[1.0, 0.0]), ArgumentValueError, "sigmas has 2 values"),
    Case("callback-not-callable", gen(callback=5), ArgumentTypeError, "callback must be a callable"),
    Case("cancel-not-callable", gen(cancel="stop"), ArgumentTypeError, "cancel must be"),
    Case("generator-string", gen(generator="cpu"), ArgumentTypeError, "generator must be a torch.Generator"),
    Case("progress-string", gen(progress="yes"), ArgumentTypeError, "progress must be"),
    Case("return-latents-string", gen(return_latents="no"), ArgumentTypeError, "return_latents must be"),
    Case("chunked-decode-int", gen(chunked_decode=1), ArgumentTypeError, "chunked_decode must be"),
    Case("sampler-unknown", gen(sampler="ddim"), ArgumentValueError, "sampler must be one of"),
    Case("sampler-list", gen(sampler=["euler"]), ArgumentValueError, "sampler must be one of"),
    Case("sampling-shift-string", gen(sampling_shift="fast"), ArgumentTypeError, "sampling_shift"),
    Case("init-audio-int", gen(init_audio=5), ArgumentTypeError, "init_audio must be a path"),
    Case(
        "init-audio-rate-zero",
        gen(init_audio=(np.zeros(100, np.float32), 0)),
        AudioInputError,
        "init_audio must be",
    ),
    Case(
        "init-audio-rate-1hz", gen(init_audio=(torch.zeros(2, 100), 1)), AudioInputError, "sample rate 1 Hz"
    ),
    Case("init-audio-nan", gen(init_audio=(torch.full((2, 100), float("nan")), SR)), AudioInputError, "NaN"),
    Case(
        "init-audio-uint8",
        gen(init_audio=(np.zeros(100, np.uint8), SR)),
        ArgumentTypeError,
        "unsupported sample dtype",
    ),
    Case(
        "init-audio-complex",
        gen(init_audio=(torch.zeros(100, dtype=torch.complex64), SR)),
        ArgumentTypeError,
        "floating point",
    ),
    Case(
        "init-audio-one-sample-at-48k",
        gen(init_audio=(torch.zeros(1, 1), 48000)),
        AudioInputError,
        "shorter than one sample",
    ),
    Case(
        "init-noise-level-without-audio",
        gen(init_noise_level=0.5),
        ArgumentValueError,
        "only applies with init_audio",
    ),
    Case(
        # found by fuzzing: compared with 1.0 unchecked, an empty tensor raised torch's RuntimeError
        "init-noise-level-empty-tensor-without-audio",
        gen(init_noise_level=torch.zeros(2, 0)),
        ArgumentTypeError,
        "init_noise_level must be a number",
    ),
    Case(
        "init-noise-level-string",
        gen(init_audio=wav("good.wav"), init_noise_level="0.5"),
        ArgumentTypeError,
        "init_noise_level",
    ),
    Case(
        "regions-without-inpaint-audio",
        gen(inpaint_mask_start_seconds=0.1, inpaint_mask_end_seconds=0.2),
        ArgumentValueError,
        "needs inpaint_audio",
    ),
    Case(
        "mask-without-inpaint-audio",
        gen(inpaint_mask=torch.ones(1, 100)),
        ArgumentValueError,
        "inpaint_mask needs inpaint_audio",
    ),
    Case(
        "inpaint-audio-without-regions",
        gen(inpaint_audio=wav("good.wav")),
        ArgumentValueError,
        "needs the regions",
    ),
    Case(
        "region-start-after-end",
        gen(**region(inpaint_mask_start_seconds=0.3, inpaint_mask_end_seconds=0.1)),
        ArgumentValueError,
        "start 0.3 must be before end",
    ),
    Case(
        "region-string",
        gen(**region(inpaint_mask_start_seconds="a", inpaint_mask_end_seconds=0.2)),
        ArgumentTypeError,
        "inpaint_mask_start_seconds",
    ),
    Case(
        "region-nan",
        gen(**region(inpaint_mask_start_seconds=float("nan"), inpaint_mask_end_seconds=0.2)),
        ArgumentValueError,
        "must be finite",
    ),
    Case(
        "region-lists-mismatch",
        gen(**region(inpaint_mask_start_seconds=[0.1, 0.2], inpaint_mask_end_seconds=[0.3])),
        ArgumentValueError,
        "2 values but",
    ),
    Case(
        "region-past-end",
        gen(**region(inpaint_mask_start_seconds=5.0, inpaint_mask_end_seconds=6.0)),
        ArgumentValueError,
        "past the generated duration",
    ),
    Case(
        "mask-wrong-shape",
        gen(inpaint_audio=wav("good.wav"), inpaint_mask=torch.ones(3, 3, 3)),
        ArgumentValueError,
        "inpaint_mask must have shape",
    ),
    Case(
        "mask-out-of-range",
        gen(inpaint_audio=wav("good.wav"), inpaint_mask=torch.full((1, 100), 2.0)),
        ArgumentValueError,
        "inpaint_mask values",
    ),
    Case("user-callback-raises", gen(callback=lambda info: 1 / 0), ZeroDivisionError, "division by zero"),
    Case("cancelled", gen(cancel=threading.Event()), OK),  # never set: runs to the end
    # Accepted edge cases: finite audio of the documented shape.
    Case("numpy-int-steps-and-batch", gen(steps=np.int64(2), batch_size=np.int64(2)), OK),
    Case("list-waveform", gen(init_audio=([0.0] * 600, SR)), OK),
    Case("rate-first-tuple", gen(init_audio=(SR, torch.zeros(2, 600))), OK),
    Case("very-long-prompt", gen(prompt="rain " * 4000), OK),
    Case("large-sample-size-cap", gen(sample_size=2**24), OK),
]

AUDIO_API_CASES = [
    Case(
        "decode-nan-latents",
        lambda m, f: _ae(m).decode(torch.full((1, 8, 4), float("nan"))),
        ArgumentValueError,
        "latents contain NaN",
    ),
    Case(
        "decode-zero-frames",
        lambda m, f: _ae(m).decode(torch.zeros(1, 8, 0)),
        ArgumentValueError,
        "latents are empty",
    ),
    Case(
        "decode-wrong-channels",
        lambda m, f: _ae(m).decode(torch.zeros(1, 3, 4)),
        ArgumentValueError,
        "3 channels but",
    ),
    Case("decode-list", lambda m, f: _ae(m).decode([[0.0]]), ArgumentTypeError, "latents must be a"),
    Case(
        "decode-complex",
        lambda m, f: _ae(m).decode(torch.zeros(1, 8, 4, dtype=torch.complex64)),
        ArgumentTypeError,
        "real numbers",
    ),
    Case(
        "decode-chunk-size-string",
        lambda m, f: _ae(m).decode(torch.zeros(1, 8, 4), chunked=True, chunk_size="4"),
        ArgumentTypeError,
        "chunk_size must be an int",
    ),
    Case(
        "decode-overlap-too-big",
        lambda m, f: _ae(m).decode(torch.zeros(1, 8, 4), chunked=True, chunk_size=4, overlap=8),
        ArgumentValueError,
        "overlap must be <= 3",
    ),
    Case(
        "decode-generator-string",
        lambda m, f: _ae(m).decode(torch.zeros(1, 8, 4), generator="g"),
        ArgumentTypeError,
        "generator",
    ),
    Case(
        "encode-broken-file",
        lambda m, f: _ae(m).encode(f / "noise_bytes.wav"),
        AudioInputError,
        "audio: cannot read .*noise_bytes.wav",
    ),
    Case("encode-none", lambda m, f: _ae(m).encode(None), ArgumentTypeError, "audio must be a path"),
    Case(
        "encode-bare-waveform",
        lambda m, f: _ae(m).encode(torch.zeros(2, 100)),
        AudioInputError,
        "needs its sample rate",
    ),
    Case(
        "encode-rate-string",
        lambda m, f: _ae(m).encode(torch.zeros(2, 100), sample_rate="6000"),
        ArgumentTypeError,
        "sample_rate must be an int",
    ),
    Case(
        "encode-rate-zero",
        lambda m, f: _ae(m).encode(torch.zeros(2, 100), sample_rate=0),
        ArgumentValueError,
        "sample_rate must be positive",
    ),
    Case(
        "encode-empty-batch",
        lambda m, f: _ae(m).encode(torch.zeros(0, 2, 100), sample_rate=SR),
        ArgumentValueError,
        "empty batch",
    ),
    Case(
        "encode-chunked-string",
        lambda m, f: _ae(m).encode(torch.zeros(2, 100), sample_rate=SR, chunked="yes"),
        ArgumentTypeError,
        "chunked must be",
    ),
    Case(
        "read-audio-broken",
        lambda m, f: read_audio(f / "text.wav"),
        AudioInputError,
        "path: cannot read .*text.wav",
    ),
    Case("read-audio-int", lambda m, f: read_audio(3), ArgumentTypeError, "path must be a path"),
    Case(
        "write-audio-nan",
        lambda m, f: write_audio(f / "o.wav", torch.full((2, 10), float("nan")), SR),
        ArgumentValueError,
        "NaN",
    ),
    Case(
        "write-audio-format",
        lambda m, f: write_audio(f / "o.xyz", torch.zeros(2, 10), SR),
        ArgumentValueError,
        "format 'xyz'",
    ),
    Case(
        "write-audio-rate",
        lambda m, f: write_audio(f / "o.wav", torch.zeros(2, 10), 0),
        ArgumentValueError,
        "sample_rate",
    ),
    Case(
        "write-audio-no-folder",
        lambda m, f: write_audio(f / "none" / "o.wav", torch.zeros(2, 10), SR),
        MissingFileError,
        "does not exist",
    ),
    Case(
        "write-audio-int-tensor",
        lambda m, f: write_audio(f / "o.wav", torch.zeros(2, 10, dtype=torch.int32), SR),
        ArgumentTypeError,
        "float tensor",
    ),
]

CASES = AUDIO_FILE_CASES + CHECKPOINT_CASES + LORA_CASES + GENERATE_CASES + AUDIO_API_CASES


def _ae(model: StableAudioModel) -> AutoencoderModel:
    return AutoencoderModel(model.autoencoder, model.sample_rate, model.device)


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, model: StableAudioModel) -> Path:
    root = make_bad_files(tmp_path_factory.mktemp("bad"))
    make_lora_file(model, root / "xs.safetensors", kind="lora-xs")
    return root


@pytest.fixture(scope="module")
def reference(model: StableAudioModel) -> torch.Tensor:
    return model.generate(**BASE)


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, model: StableAudioModel, files: Path, reference: torch.Tensor) -> None:
    try:
        if case.error is None:
            out = case.call(model, files)
            outputs = out if isinstance(out, tuple) else (out,)
            for o in outputs:
                if isinstance(o, torch.Tensor):
                    assert o.dim() == 3 and o.shape[1] == 2 and o.shape[2] > 0 and torch.isfinite(o).all()
        else:
            with pytest.raises(case.error, match=case.match) as caught:
                case.call(model, files)
            if case.error is not ZeroDivisionError:  # the user's own callback error passes through
                assert isinstance(caught.value, StableAudioError), type(caught.value)
            if isinstance(caught.value, StableAudioError) and not isinstance(caught.value, RuntimeError):
                assert isinstance(caught.value, (ValueError, TypeError))
    finally:
        model.unload_lora()
    assert not Path("/tmp/sa3-pwned").exists(), "a pickle was executed"
    after = model.generate(**BASE)
    assert torch.equal(after, reference), "a failed call changed the model"


def test_a_failed_load_keeps_the_loras_already_loaded(model: StableAudioModel, files: Path) -> None:
    model.load_lora(GOOD_LORA)
    try:
        model.set_lora_strength(0.7)
        with_lora = model.generate(**BASE)
        with pytest.raises(LoRAFileError):
            model.load_lora([GOOD_LORA, files / "nan.safetensors"])
        assert model.lora_names == ["lora"] and model.lora_strengths() == [pytest.approx(0.7)]
        assert torch.equal(model.generate(**BASE), with_lora)
    finally:
        model.unload_lora()
