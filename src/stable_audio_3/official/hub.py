"""Where checkpoints come from: registry names, the Hugging Face cache, or a local directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stable_audio_3.errors import (
    ArgumentValueError,
    GatedRepoError,
    HubError,
    MissingFileError,
    NotCachedError,
    as_path,
)

__all__ = [
    "MODEL_REPOS",
    "AUTOENCODER_REPOS",
    "DEMO_MODEL",
    "DEMO_NOTICE",
    "demo_model_dir",
    "ResolvedCheckpoint",
    "resolve_model",
    "resolve_autoencoder",
]

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"

MODEL_REPOS = {
    "small-music": "stabilityai/stable-audio-3-small-music",
    "small-music-base": "stabilityai/stable-audio-3-small-music-base",
    "small-sfx": "stabilityai/stable-audio-3-small-sfx",
    "small-sfx-base": "stabilityai/stable-audio-3-small-sfx-base",
    "medium": "stabilityai/stable-audio-3-medium",
    "medium-base": "stabilityai/stable-audio-3-medium-base",
}
# The small demo model trained by our own pipeline ships inside the package: offline, no token.
DEMO_MODEL = "demo"
DEMO_NOTICE = (
    "using the built-in demo model (16 kHz, trained on synthetic instruments, drums and effects); "
    "pass --model small-music (or another name) for Stable Audio 3"
)
AUTOENCODER_REPOS = {"same-s": "stabilityai/SAME-S", "same-l": "stabilityai/SAME-L"}
# Full checkpoints that contain each autoencoder; a cached one is reused instead of a download.
_AUTOENCODER_HOSTS = {"same-s": ("small-music", "small-sfx"), "same-l": ("medium",)}


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Local files of a checkpoint, and the hub repo they came from (None for a local directory)."""

    config: Path
    weights: Path
    repo_id: str | None = None
    revision: str | None = None

    @property
    def root(self) -> Path:
        return self.config.parent


def _local_dir(path: Path) -> ResolvedCheckpoint:
    config, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if missing:
        raise MissingFileError(f"checkpoint directory {path} lacks {', '.join(missing)}")
    return ResolvedCheckpoint(config, weights)


def demo_model_dir() -> Path:
    """Where the package's demo checkpoint lies."""
    return Path(__file__).resolve().parent.parent / "demo_model"


def _demo() -> ResolvedCheckpoint:
    folder = demo_model_dir()
    if not (folder / CONFIG_FILE).is_file():
        raise MissingFileError(f"the demo model is missing from this installation ({folder})")
    return _local_dir(folder)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or Path(name).exists()


def _hub_error(repo_id: str, err: Exception, wanted: str = "") -> Exception:
    """Turn hub failures into one readable error that says what to do."""
    name = type(err).__name__
    if "GatedRepo" in name or "401" in str(err) or "403" in str(err):
        return GatedRepoError(
            f"{repo_id} is gated: accept its license on Hugging Face and log in (`hf auth login` or HF_TOKEN)"
        )
    if "LocalEntryNotFound" in name or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return NotCachedError(
            f"{wanted}{repo_id} is not in the Hugging Face cache and downloads are disabled (HF_HUB_OFFLINE) "
            "or the network is unreachable; download it once online, or pass a local checkpoint directory"
        )
    return HubError(f"{wanted}could not fetch {repo_id} from Hugging Face: {err}")


def _download(repo_id: str, revision: str | None) -> ResolvedCheckpoint:
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(repo_id, CONFIG_FILE, revision=revision)
        weights = hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision)
    except (OSError, ValueError) as err:
        raise _hub_error(repo_id, err) from err
    return ResolvedCheckpoint(Path(config), Path(weights), repo_id, revision)


def resolve_model(name_or_path: str | os.PathLike[str], revision: str | None = None) -> ResolvedCheckpoint:
    """A registry name (downloaded through the Hugging Face cache) or a local checkpoint directory."""
    name = str(as_path("name_or_path", name_or_path))
    if name == DEMO_MODEL:
        return _demo()
    if name in MODEL_REPOS:
        return _download(MODEL_REPOS[name], revision)
    if name in AUTOENCODER_REPOS:
        raise ArgumentValueError(
            f"{name!r} is an autoencoder checkpoint: load it with AutoencoderModel.from_pretrained"
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_dir(path)
    if _looks_like_path(name):
        raise MissingFileError(f"name_or_path: no checkpoint directory at {path}")
    raise ArgumentValueError(
        f"unknown model {name!r}: expected one of {sorted([DEMO_MODEL, *MODEL_REPOS])} or a local directory"
    )


def resolve_autoencoder(
    name_or_path: str | os.PathLike[str], revision: str | None = None
) -> ResolvedCheckpoint:
    """`same-s` / `same-l` (reusing a cached full checkpoint that contains it) or a local directory."""
    name = str(as_path("name_or_path", name_or_path))
    if name == DEMO_MODEL:
        return _demo()
    if name in AUTOENCODER_REPOS:
        from huggingface_hub import try_to_load_from_cache

        for host in _AUTOENCODER_HOSTS[name]:
            repo = MODEL_REPOS[host]
            files = [try_to_load_from_cache(repo, f, revision=revision) for f in (CONFIG_FILE, WEIGHTS_FILE)]
            if all(isinstance(f, str) for f in files):
                return ResolvedCheckpoint(Path(files[0]), Path(files[1]), repo, revision)
        return _download(AUTOENCODER_REPOS[name], revision)
    if name in MODEL_REPOS:
        return _download(MODEL_REPOS[name], revision)
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_dir(path)
    if _looks_like_path(name):
        raise MissingFileError(f"name_or_path: no checkpoint directory at {path}")
    raise ArgumentValueError(
        f"unknown autoencoder {name!r}: expected one of {sorted(AUTOENCODER_REPOS)}, "
        "a model name or a local directory"
    )


def resolve_text_encoder(
    checkpoint: ResolvedCheckpoint, repo_id: str | None, subfolder: str | None, model_path: str | None = None
) -> Path:
    """The folder holding the T5Gemma config, weights and tokenizer for a checkpoint.

    Looked for, in order: `model_path` from the config, the subfolder beside the checkpoint's
    config (a local directory or the hub snapshot), then the config's `repo_id` on the hub.
    """
    candidates = []
    if model_path:
        candidates.append(Path(model_path) / (subfolder or ""))
    candidates.append(checkpoint.root / (subfolder or ""))
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    repo = checkpoint.repo_id or repo_id
    looked = " or ".join(str(f / "config.json") for f in candidates)
    if repo is None:
        raise MissingFileError(
            f"text encoder not found: expected {looked} (the config's subfolder {subfolder!r})"
        )
    from huggingface_hub import snapshot_download

    pattern = f"{subfolder}/*" if subfolder else "*"
    try:
        root = Path(snapshot_download(repo, revision=checkpoint.revision, allow_patterns=[pattern]))
    except (OSError, ValueError) as err:
        raise _hub_error(repo, err, f"text encoder not found at {looked}, and the config's repo ") from err
    folder = root / (subfolder or "")
    if not (folder / "config.json").is_file():
        raise MissingFileError(f"repo {repo} has no text encoder in {subfolder!r}")
    return folder
