"""Training data: audio clips with captions, and their SAME latents cached on disk."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stable_audio_3.audio import read_audio, to_waveform
from stable_audio_3.errors import ArgumentValueError, MissingFileError

if TYPE_CHECKING:
    from stable_audio_3.model import StableAudioModel

__all__ = [
    "Clip",
    "find_clips",
    "LatentCache",
    "AUDIO_SUFFIXES",
    "Batch",
    "sample_batch",
    "silence_frame",
    "length_order",
    "similar_length_picks",
    "caption_weights",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus")
_CAPTION_COLUMNS = ("caption", "prompt", "text")
_PATH_COLUMNS = ("path", "file", "audio")


@dataclass(frozen=True)
class Clip:
    path: Path
    caption: str
    seconds: float  # duration of the whole file (the seconds_total it is conditioned on)


def _duration(path: Path) -> float:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except RuntimeError as err:
        raise ArgumentValueError(f"cannot read audio file {path}: {err}") from None
    return info.frames / info.samplerate


def _manifest_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ArgumentValueError(f"{path}:{i + 1}: invalid JSON ({err})") from None
        return rows
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _pick(row: dict, names: tuple[str, ...], what: str, where: str) -> str:
    for n in names:
        if row.get(n) not in (None, ""):
            return str(row[n])
    raise ArgumentValueError(f"{where}: no {what} column (expected one of {', '.join(names)})")


def find_clips(data: str | Path, captions: bool = True) -> list[Clip]:
    """A folder of audio files with same-stem `.txt` captions, or a CSV / JSONL manifest with a
    path column (relative to the manifest) and a caption column. `captions=False` (autoencoder
    training) takes every audio file and leaves captions empty."""
    data = Path(data)
    clips: list[Clip] = []
    if data.is_file():
        if data.suffix not in (".csv", ".jsonl"):
            raise ArgumentValueError(f"training data {data} must be a folder, a .csv or a .jsonl manifest")
        for i, row in enumerate(_manifest_rows(data)):
            where = f"{data} row {i + 1}"
            audio = (data.parent / _pick(row, _PATH_COLUMNS, "path", where)).resolve()
            if not audio.is_file():
                raise MissingFileError(f"{where}: audio file not found: {audio}")
            caption = _pick(row, _CAPTION_COLUMNS, "caption", where) if captions else ""
            clips.append(Clip(audio, caption, _duration(audio)))
    elif data.is_dir():
        for audio in sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            if any(part.startswith(".") for part in audio.relative_to(data).parts):
                continue
            caption = audio.with_suffix(".txt")
            if captions and not caption.is_file():
                raise ArgumentValueError(f"{audio} has no caption file {caption.name}")
            text = caption.read_text().strip() if captions else ""
            clips.append(Clip(audio, text, _duration(audio)))
    else:
        raise MissingFileError(f"training data not found: {data}")
    if not clips:
        raise ArgumentValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) found in {data}")
    return clips


class LatentCache:
    """SAME latents of each clip, computed once and stored as `<hash>.safetensors` in a folder.

    The key covers the file's path, size and modification time and the autoencoder's weights, so a
    changed file or model is re-encoded; files are written atomically.
    """

    def __init__(self, folder: Path, model: StableAudioModel) -> None:
        self.folder = Path(folder)
        self.model = model
        digest = hashlib.sha1()
        for tensor in model.autoencoder.state_dict().values():  # a few values of every tensor
            digest.update(tensor.detach().float().cpu().flatten()[:64].numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:12]

    @classmethod
    def for_data(cls, data: str | Path, cache_dir: str | Path | None, model: StableAudioModel) -> LatentCache:
        """The cache a stage uses: `cache_dir`, else `.sa3_latents` in the data folder (beside a
        manifest file)."""
        if cache_dir:
            return cls(Path(cache_dir), model)
        data = Path(data)
        return cls((data if data.is_dir() else data.parent) / ".sa3_latents", model)

    def _key(self, clip: Clip) -> Path:
        st = clip.path.stat()
        raw = f"{clip.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.fingerprint}"
        return self.folder / f"{hashlib.sha1(raw.encode()).hexdigest()}.safetensors"

    @torch.inference_mode()
    def _encode(self, clip: Clip) -> torch.Tensor:
        model = self.model
        ae = model.autoencoder
        wave, rate = read_audio(clip.path)
        wave = to_waveform((wave, rate), str(clip.path), model.sample_rate, channels=ae.config.io_channels)
        ratio = ae.config.downsampling_ratio
        multiple = ratio * ae.config.latent_multiple
        wave = torch.nn.functional.pad(wave, (0, (-wave.shape[-1]) % multiple))
        audio = wave[None].to(model.device, next(ae.parameters()).dtype)
        z = ae.encode_chunked(audio) if model.config.pretransform.chunked else ae.encode(audio)
        return z[0].float().cpu()

    def encode_all(self, clips: list[Clip], progress: bool = True) -> list[torch.Tensor]:
        from safetensors.torch import load_file, save_file
        from tqdm.auto import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        out = []
        for clip in tqdm(clips, desc="encoding latents", unit="clip", disable=not progress):
            path = self._key(clip)
            if path.is_file():
                out.append(load_file(str(path))["latents"])
                continue
            z = self._encode(clip)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
            save_file({"latents": z.contiguous()}, str(tmp))
            tmp.replace(path)
            out.append(z)
        return out


@dataclass
class Batch:
    """One training batch of latents (B, C, L) padded with silence, and what conditions them."""

    latents: torch.Tensor
    valid: list[int]  # frames of real audio per item
    prompts: list[str]
    seconds: list[float]  # seconds_total conditioning (whole clip, rounded up)
    effective: list[int]  # latent frames of the whole clip (drives the schedule shift)


def sample_batch(
    clips: list[Clip],
    latents: list[torch.Tensor],
    batch_size: int,
    max_frames: int,
    frame_rate: tuple[int, int],
    rng: random.Random,
    device: torch.device,
    silence: torch.Tensor | None = None,
    by_length: list[int] | None = None,
    weights: list[float] | None = None,
) -> Batch:
    """A random batch of crops of at most `max_frames` latents, padded to the longest with the
    `silence` latent frame (C,) (zeros when None). `frame_rate` is (sample rate, samples per frame).
    `by_length` (clip indices sorted by length, `length_order`) draws the batch from clips of similar
    length, so little of it is padding. `weights` (one per clip) makes a clip's chance of being drawn
    proportional to its weight (about proportional with `by_length`)."""
    sr, ratio = frame_rate
    if by_length is None and weights is None:
        picks = [rng.randrange(len(clips)) for _ in range(batch_size)]
    elif by_length is None:
        picks = rng.choices(range(len(clips)), weights=weights, k=batch_size)
    else:
        picks = similar_length_picks(by_length, batch_size, rng, weights=weights)
    crops = []
    for i in picks:
        z = latents[i]
        n = z.shape[-1]
        start = rng.randrange(0, n - max_frames + 1) if n > max_frames else 0
        crops.append(z[:, start : start + max_frames])
    valid = [c.shape[-1] for c in crops]
    length = max(valid)
    channels = crops[0].shape[0]
    pad = torch.zeros(channels) if silence is None else silence.float().cpu()
    x0 = torch.stack(
        [torch.cat([c, pad[:, None].expand(channels, length - c.shape[-1])], dim=-1) for c in crops]
    ).to(device)
    seconds = [math.ceil(clips[i].seconds) for i in picks]
    return Batch(
        latents=x0,
        valid=valid,
        prompts=[clips[i].caption for i in picks],
        seconds=[float(s) for s in seconds],
        effective=[math.ceil(int(s * sr) / ratio) for s in seconds],
    )


def length_order(latents: list[torch.Tensor]) -> list[int]:
    """Clip indices from the shortest latent sequence to the longest."""
    return sorted(range(len(latents)), key=lambda i: latents[i].shape[-1])


def similar_length_picks(
    order: list[int],
    batch_size: int,
    rng: random.Random,
    spread: int = 4,
    weights: list[float] | None = None,
) -> list[int]:
    """`batch_size` clips drawn from a window of `spread * batch_size` neighbours in length order
    around a random position: every clip is about equally likely (or about as likely as its weight
    says, `weights` being indexed by clip), and a batch's lengths are close."""
    width = min(len(order), spread * batch_size)
    start = rng.randrange(0, len(order) - width + 1)
    if weights is None:
        return [order[start + rng.randrange(width)] for _ in range(batch_size)]
    window = order[start : start + width]
    if not any(weights[i] > 0 for i in window):  # nothing to draw here: the whole order instead
        window = order
    return rng.choices(window, weights=[weights[i] for i in window], k=batch_size)


@torch.no_grad()
def silence_frame(model) -> torch.Tensor:
    """The latent of silence (C,): what padded frames hold, as in the official pre-encoded data."""
    ae = model.autoencoder
    n = ae.config.downsampling_ratio * ae.config.latent_multiple
    zeros = torch.zeros(1, ae.config.io_channels, n, device=model.device, dtype=next(ae.parameters()).dtype)
    return ae.encode(zeros)[0, :, 0].float().cpu()


def caption_weights(clips: list[Clip], oversample: dict[str, float]) -> list[float] | None:
    """Per clip, the product of the factors of every `oversample` text its caption contains (1 when
    none does); None when nothing is oversampled. A factor of 0 leaves such clips out."""
    if not oversample:
        return None
    weights = []
    for clip in clips:
        w = 1.0
        for text, factor in oversample.items():
            if text in clip.caption:
                w *= factor
        weights.append(w)
    if not any(weights):
        raise ArgumentValueError("oversample: every clip has weight 0, nothing is left to train on")
    return weights
