"""The Gradio UI in a real browser (Debian's chromium driven by Playwright) on the tiny fixture model:
text-to-audio, two-region inpainting, "send to init audio" then audio-to-audio, and cancel."""

from __future__ import annotations

import json
import os
import queue
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium binary", allow_module_level=True)

from conftest import checkpoint_dir  # noqa: E402

from stable_audio_3 import StableAudioModel  # noqa: E402
from stable_audio_3.apps.ui import _next_event, build_app, parse_regions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # a browser and a server: minutes on 2 cores, not the everyday loop
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PORT = 7871
SR = 6000


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    app = build_app(model, "tiny-A", preview_every=1)
    app.queue(max_size=4).launch(
        server_name="127.0.0.1",
        server_port=PORT,
        prevent_thread_lock=True,
        allowed_paths=[str(app.session.folder)],
    )
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1700})
        pg.goto(f"http://127.0.0.1:{PORT}", wait_until="domcontentloaded")
        pg.wait_for_selector("#prompt textarea", timeout=60_000)
        yield pg
        browser.close()
    app.close()


def _set_number(page, elem: str, value: float) -> None:
    """Type a number into a slider's box and wait until the page's state holds it.

    The state (what a click sends) has taken the value once the slider's range input shows it.
    Under load that lags the typed number, and CI once saw it not arrive in 10 s at all, just after
    an accordion opened and "send to init audio" filled the component above; so the number is
    typed again, as a user would, until the range input shows it.
    """
    box = page.locator(f"#{elem} input[type=number]")
    shows = (
        "([id, v]) => { const r = document.querySelector(`#${id} input[type=range]`);"
        " return !!r && Math.abs(parseFloat(r.value) - v) < 1e-9; }"
    )
    for _ in range(4):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        try:
            page.wait_for_function(shows, arg=[elem, value], timeout=5_000)
            return
        except playwright.TimeoutError:
            pass
    seen = page.evaluate("id => [...document.querySelectorAll(`#${id} input`)].map(i => i.value)", elem)
    raise AssertionError(f"the #{elem} slider never showed {value}; its inputs hold {seen}")


def _generate(page, previous: str | None = None) -> dict:
    page.locator("#generate").click()
    page.wait_for_function(
        "prev => { const t = document.querySelector('#record textarea');"
        " return t && t.value.includes('seed') && t.value !== prev; }",
        arg=previous or "",
        timeout=90_000,
    )
    return json.loads(page.locator("#record textarea").input_value())


def _open(page, title: str) -> None:
    page.get_by_text(title, exact=True).click()


def test_text_to_audio_shows_the_result_and_its_seed(page, tmp_path) -> None:
    page.locator("#prompt textarea").fill("warm analog pad")
    _set_number(page, "duration", 1.5)
    _set_number(page, "steps", 3)
    record = _generate(page)
    assert record["arguments"]["duration"] == 1.5 and record["seed"] >= 0
    assert str(record["seed"]) in page.locator("#status textarea, #status input").first.input_value()
    audio_path = Path(record["output"]["path"])
    assert sf.info(str(audio_path)).frames == int(1.5 * SR)
    page.wait_for_selector(
        "#result audio, #result [data-testid=waveform-Result], #result .waveform-container",
        state="attached",
        timeout=30_000,
    )
    # SA3_WRITE_SCREENSHOT=1 refreshes the README's picture; otherwise it goes to a temporary folder.
    shot = ROOT / "docs" / "ui.png" if os.environ.get("SA3_WRITE_SCREENSHOT") else tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_inpainting_with_two_regions(page, tmp_path) -> None:
    t = np.arange(int(1.5 * SR)) / SR
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32)
    source = tmp_path / "source.wav"
    sf.write(str(source), wave, SR)
    previous = page.locator("#record textarea").input_value()
    _open(page, "Inpainting and continuation")
    page.locator("#inpaint_audio input[type=file]").set_input_files(str(source))
    page.locator("#inpaint_regions textarea").fill("0.25-0.6, 0.9-1.3")
    record = _generate(page, previous)
    args = record["arguments"]
    assert args["inpaint_mask_start_seconds"] == [0.25, 0.9] and args["inpaint_mask_end_seconds"] == [
        0.6,
        1.3,
    ]
    page.locator("#inpaint_regions textarea").fill("")
    page.locator("#inpaint_audio button[aria-label='Clear']").first.click()


def test_send_to_init_audio_then_audio_to_audio(page) -> None:
    previous = page.locator("#record textarea").input_value()
    page.locator("#send_init").click()
    _open(page, "Init audio (audio-to-audio)")
    page.wait_for_selector(
        "#init_audio audio, #init_audio .waveform-container", state="attached", timeout=30_000
    )
    _set_number(page, "init_noise", 0.5)
    record = _generate(page, previous)
    assert record["arguments"]["init_noise_level"] == 0.5
    assert Path(record["arguments"]["init_audio"]).name.startswith("result_")


def test_cancel_stops_a_long_run(page) -> None:
    _set_number(page, "steps", 100)
    _set_number(page, "duration", 60)
    page.locator("#generate").click()
    page.wait_for_function(
        "() => (document.querySelector('#status textarea, #status input') || {}).value?.startsWith('step')",
        timeout=60_000,
    )
    page.locator("#cancel").click()
    page.wait_for_function(
        "() => (document.querySelector('#status textarea, #status input') || {}).value"
        "?.includes('cancelled')",
        timeout=60_000,
    )


def test_a_slow_page_skips_to_the_newest_preview_or_the_end() -> None:
    events: queue.Queue = queue.Queue()
    for step in (1, 2, 3):
        events.put(("preview", None, step))
    assert _next_event(events) == ("preview", None, 3)  # stale previews are dropped
    events.put(("preview", None, 4))
    events.put(("error", "cancelled"))
    events.put(("preview", None, 5))
    assert _next_event(events) == ("error", "cancelled")  # a cancel is never queued behind previews
    assert _next_event(events) == ("preview", None, 5)


def test_regions_are_parsed_with_clear_errors() -> None:
    assert parse_regions("2-6, 14-18") == ([2.0, 14.0], [6.0, 18.0])
    for bad in ("", "2", "a-b", "1-2-3"):
        with pytest.raises(ValueError, match="inpaint regions"):
            parse_regions(bad)


def test_per_lora_controls_reach_the_model() -> None:
    from stable_audio_3.apps.ui import _Session

    lora = str(ROOT / "tests" / "fixtures" / "golden" / "lora.safetensors")
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    session = _Session(model, "tiny-A")
    session.apply_loras([lora, lora], "0.7, 0.4", "0.3:1, 0:1", "transformer.layers.0; transformer.layers.1")
    assert model.lora_strengths() == [pytest.approx(0.7), pytest.approx(0.4)]
    first, second = model.lora.settings
    assert first.interval == (0.3, 1.0) and second.interval == (0.0, 1.0)
    assert first.include == ["transformer.layers.0"] and second.include == ["transformer.layers.1"]
    with pytest.raises(ValueError, match="strengths"):
        session.apply_loras([lora, lora], "1, 2, 3", "", "")
