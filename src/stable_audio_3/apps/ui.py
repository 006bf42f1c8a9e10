"""`stable-audio-ui`: a local Gradio interface over the public API (`pip install ".[ui]"`).

It binds 127.0.0.1 unless asked otherwise and never opens a share link by itself; the model loads once
and requests queue (bounded) for it. Every result is written with its record (as the CLI writes it)
into a private temporary folder that only this app serves.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["build_app", "main", "parse_regions"]


def parse_regions(text: str) -> tuple[list[float], list[float]]:
    """`"2-6, 14-18"` -> ([2, 14], [6, 18]); a ValueError names what cannot be read."""
    starts, ends = [], []
    for part in [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]:
        try:
            start, end = (float(v) for v in part.split("-"))
        except ValueError:
            raise ValueError(f"inpaint regions: {part!r} is not START-END in seconds") from None
        starts.append(start)
        ends.append(end)
    if not starts:
        raise ValueError("inpaint regions: give at least one START-END region, e.g. 2-6, 14-18")
    return starts, ends


def spectrogram(audio: Any, size: tuple[int, int] = (512, 160)) -> Any:
    """A log-magnitude spectrogram of (channels, samples) audio as a PIL image (low pitch at the bottom)."""
    import numpy as np
    import torch
    from PIL import Image

    mono = audio.float().mean(0)
    if mono.numel() < 512:
        mono = torch.nn.functional.pad(mono, (0, 512 - mono.numel()))
    spec = torch.stft(mono, 512, 128, window=torch.hann_window(512), return_complex=True).abs()
    db = 20 * torch.log10(spec + 1e-6)
    db = ((db - (db.max() - 80)).clamp(min=0) / 80).flip(0).numpy()
    colour = np.stack([db**0.6, db**1.8, 0.35 + 0.4 * db * (1 - db)], axis=-1)
    return Image.fromarray((colour.clip(0, 1) * 255).astype("uint8")).resize(size)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a list of numbers") from None


class _Session:
    """The loaded model, the cancel signal and the folder results are written to."""

    def __init__(self, model: Any, name: str) -> None:
        self.model, self.name = model, name
        self.cancel = threading.Event()
        self.folder = Path(tempfile.mkdtemp(prefix="stable-audio-ui-"))
        self.count = 0

    def arguments(self, v: dict[str, Any]) -> dict[str, Any]:
        """generate() arguments from the form's values (errors name the control)."""
        args: dict[str, Any] = {
            "prompt": v["prompt"],
            "negative_prompt": v["negative_prompt"] or None,
            "duration": float(v["duration"]),
            "steps": int(v["steps"]),
            "cfg_scale": float(v["cfg_scale"]),
            "seed": int(v["seed"]),
            "batch_size": int(v["batch_size"]),
            "apg_scale": float(v["apg_scale"]),
            "cfg_interval": (float(v["cfg_min"]), float(v["cfg_max"])),
            "scale_phi": float(v["cfg_rescale"]),
            "cfg_norm_threshold": float(v["cfg_norm_threshold"]),
            "duration_padding_sec": float(v["duration_padding"]),
            "sampler": v["sampler"] or None,
            "truncate_output_to_duration": False,
        }
        if v["init_audio"]:
            args.update(init_audio=v["init_audio"], init_noise_level=float(v["init_noise_level"]))
        if v["inpaint_audio"]:
            starts, ends = parse_regions(v["inpaint_regions"])
            args.update(
                inpaint_audio=v["inpaint_audio"],
                inpaint_mask_start_seconds=starts,
                inpaint_mask_end_seconds=ends,
            )
        return args

    def apply_loras(self, files: list[str] | None, strengths: str, intervals: str, include: str) -> None:
        model = self.model
        model.unload_lora()
        if not files:
            return
        model.load_lora(list(files))
        values = _floats(strengths, "LoRA strengths") if strengths.strip() else []
        for i in range(len(files)):
            if values:
                model.set_lora_strength(values[i] if len(values) > 1 else values[0], lora_index=i)
            if intervals.strip():
                low, high = _floats(intervals.replace(":", " "), "LoRA interval")[:2]
                model.set_lora_interval(low, high, lora_index=i)
            if include.strip():
                model.set_lora_layers(include=include, lora_index=i)


def _run(session: _Session, v: dict[str, Any], preview_every: int, progress: Any):
    """Generate in a worker thread; yield (status, preview) while sampling, then the result."""
    from stable_audio_3.apps.outputs import plan_outputs, write_outputs

    session.cancel.clear()
    args = session.arguments(v)
    session.apply_loras(v["lora_files"], v["lora_strengths"], v["lora_interval"], v["lora_include"])
    events: queue.Queue = queue.Queue()
    model = session.model

    def callback(info: Any) -> None:
        progress((info.step + 1, info.steps), desc="sampling")
        if preview_every and (info.step + 1) % preview_every == 0:
            events.put(("preview", info.denoised[:1].detach().clone(), info.step + 1))

    def work() -> None:
        try:
            events.put(
                ("done", model.generate(**args, callback=callback, cancel=session.cancel, progress=False))
            )
        except Exception as err:  # noqa: BLE001 - reported to the page as one line
            events.put(("error", err))

    threading.Thread(target=work, daemon=True).start()
    while True:
        kind, *payload = events.get()
        if kind == "preview":
            latents, step = payload
            audio = model.autoencoder.decode(latents.to(next(model.autoencoder.parameters()).dtype))
            yield f"step {step}/{args['steps']}", spectrogram(audio[0].float().cpu()), None, None, None, None
        elif kind == "error":
            raise payload[0]
        else:
            break
    audio = payload[0]
    session.count += 1
    plan = plan_outputs(
        str(session.folder / f"result_{session.count}.{v['format']}"),
        len(audio),
        None,
        model.sample_rate,
        overwrite=False,
    )
    record = _record(session, args, v)
    cut = (
        [float(v["duration"])] * len(audio)
        if v["cut"]
        else [audio.shape[-1] / model.sample_rate] * len(audio)
    )
    paths = write_outputs(plan, audio, model.sample_rate, cut, record, None)
    first = audio[0, :, : int(cut[0] * model.sample_rate)].float().cpu()
    files = [str(p) for p in paths] + [str(plan.sidecar(p)) for p in paths]
    shown = plan.sidecar(paths[0]).read_text()  # the first item's record, as written beside it
    yield (
        f"seed {record['seed']}",
        spectrogram(first),
        str(paths[0]),
        shown,
        files,
        str(paths[0]),
    )


def _record(session: _Session, args: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    import torch

    from stable_audio_3 import __version__

    rec = session.model.last_record.to_dict()
    loras = [
        {"path": p, "strength": s}
        for p, s in zip(v["lora_files"] or [], session.model.lora_strengths(), strict=False)
    ]
    return {
        "model": session.name,
        "revision": None,
        "arguments": {**args, "seed": rec["seed"]},
        "loras": loras,
        "seed": rec["seed"],
        "record": rec,
        "versions": {"stable_audio_3": __version__, "torch": torch.__version__},
    }


FIELDS = (
    "prompt",
    "negative_prompt",
    "duration",
    "steps",
    "cfg_scale",
    "seed",
    "batch_size",
    "sampler",
    "cfg_min",
    "cfg_max",
    "cfg_rescale",
    "cfg_norm_threshold",
    "apg_scale",
    "duration_padding",
    "lora_files",
    "lora_strengths",
    "lora_interval",
    "lora_include",
    "format",
    "cut",
    "init_audio",
    "init_noise_level",
    "inpaint_audio",
    "inpaint_regions",
)


def _controls(gr: Any, model: Any) -> dict[str, Any]:
    """The official interface's controls, grouped as it groups them."""
    post_trained = model.config.diffusion.objective == "rf_denoiser"
    note = " (post-trained checkpoints are distilled for CFG 1: no effect there)" if post_trained else ""
    c: dict[str, Any] = {}
    c["prompt"] = gr.Textbox(label="Prompt", lines=2, elem_id="prompt")
    c["negative_prompt"] = gr.Textbox(label="Negative prompt" + note, elem_id="negative_prompt")
    with gr.Row():
        c["duration"] = gr.Slider(
            0.5,
            model.max_duration,
            value=min(10.0, model.max_duration),
            step=0.5,
            label="Duration (s)",
            elem_id="duration",
        )
        c["steps"] = gr.Slider(1, 100, value=8, step=1, label="Steps", elem_id="steps")
        c["cfg_scale"] = gr.Slider(0.0, 15.0, value=1.0, step=0.1, label="CFG scale" + note)
        c["seed"] = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
        c["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size")
    with gr.Accordion("Sampler parameters", open=False):
        c["sampler"] = gr.Dropdown(
            ["", "pingpong", "euler", "dpmpp"], value="", label="Sampler (empty = the checkpoint's)"
        )
        with gr.Row():
            c["cfg_min"] = gr.Number(value=0.0, label="CFG interval min")
            c["cfg_max"] = gr.Number(value=1.0, label="CFG interval max")
            c["cfg_rescale"] = gr.Slider(0.0, 1.0, value=0.0, label="CFG rescale")
            c["cfg_norm_threshold"] = gr.Number(value=0.0, label="CFG norm threshold")
            c["apg_scale"] = gr.Slider(0.0, 1.0, value=1.0, label="APG scale")
            c["duration_padding"] = gr.Number(value=6.0, label="Duration padding (s)")
    with gr.Accordion("LoRA", open=False):
        c["lora_files"] = gr.File(file_count="multiple", type="filepath", label="LoRA files")
        with gr.Row():
            c["lora_strengths"] = gr.Textbox(label="Strengths (one, or one per LoRA)", value="1.0")
            c["lora_interval"] = gr.Textbox(label="Noise-level interval LOW:HIGH", value="0:1")
            c["lora_include"] = gr.Textbox(label="Layer filter (official include patterns)")
    with gr.Accordion("Output parameters", open=False):
        c["format"] = gr.Dropdown(["wav", "flac", "ogg"], value="wav", label="File format")
        c["cut"] = gr.Checkbox(value=True, label="Cut to seconds total")
    with gr.Accordion("Init audio (audio-to-audio)", open=False):
        c["init_audio"] = gr.Audio(type="filepath", label="Init audio", elem_id="init_audio")
        c["init_noise_level"] = gr.Slider(
            0.01, 1.0, value=0.9, label="Init noise level", elem_id="init_noise"
        )
    with gr.Accordion("Inpainting and continuation", open=False):
        c["inpaint_audio"] = gr.Audio(type="filepath", label="Inpaint audio", elem_id="inpaint_audio")
        c["inpaint_regions"] = gr.Textbox(
            label="Regions to regenerate (s), e.g. 2-6, 14-18", elem_id="inpaint_regions"
        )
    return c


def build_app(model: Any, name: str, preview_every: int = 2) -> Any:
    """The Blocks app for one loaded model."""
    import gradio as gr

    session = _Session(model, name)
    with gr.Blocks(title="Stable Audio 3") as app:
        gr.Markdown(f"## Stable Audio 3 — `{name}`")
        with gr.Row():
            with gr.Column(scale=3):
                c = _controls(gr, model)
            with gr.Column(scale=2):
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", elem_id="cancel")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                image = gr.Image(label="Spectrogram", type="pil", interactive=False)
                audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="result")
                record = gr.Textbox(label="Generation record", lines=8, interactive=False, elem_id="record")
                files = gr.File(label="Download audio and records", file_count="multiple", interactive=False)
                last = gr.State(None)
                with gr.Row():
                    to_init = gr.Button("Send to init audio", elem_id="send_init")
                    to_inpaint = gr.Button("Send to inpaint audio", elem_id="send_inpaint")

        def run(*values: Any, progress: gr.Progress = gr.Progress()):  # noqa: B008 - Gradio's idiom
            form = dict(zip(FIELDS, values, strict=True))
            try:
                yield from _run(session, form, preview_every, progress)
            except Exception as err:  # noqa: BLE001 - one readable line on the page
                message = " ".join(str(err).split()) or type(err).__name__
                yield f"error: {message}", None, None, None, None, None

        generate.click(
            run, [c[f] for f in FIELDS], [status, image, audio, record, files, last], concurrency_limit=1
        )
        cancel.click(lambda: session.cancel.set(), None, None, queue=False)
        to_init.click(lambda p: p, last, c["init_audio"])
        to_inpaint.click(lambda p: p, last, c["inpaint_audio"])
    app.session = session
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stable-audio-ui", description="A local web UI for Stable Audio 3.")
    p.add_argument("--model", default="small-music", help="registry name or local checkpoint directory")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1 = this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require a login")
    p.add_argument("--queue-size", type=int, default=8, help="requests waiting at most")
    args = p.parse_args(argv)
    if args.auth is not None and ":" not in args.auth:
        print("stable-audio-ui: error: --auth takes USER:PASS", file=sys.stderr)
        return 2
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(
            'stable-audio-ui: error: the UI needs gradio: pip install "stable-audio-3[ui]"', file=sys.stderr
        )
        return 2
    from stable_audio_3 import StableAudioModel

    try:
        model = StableAudioModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"stable-audio-ui: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    app = build_app(model, args.model)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    app.queue(max_size=args.queue_size).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        allowed_paths=[str(app.session.folder)],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
