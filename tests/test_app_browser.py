"""``vos app`` in a real browser: Playwright driving Debian's ``chromium`` (``/usr/bin/chromium``, no
browser download) against the app served on 127.0.0.1 with a tiny random SegGPT. Open a video, import
a mask, propagate, see the overlay, export the zip.

The page's screenshot is written to the test's folder, and to ``$VOS_APP_SCREENSHOT`` when set
(``VOS_APP_SCREENSHOT=docs/app.png`` refreshes the README's picture).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
pytest.importorskip("pytest_playwright", reason="pytest-playwright is not installed (pip install playwright "
                    "pytest-playwright)")

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

from tests._app import free_port, make_clip  # noqa: E402

CONTEXT = 3
CHROMIUM = os.environ.get("VOS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's browser is Debian's chromium, headless, no download."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1100}, "accept_downloads": True}


@pytest.fixture(scope="module")
def app_url(small_hf_dir):
    from vos.app.server import launch
    from vos.app.state import AppSettings, ModelHost

    host = ModelHost(AppSettings(checkpoint=str(small_hf_dir), device="cpu", dtype="float32", context=CONTEXT))
    demo, url = launch(host, server_name="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield url
    demo.close()
    demo.vos_sessions.close_all()


def shown_image(page) -> np.ndarray:
    """The frame the page shows (its PNG, fetched as the browser does)."""
    src = page.locator("#view img").get_attribute("src")
    data = page.request.get(src).body()
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.slow
def test_open_import_propagate_review_export(page, app_url, shared_data, tmp_path):
    from pipelines.sources import open_source
    from pipelines.writers import overlay_masks
    from vos.labels import davis_palette

    video, masks = make_clip(shared_data, tmp_path / "clip", 4, (480, 270), masks=(0,))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)

    page.locator("#video-files input[type=file]").set_input_files(str(video))
    page.locator("#video-files").get_by_text("car.mp4").wait_for()
    page.locator("#open").click()
    page.locator("#info").get_by_text("4 frames, 480x270").wait_for()

    page.locator("#mask-file input[type=file]").set_input_files(str(masks[0]))
    page.locator("#mask-file").get_by_text("mask0.png").wait_for()
    page.locator("#import").click()
    page.locator("#info").get_by_text("frame 0: objects [1]").wait_for()

    page.locator("#propagate").click()
    page.locator("#status").get_by_text("4 frames in").wait_for()
    page.locator("#info").get_by_text("Results: 4/4 frames").wait_for()

    # export: the zip the browser downloads holds a palette PNG per frame and the manifest
    page.locator("#export").click()
    link = page.locator("#zip a").first
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "masks.zip"
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as z:
        assert sorted(z.namelist()) == [f"{k:05d}.png" for k in range(4)] + ["manifest.json"]
        labels = [np.array(Image.open(io.BytesIO(z.read(f"{k:05d}.png")))) for k in range(4)]
    assert np.array_equal(labels[0], np.array(Image.open(masks[0])))

    # review: the slider shows each frame with its result painted as in vos run --overlay
    with open_source(video) as src:
        rgbs = [f.rgb for f in src]
    number = page.locator("#frame input[type=number]")
    for k in (2, 0):
        expected = overlay_masks(rgbs[k], labels[k], davis_palette())
        number.fill(str(k))
        number.blur()
        for _ in range(80):
            if page.locator("#view img").count() and np.array_equal(shown_image(page), expected):
                break
            page.wait_for_timeout(250)
        assert np.array_equal(shown_image(page), expected), f"frame {k}"

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("VOS_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["VOS_APP_SCREENSHOT"])


def test_bad_file_shows_an_error_in_the_page(page, app_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    listed = page.locator("#video-files").get_by_text("notes.txt")
    for attempt in range(3):      # an upload lost on a loaded machine is given again
        page.locator("#video-files input[type=file]").set_input_files(str(notes))
        try:
            listed.wait_for(timeout=TIMEOUT_MS // 3)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    page.locator("#open").click()
    page.get_by_text("notes.txt: not a readable video").first.wait_for()
    page.locator("#info").get_by_text("No video open.").wait_for()     # the page still works
