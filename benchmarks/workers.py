"""One benchmark measurement in a fresh process (called by bench.py); prints one JSON line.

python benchmarks/workers.py ours|reference CKPT DURATION [--steps 8] [--repeats 3] [--warmup 0]
    [--device cpu] [--reference PATH] [--mode exact|fast] [--dtype D] [--cuda-graphs] [--compile]

Peak memory is the process's peak RSS on CPU and the peak memory allocated by PyTorch on CUDA.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import types
from pathlib import Path


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device.startswith("mps"):
        torch.mps.synchronize()


def _time_calls(generate, args: argparse.Namespace) -> tuple[list[float], list, dict]:
    """`args.warmup` untimed then `args.repeats` timed calls of `generate(seed)` (seed = call index),
    each waited for on the device. Returns the timed walls, what every call returned (warm-up
    included), and on CUDA the peak allocated memory of the timed calls."""
    import torch

    cuda = args.device.startswith("cuda")
    walls, results = [], []
    for r in range(args.warmup + args.repeats):
        if cuda and r == args.warmup:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        results.append(generate(r))
        _sync(args.device)
        if r >= args.warmup:
            walls.append(time.perf_counter() - t0)
    memory = {}
    if cuda:
        memory = {"peak_gpu_allocated_gb": torch.cuda.max_memory_allocated() / 1024**3,
                  "gpu": torch.cuda.get_device_name()}  # fmt: skip
    return walls, results, memory


def _ours(args: argparse.Namespace) -> dict:
    import torch

    from stable_audio_3 import StableAudioModel

    t0 = time.perf_counter()
    model = StableAudioModel.from_pretrained(args.ckpt, device=args.device, dtype=args.dtype)
    _sync(args.device)
    load = time.perf_counter() - t0
    if args.compile:
        model.compile()
    if args.cuda_graphs:
        model.cuda_graphs = True
    extra: dict = {}
    call = {"duration": args.duration, "steps": args.steps, "progress": False}
    if args.mode == "fast":
        # SNR of the sampled latents: with random weights the decoded audio saturates at the +-1 clamp,
        # which would hide the error.
        exact = model.generate("a benchmark prompt", **call, seed=0, return_latents=True)
        model.enable_cpu_int8()
        fast = model.generate("a benchmark prompt", **call, seed=0, return_latents=True)
        extra["snr_db_vs_exact"] = float(10 * torch.log10(exact.pow(2).sum() / (fast - exact).pow(2).sum()))

    def generate(seed: int) -> dict:
        model.generate("a benchmark prompt", **call, seed=seed)
        return model.last_record.timings

    walls, results, memory = _time_calls(generate, args)
    extra.update(memory, text_encoding_s=results[0]["conditioning"])  # then cached across calls
    timings = results[args.warmup :]
    best = timings[walls.index(statistics.median_low(walls))]
    if model.device.type == "cpu" and args.mode == "exact" and model.dtype == torch.float32:
        flops = args.steps * dit_flops(model, model.last_record.latent_length)
        own = args.steps * dit_flops(model, model.last_record.latent_length, per_step_only=True)
        rate = gemm_rate()
        extra.update(
            dit_flops=flops,
            dit_flops_computed=own,
            gemm_flops_per_s=rate,
            dit_time_over_floor=best["sampling"] / (flops / rate),
            dit_time_over_own_floor=best["sampling"] / (own / rate),
        )
    return {"wall_s": statistics.median(walls), "walls_s": walls, "load_s": load, "timings": best, **extra}


def dit_flops(model, latent_length: int, batch: int = 1, per_step_only: bool = False) -> float:
    """Multiply-add FLOPs (x2) of one DiT forward: every linear on the tokens it sees, plus attention,
    as the reference computes it; `per_step_only` leaves out what we compute once per generation (the
    cross-attention keys/values and the local-add MLP, a single frame in text-to-audio)."""
    cfg = model.config.diffusion.dit
    e, n, ctx = cfg.embed_dim, latent_length + cfg.num_memory_tokens, 257
    n_q = 2 if cfg.differential else 1
    ff = int(e * cfg.ff_mult)
    per_token = (
        e * e * (2 * n_q + 1) + e * e + e * e * n_q + e * e + 2 * ff * e + ff * e
    )  # qkv, out, cross q/out, ff
    per_block = 2 * per_token * n
    if not per_step_only:
        per_block += 2 * (n_q + 1) * e * e * ctx  # cross k/v on the context
        per_block += 2 * (cfg.local_add_cond_dim * e + e * e) * latent_length  # local-add MLP
    per_block += n_q * (4 * n * n * e + 4 * n * ctx * e)  # self and cross attention matmuls
    io = cfg.io_channels
    outer = 2 * latent_length * (2 * io * io + 2 * io * e)  # pre/post convs, project in/out
    return batch * (cfg.depth * per_block + outer)


def gemm_rate() -> float:
    """This machine's best float32 GEMM rate (FLOP/s) on a 2048^3 product with the threads in use:
    the faster of PyTorch's default (`torch.mm`, MKL) and oneDNN, which our linear layers use."""
    import torch

    from stable_audio_3.models.kernels import onednn_linear_available

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    candidates = [lambda: a @ b]
    if onednn_linear_available():
        candidates.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    best = 0.0
    for product in candidates:
        for _ in range(2):
            product()
        t0, reps = time.perf_counter(), 8
        for _ in range(reps):
            product()
        best = max(best, 2 * 2048**3 * reps / (time.perf_counter() - t0))
    return best


def _torchaudio_stand_in() -> None:
    """The reference imports torchaudio at module level but none of the timed paths calls it (no
    resampling happens at the model rate); there is no CPU torchaudio build here."""
    import importlib.machinery

    mod = types.ModuleType("torchaudio")
    mod.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    mod.transforms = types.ModuleType("torchaudio.transforms")
    mod.functional = types.ModuleType("torchaudio.functional")

    def unavailable(*_, **__):
        raise RuntimeError("torchaudio is not available in this benchmark environment")

    for name in ("load", "save", "info"):
        setattr(mod, name, unavailable)
    for name in ("Resample", "Loudness", "MelSpectrogram", "Spectrogram"):
        setattr(mod.transforms, name, unavailable)
    mod.functional.resample = unavailable
    sys.modules.update({"torchaudio": mod, "torchaudio.transforms": mod.transforms,
                        "torchaudio.functional": mod.functional})  # fmt: skip


def _reference(args: argparse.Namespace) -> dict:
    _torchaudio_stand_in()
    ref, ckpt, device = args.reference, Path(args.ckpt), args.device
    for name in [m for m in sys.modules if m == "stable_audio_3" or m.startswith("stable_audio_3.")]:
        del sys.modules[name]
    sys.path.insert(0, ref)
    from stable_audio_3.loading_utils import load_diffusion_cond

    from stable_audio_3.model import StableAudioModel as Reference

    if not Path(sys.modules["stable_audio_3"].__file__).resolve().is_relative_to(Path(ref).resolve()):
        raise RuntimeError("the reference package did not shadow ours")
    half = args.dtype == "float16" or (args.dtype is None and device.startswith("cuda"))
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg["model"]["conditioning"]["configs"][0]["config"]["model_path"] = str(ckpt)
    t0 = time.perf_counter()
    wrapper = load_diffusion_cond(cfg, str(ckpt / "model.safetensors"), device=device, model_half=half)
    wrapper.use_lora, wrapper.lora_names = False, []
    model = Reference(wrapper, cfg, device, half)
    _sync(device)
    load = time.perf_counter() - t0

    def generate(seed: int) -> None:
        model.generate(prompt="a benchmark prompt", duration=args.duration, steps=args.steps, seed=seed,
                       sample_size=cfg["sample_size"], disable_tqdm=True)  # fmt: skip

    walls, _, memory = _time_calls(generate, args)
    return {"wall_s": statistics.median(walls), "walls_s": walls, "load_s": load, "timings": {}, **memory}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("impl", choices=["ours", "reference"])
    p.add_argument("ckpt")
    p.add_argument("duration", type=float)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0, help="untimed generations first (GPU: kernel set-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reference", default=None, help="reference source checkout (impl=reference)")
    p.add_argument("--mode", choices=["exact", "fast"], default="exact")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--cuda-graphs", action="store_true")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)
    if args.impl == "reference" and not args.reference:
        p.error("impl=reference needs --reference PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = _ours(args) if args.impl == "ours" else _reference(args)
    out["peak_rss_gb"] = _peak_rss_gb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
