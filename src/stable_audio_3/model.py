"""`StableAudioModel`: load an official checkpoint and generate audio from text (the public API)."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.utils.parametrize as parametrize

from stable_audio_3.devices import as_out_of_memory, resolve_device, resolve_dtype
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError
from stable_audio_3.generation_config import fill_defaults, folder_generation_config
from stable_audio_3.lora.stack import LoRAStack
from stable_audio_3.models.attention import PADDING_MODES
from stable_audio_3.models.conditioners import load_text_encoder
from stable_audio_3.models.dit import DiffusionTransformer
from stable_audio_3.models.kernels import onednn_linear_available
from stable_audio_3.models.layers import ExpoFourierFeatures, Linear, quantize_linears_int8
from stable_audio_3.models.networks import Networks
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.notices import warn_caller
from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import load_official_state_dict, read_safetensors
from stable_audio_3.official.config import ModelConfig, load_model_config
from stable_audio_3.pipeline.conditioning import Conditioning, condition
from stable_audio_3.pipeline.cudagraphs import StepGraphs
from stable_audio_3.pipeline.engine import Components
from stable_audio_3.pipeline.engine import generate as run_generation
from stable_audio_3.pipeline.record import GenerationRecord
from stable_audio_3.pipeline.request import GenerationRequest, default_duration
from stable_audio_3.pipeline.samplers import StepInfo

__all__ = ["StableAudioModel"]


class StableAudioModel:
    """A Stable Audio 3 text-to-audio model (DiT + T5Gemma + SAME) ready to generate.

    Build it with `from_pretrained`. `generate()` returns float32 audio (B, 2, samples) at
    `sample_rate`; the settings, seed and timings of the last call are in `last_record`.
    """

    def __init__(
        self, cfg: ModelConfig, networks: Networks, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.config = cfg
        self.networks = networks
        self.device = device
        self.dtype = dtype
        self.last_record: GenerationRecord | None = None
        self.int8 = False
        roots = {"dit": networks.dit, "conditioners": networks.conditioners}
        self.lora = LoRAStack(roots, on_change=self._weights_changed)
        self._lock = threading.Lock()
        self._step_graphs: StepGraphs | None = None
        self.generation_defaults: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        model_half: bool | None = None,
        revision: str | None = None,
        *,
        attention_padding: str = "exclude",
        text_encoder_dtype: torch.dtype | None = None,
        dtype: torch.dtype | str | None = None,
        text_encoder_backend: str = "auto",
    ) -> StableAudioModel:
        """Load a registry name (`small-music`, `medium`, ...) or a local checkpoint directory.

        device: None picks cuda, then mps, then cpu. model_half: None means float16 on CUDA and
        float32 elsewhere (as the reference). attention_padding: "exclude" (default: padded latents
        get no attention, as the models were trained) or "reference_cpu" (the reference's CPU
        behaviour, for bit-level comparisons). text_encoder_dtype: None keeps the stored dtype.
        dtype: explicit compute dtype for the DiT, conditioners and autoencoder (e.g. "bfloat16" to
        halve memory on CPU); norms, RoPE, Fourier features and guidance stay in float32.
        text_encoder_backend: "auto" (our T5Gemma port where it reproduces the folder's encoder,
        which starts seconds faster; else `transformers`), "native" or "transformers".
        """
        if attention_padding not in PADDING_MODES:
            raise ArgumentValueError(
                f"attention_padding must be one of {PADDING_MODES}, got {attention_padding!r}"
            )
        if text_encoder_dtype is not None and not isinstance(text_encoder_dtype, torch.dtype):
            raise ArgumentTypeError(
                f"text_encoder_dtype must be a torch.dtype or None, got {text_encoder_dtype!r}"
            )
        dev = resolve_device(device)
        dtype = resolve_dtype(dev, model_half, dtype)
        files = hub.resolve_model(name_or_path, revision=revision)
        cfg = load_model_config(files.config)
        cfg.check_wiring()
        with torch.device("meta"):
            networks = Networks(cfg, attention_padding)
        load_official_state_dict(networks, read_safetensors(files.weights))
        networks.to(device=dev, dtype=dtype).eval().requires_grad_(False)
        te_folder = hub.resolve_text_encoder(
            files, cfg.prompt.repo_id, cfg.prompt.subfolder, cfg.prompt.model_path
        )
        prompt = networks.conditioners[cfg.prompt.id]
        encoder = load_text_encoder(
            te_folder, cfg.prompt.max_length, text_encoder_dtype, text_encoder_backend
        )
        prompt.attach_encoder(encoder)
        prompt.move_encoder(dev)
        model = cls(cfg, networks, dev, dtype)
        model.generation_defaults = folder_generation_config(files.root)
        return model

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def max_duration(self) -> float:
        return self.config.max_duration

    @property
    def default_duration(self) -> float:
        return default_duration(self.max_duration)

    @property
    def dit(self) -> DiffusionTransformer:
        return self.networks.dit

    @property
    def autoencoder(self) -> SAMEAutoencoder:
        return self.networks.autoencoder

    @property
    def attention_padding(self) -> str:
        return self.dit.attention_padding

    # ------------------------------------------------------------------ speed options
    @property
    def cpu_matmul(self) -> str:
        """Which library runs float32 linear layers on CPU: "onednn" (default where this PyTorch build
        has it; several times faster on AMD CPUs) or "torch" (plain `F.linear`, i.e. MKL). Both are
        IEEE float32 and agree to rounding; other devices and dtypes always use `F.linear`."""
        layers = [m for m in self.networks.modules() if isinstance(m, Linear)]
        use = any(m.onednn for m in layers) and onednn_linear_available()
        return "onednn" if use else "torch"

    @cpu_matmul.setter
    def cpu_matmul(self, backend: str) -> None:
        if backend not in ("onednn", "torch"):
            raise ArgumentValueError(f"cpu_matmul must be 'onednn' or 'torch', got {backend!r}")
        if backend == "onednn" and not onednn_linear_available():
            raise ArgumentValueError("cpu_matmul='onednn' is not available in this PyTorch build")
        for m in self.networks.modules():
            if isinstance(m, Linear):
                m.onednn = backend == "onednn"

    def compile(self, **options) -> None:
        """Compile the DiT forward with `torch.compile` (dynamic shapes, so new lengths do not
        recompile). Worth it on GPUs; the first call pays the compilation time."""
        dit = self.networks.dit
        for layer in dit.modules():
            if isinstance(layer, ExpoFourierFeatures):  # float32 angles must not be re-associated
                layer.forward = torch.compiler.disable(layer.forward)
        dit.forward = torch.compile(dit.forward, dynamic=True, **options)
        self._weights_changed()

    @property
    def cuda_graphs(self) -> bool:
        """Whether sampling steps replay CUDA graphs (off by default). On: each step's DiT evaluation
        (with guidance) is captured once per length and batch shape and replayed, cutting the kernel
        launch overhead that dominates short generations on fast GPUs. The first generation of a new
        shape pays the capture (about three steps); graphs are kept for later generations (up to 4
        shapes). Not used while LoRAs are loaded unmerged (`merge_lora()` first)."""
        return self._step_graphs is not None

    @cuda_graphs.setter
    def cuda_graphs(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise ArgumentTypeError(f"cuda_graphs must be True or False, got {enabled!r}")
        if enabled and self.device.type != "cuda":
            raise ArgumentValueError(
                f"cuda_graphs needs a model on a CUDA device; this one is on {self.device}"
            )
        if not enabled:
            self._step_graphs = None
        elif self._step_graphs is None:
            self._step_graphs = StepGraphs()

    def enable_cpu_int8(self) -> None:
        """Opt-in CPU fast mode: the DiT's linear layers run as dynamic int8 (weights int8 per
        channel, activations quantised per call). Faster on CPUs with int8 dot products, at a small
        loss of accuracy (see benchmarks/README.md for the measured SNR). Not reversible; never the
        default; not combinable with LoRA."""
        if self.device.type != "cpu":
            raise ArgumentValueError("enable_cpu_int8 is a CPU mode; this model is on " + str(self.device))
        if self.dtype != torch.float32:
            dtype = str(self.dtype).removeprefix("torch.")
            raise ArgumentValueError(f"enable_cpu_int8 needs a float32 model; this one runs in {dtype}")
        if self.lora:
            raise RuntimeError("enable_cpu_int8 cannot be combined with loaded LoRAs")
        quantize_linears_int8(self.networks.dit)
        self.int8 = True
        self._weights_changed()

    # ------------------------------------------------------------------ LoRA (see `lora.stack`)
    @property
    def lora_names(self) -> list[str]:
        return self.lora.names

    def load_lora(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        svd_bases_path: str | os.PathLike[str] | None = None,
    ) -> list[int]:
        """Stack one or more LoRA files (official `.safetensors`/`.ckpt` layout or PEFT-style) on top
        of those already loaded; returns their indices for `set_lora_strength(..., lora_index=i)`."""
        if self.int8:
            raise RuntimeError("LoRAs cannot be loaded on a model in int8 fast mode")
        return self.lora.load(paths, svd_bases_path or self.config.raw.get("svd_bases_path"))

    def set_lora_strength(self, strength: float, lora_index: int | None = None) -> None:
        """Strength of all LoRAs, or of one; 0.0 disables a LoRA without unloading it."""
        self.lora.set_strength(strength, lora_index)

    def lora_strengths(self) -> list[float]:
        return self.lora.strengths()

    def unload_lora(self) -> None:
        """Remove every LoRA, restoring the base weights bit for bit."""
        self.lora.unload()

    def merge_lora(self) -> None:
        """Fold the LoRAs (at their current strengths) into the weights for speed; `unmerge_lora`
        restores the exact unmerged state."""
        self.lora.merge()

    def unmerge_lora(self) -> None:
        self.lora.unmerge()

    def set_lora_interval(self, low: float, high: float, lora_index: int | None = None) -> None:
        """Apply the LoRA(s) only at noise levels in [low, high] (1 = pure noise); (0, 1) = always."""
        self.lora.set_interval(low, high, lora_index)

    def set_lora_layers(
        self,
        include: Sequence[str] | str | None = None,
        exclude: Sequence[str] | str | None = None,
        lora_index: int | None = None,
    ) -> None:
        """Restrict the LoRA(s) to layers matching the official include/exclude patterns."""
        self.lora.set_layers(include, exclude, lora_index)

    def _enter_level(self, level: float) -> None:
        if self.lora.enter_level(level):
            parametrize._cache.clear()  # cached weights were made for the previous set of adapters

    def _weights_changed(self) -> None:
        """Captured graphs read weights by address: drop them when weights may have moved."""
        if self._step_graphs is not None:
            self._step_graphs.clear()

    # ------------------------------------------------------------------ generation
    def condition(
        self, prompts: Sequence[str], negative_prompts: Sequence[str] | None, durations: Sequence[float]
    ) -> Conditioning:
        """The DiT conditioning of these prompts (and negative prompts) and durations."""
        cfg, cond = self.config, self.networks.conditioners
        negatives = None if negative_prompts is None else tuple(negative_prompts)
        return condition(
            cond[cfg.prompt.id],
            cond[cfg.seconds.id],
            tuple(prompts),
            negatives,
            tuple(durations),
            self.device,
            self.dtype,
        )

    def _components(self) -> Components:
        graphs = self._step_graphs
        if graphs is not None and self.lora and not self.lora.merged:
            # Unmerged LoRAs recompute their weights on the host at every generation, which a
            # captured graph would not see, so they run eagerly.
            warn_caller(
                "CUDA graphs are not used while LoRAs are loaded unmerged (merge_lora() makes them usable)"
            )
            graphs = None
        n = self.networks.conditioners
        return Components(
            self.config,
            self.dit,
            n[self.config.prompt.id],
            n[self.config.seconds.id],
            self.autoencoder,
            self.device,
            self.dtype,
            graphs,
            self._enter_level if self.lora.scheduled else None,
        )

    def generate(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        duration: float | Sequence[float] | None = None,
        steps: int = 8,
        cfg_scale: float | None = None,
        seed: int | Sequence[int] | None = -1,
        batch_size: int | None = None,
        *,
        apg_scale: float | None = None,
        duration_padding_sec: float = 6.0,
        sample_size: int | None = None,
        chunked_decode: bool | None = None,
        return_latents: bool = False,
        truncate_output_to_duration: bool = True,
        sampler: str | None = None,
        sigmas: torch.Tensor | Sequence[float] | Sequence[Sequence[float]] | None = None,
        sampling_shift: dict[str, Any] | str | None = None,
        cfg_interval: tuple[float, float] | None = None,
        cfg_norm_threshold: float = 0.0,
        scale_phi: float = 0.0,
        callback: Callable[[StepInfo], None] | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
        init_audio: Any = None,
        init_noise_level: float = 1.0,
        inpaint_audio: Any = None,
        inpaint_mask: Any = None,
        inpaint_mask_start_seconds: float | Sequence[float] | None = None,
        inpaint_mask_end_seconds: float | Sequence[float] | None = None,
        lora_strength: float | Sequence[float] | None = None,
        decode_all_latents: bool = False,
    ) -> torch.Tensor:
        """Generate audio (B, 2, samples) float32 in [-1, 1], or latents with `return_latents`.

        Per-item lists are accepted for `prompt`, `negative_prompt`, `duration` (None: 30 s, at most
        the maximum) and `seed` (item i is what a batch-1 call with `seed[i]` makes). `seed=-1` draws a
        random seed; the one used is in `model.last_record.seed` (`.item_seeds` for a list).
        `cfg_scale` / `cfg_interval` / `apg_scale` None: the folder's `generation_config.json`, else
        1.0 / (0, 1) / 1.0 (`apg_scale` 1: adaptive projected guidance, 0: plain CFG).
        `callback(StepInfo)` runs after every sampler step; `cancel` (an Event or a callable) aborts
        with `GenerationCancelled`. `sigmas` overrides the schedule (steps + 1 values ending at 0, one
        row for all items or one per item). `sampling_shift` replaces the checkpoint's schedule shift
        (official `sampling_distribution_shift_options`, e.g. `{"type": "logsnr", "rate": 0.0}`, or
        "none").

        Editing: `init_audio` (+ `init_noise_level`, 1.0 = pure generation, 0.1 = close variation)
        starts from noised source latents with a schedule that begins exactly at that level;
        `inpaint_audio` with `inpaint_mask_start_seconds` / `inpaint_mask_end_seconds` (floats for
        one region, equal-length lists for several) or a prebuilt `inpaint_mask` (1 = keep)
        regenerates only the regions. Continuation: a `duration` longer than the source with a
        region from the source's end. Audio inputs: a path, `(waveform, rate)` or `(rate,
        waveform)`, numpy or torch, mono or stereo, any sample rate.

        `lora_strength`: strength for this call only (one number for all loaded LoRAs, or one per
        LoRA); the model's strengths are restored afterwards.

        Decoding skips latents whose audio is truncated or silenced anyway; `decode_all_latents=True`
        decodes every frame with the reference's chunk plan (same output up to float rounding, and the
        reference's decoder-noise stream for checkpoints with stochastic decoding).
        """
        arguments = {k: v for k, v in locals().items() if k != "self"}
        arguments = fill_defaults(arguments, self.generation_defaults)
        lora_strength = arguments.pop("lora_strength")
        request = GenerationRequest.check_inputs(self.config, self.device, arguments)
        lora_call = self.lora.strength_for_call(lora_strength)
        with torch.inference_mode(), self._lock, lora_call, parametrize.cached():
            try:
                output, record = run_generation(self._components(), request)
            except (RuntimeError, MemoryError) as err:
                oom = as_out_of_memory(err, f"{request.batch} item(s) of up to {max(request.durations):g} s")
                if oom is None:
                    raise
                raise oom from None
            finally:
                self.lora.reset_levels()
        self.last_record = record
        return output

    def check_arguments(self, **arguments: Any) -> None:
        """Check `generate()` arguments without generating: raises the error `generate()` would (what
        a server does when it accepts a job). `lora_strength` is checked when the call runs."""
        arguments.pop("lora_strength", None)
        bound = inspect.signature(StableAudioModel.generate).bind(self, **arguments)
        bound.apply_defaults()
        arguments = fill_defaults(dict(bound.arguments), self.generation_defaults)
        GenerationRequest.check_inputs(self.config, self.device, arguments)
