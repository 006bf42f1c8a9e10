"""The UI's controls, grouped as the official interface groups them; `FIELDS` is their order as the
generate handler receives them."""

from __future__ import annotations

from typing import Any

__all__ = ["FIELDS", "controls"]


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
    "schedule_shift",
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


def _guidance_defaults(model: Any) -> tuple[str, float, tuple[float, float], float]:
    """The guidance controls' note and starting values (CFG scale, interval, APG scale): the folder's
    generation_config.json, if any, else the official defaults."""
    recommended = model.generation_defaults
    note = ""
    if model.config.diffusion.objective == "rf_denoiser" and not recommended:
        note = " (post-trained checkpoints are distilled for CFG 1: no effect there)"
    cfg, interval = recommended.get("cfg_scale", 1.0), recommended.get("cfg_interval", (0.0, 1.0))
    return note, cfg, interval, recommended.get("apg_scale", 1.0)


def controls(gr: Any, model: Any) -> dict[str, Any]:
    """The official interface's controls, grouped as it groups them."""
    note, cfg, (cfg_min, cfg_max), apg = _guidance_defaults(model)
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
        c["cfg_scale"] = gr.Slider(0.0, 15.0, value=cfg, step=0.1, label="CFG scale" + note)
        c["seed"] = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
        c["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size")
    with gr.Accordion("Sampler parameters", open=False):
        c["sampler"] = gr.Dropdown(
            ["", "pingpong", "euler", "dpmpp"], value="", label="Sampler (empty = the checkpoint's)"
        )
        with gr.Row():
            c["cfg_min"] = gr.Number(value=cfg_min, label="CFG interval min")
            c["cfg_max"] = gr.Number(value=cfg_max, label="CFG interval max")
            c["cfg_rescale"] = gr.Slider(0.0, 1.0, value=0.0, label="CFG rescale")
            c["cfg_norm_threshold"] = gr.Number(value=0.0, label="CFG norm threshold")
            c["apg_scale"] = gr.Slider(0.0, 1.0, value=apg, label="APG scale")
            c["duration_padding"] = gr.Number(value=6.0, label="Duration padding (s)")
        c["schedule_shift"] = gr.Textbox(
            label='Schedule shift: empty = the checkpoint\'s, "none", or official options as JSON, '
            'e.g. {"type": "logsnr", "rate": 0.0}',
            elem_id="schedule_shift",
        )
    with gr.Accordion("LoRA", open=False):
        c["lora_files"] = gr.File(file_count="multiple", type="filepath", label="LoRA files")
        with gr.Row():
            c["lora_strengths"] = gr.Textbox(
                label="Strengths, e.g. 1.0, 0.5 (one, or one per LoRA)", value="1.0"
            )
            c["lora_interval"] = gr.Textbox(label="Noise-level intervals, e.g. 0:1, 0.3:1", value="0:1")
            c["lora_include"] = gr.Textbox(label="Layer filters (official patterns; ';' between LoRAs)")
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
