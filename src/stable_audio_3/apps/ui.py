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

from stable_audio_3.apps.failures import OneLineParser, run_reporting
from stable_audio_3.apps.ui_controls import FIELDS, controls

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


def _shift(text: str) -> dict[str, Any] | str | None:
    import json

    text = (text or "").strip()
    if not text or text == "none":
        return text or None
    try:
        options = json.loads(text)
    except ValueError:
        raise ValueError(f"schedule shift: {text!r} is not JSON (or empty, or none)") from None
    if not isinstance(options, dict):
        raise ValueError("schedule shift: give a JSON object of shift options")
    return options


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
            "sampling_shift": _shift(v["schedule_shift"]),
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

    def apply_loras(self, files: list[str] | None, strengths: str, intervals: str, layers: str) -> None:
        """Load the form's LoRA files; strengths and intervals are comma separated, layer filters
        separated by `;` (one value for all LoRAs, or one per LoRA)."""
        model = self.model
        model.unload_lora()
        if not files:
            return
        model.load_lora(list(files))
        count = len(files)
        values = _per_lora(
            _floats(strengths, "LoRA strengths") if strengths.strip() else [], count, "strengths"
        )
        spans = _per_lora([t for t in intervals.split(",") if t.strip()], count, "intervals")
        filters = _per_lora([t for t in layers.split(";") if t.strip()], count, "layer filters")
        for i in range(count):
            if values[i] is not None:
                model.set_lora_strength(values[i], lora_index=i)
            if spans[i] is not None:
                low, high = (_floats(spans[i].replace(":", " "), "LoRA interval") + [1.0, 1.0])[:2]
                model.set_lora_interval(low, high, lora_index=i)
            if filters[i] is not None:
                model.set_lora_layers(include=filters[i], lora_index=i)


def _per_lora(values: list, count: int, what: str) -> list:
    if not values:
        return [None] * count
    if len(values) not in (1, count):
        raise ValueError(f"LoRA {what}: {len(values)} values for {count} LoRA file(s)")
    return values * count if len(values) == 1 else values


def _next_event(events: queue.Queue) -> tuple:
    """The next event worth showing: the newest preview waiting, or the result or error as soon as
    it is queued. Decoding a preview can be slower than a sampling step; shown one by one, the
    previews would leave the page, and a cancel's message, further and further behind."""
    event = events.get()
    while event[0] == "preview":
        try:
            event = events.get_nowait()
        except queue.Empty:
            break
    return event


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
        kind, *payload = _next_event(events)
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

    model = session.model
    rec = model.last_record.to_dict()
    loras = [
        {
            "path": p,
            "strength": s,
            "interval": list(st.interval),
            "include": st.include,
            "exclude": st.exclude,
        }
        for p, s, st in zip(v["lora_files"] or [], model.lora_strengths(), model.lora.settings, strict=False)
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


def build_app(model: Any, name: str, preview_every: int = 2) -> Any:
    """The Blocks app for one loaded model."""
    import gradio as gr

    session = _Session(model, name)
    with gr.Blocks(title="Stable Audio 3") as app:
        gr.Markdown(f"## Stable Audio 3 — `{name}`")
        with gr.Row():
            with gr.Column(scale=3):
                c = controls(gr, model)
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
    p = OneLineParser(prog="stable-audio-ui", description="A local web UI for Stable Audio 3.")
    p.add_argument(
        "--model",
        default=None,
        help="registry name (small-music, medium, ...) or local checkpoint directory "
        "(default: the built-in demo model)",
    )
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
    return run_reporting("stable-audio-ui", lambda: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE, StableAudioModel

    if args.model is None:
        args.model = DEMO_MODEL
        print(f"stable-audio-ui: {DEMO_NOTICE}", file=sys.stderr, flush=True)
    model = StableAudioModel.from_pretrained(args.model, device=args.device, dtype=args.dtype)
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
