"""``vos app`` through its named API with ``gradio_client`` (the app served on 127.0.0.1 at a free port,
a tiny random SegGPT): the result of /open_video, /add_mask and /propagate equals ``vos run`` with the
same masks, PNG for PNG; two clients at once stay apart; each bad input gives an error and leaves the
session usable."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed")

from gradio_client import Client, handle_file  # noqa: E402

from tests._app import free_port, make_clip  # noqa: E402
from vos.cli import main as vos_main  # noqa: E402

CONTEXT = 3          # prompts per frame in every app test (vos run gets the same)


@pytest.fixture(scope="module")
def app(small_hf_dir):
    """``(url, host, demo)`` of the app served for this module's tests."""
    from vos.app.server import launch
    from vos.app.state import AppSettings, ModelHost

    host = ModelHost(AppSettings(checkpoint=str(small_hf_dir), device="cpu", dtype="float32", context=CONTEXT))
    demo, url = launch(host, server_name="127.0.0.1", port=free_port(), block=False, quiet=True)
    yield url, host, demo
    demo.close()
    demo.vos_sessions.close_all()


@pytest.fixture(scope="module")
def app_url(app):
    return app[0]


def vos_run(checkpoint, video: Path, masks: dict[int, Path], out: Path) -> Path:
    argv = ["run", str(video), "--checkpoint", str(checkpoint), "--device", "cpu", "--dtype", "float32",
            "--context", str(CONTEXT), "--output", str(out), "--name", "ref", "--quiet"]
    for k, m in masks.items():
        argv += ["--mask", f"{k}:{m}"]
    assert vos_main(argv) == 0
    return out / "ref"


def assert_zip_equals_run(zip_path, ref: Path, frames: int) -> dict:
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
        assert names == [f"{k:05d}.png" for k in range(frames)] + ["manifest.json"]
        for k in range(frames):
            data = z.read(f"{k:05d}.png")
            expected = (ref / f"{k:05d}.png").read_bytes()
            a, b = np.array(Image.open(io.BytesIO(data))), np.array(Image.open(ref / f"{k:05d}.png"))
            assert np.array_equal(a, b), f"frame {k}"
            assert data == expected, f"frame {k}: same labels, other bytes"
            assert Image.open(io.BytesIO(data)).mode == "P"
        return json.loads(z.read("manifest.json"))


@pytest.mark.slow
def test_masks_propagate_correct_export_equal_vos_run(app_url, small_hf_dir, shared_data, tmp_path):
    video, masks = make_clip(shared_data, tmp_path / "clip", 6, (320, 180), masks=(2, 4))
    c = Client(app_url, verbose=False)
    assert c.predict(handle_file(str(video)), api_name="/open_video") == {"frames": 6, "width": 320, "height": 180}
    assert c.predict(2, handle_file(str(masks[2])), api_name="/add_mask") == {"frame": 2, "objects": [1]}
    first = c.predict(api_name="/propagate")
    assert first["frames"] == 6 and first["seconds"] > 0
    # a correction on frame 4 after propagating: only frames 4 and 5 are done again
    assert c.predict(4, handle_file(str(masks[4])), api_name="/add_mask") == {"frame": 4, "objects": [1]}
    assert c.predict(api_name="/propagate")["frames"] == 2
    assert c.predict(api_name="/propagate")["frames"] == 0          # nothing pending
    ref = vos_run(small_hf_dir, video, masks, tmp_path / "out")
    manifest = assert_zip_equals_run(c.predict(api_name="/export"), ref, 6)
    expected = json.loads((ref / "manifest.json").read_text())
    assert manifest["annotations"] == [{"frame": a["frame"], "objects": a["objects"]}
                                       for a in expected["annotations"]]
    assert [f["pts"] for f in manifest["frame_list"]] == [f["pts"] for f in expected["frame_list"]]
    assert manifest["settings"]["context"] == CONTEXT and manifest["objects"] == [1]
    overlay, mask_video = c.predict(api_name="/export_videos")
    import av

    with av.open(mask_video) as f:
        labels = [np.array(fr.to_ndarray()) for fr in f.decode(video=0)]
    assert len(labels) == 6 and np.array_equal(labels[3], np.array(Image.open(ref / "00003.png")))
    with av.open(overlay) as f:
        assert f.streams.video[0].codec_context.name == "h264"


@pytest.mark.slow
def test_two_clients_at_once_stay_apart(app_url, small_hf_dir, shared_data, tmp_path):
    """Two sessions propagate at the same time (their model calls interleave frame by frame); each
    gets its own video's result, equal to vos run with both masks given at once."""
    clips = {"a": make_clip(shared_data, tmp_path / "a", 4, (320, 180), masks=(0, 2)),
             "b": make_clip(shared_data, tmp_path / "b", 3, (192, 108), masks=(1,))}
    results: dict[str, object] = {}

    def session(name):
        try:
            video, masks = clips[name]
            c = Client(app_url, verbose=False)
            results[name + "_open"] = c.predict(handle_file(str(video)), api_name="/open_video")
            for k, m in masks.items():
                c.predict(k, handle_file(str(m)), api_name="/add_mask")
            results[name + "_prop"] = c.predict(api_name="/propagate")
            results[name] = c.predict(api_name="/export")
        except BaseException as exc:             # reported by the main thread
            results[name] = exc

    threads = [threading.Thread(target=session, args=(n,)) for n in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results["a_open"] == {"frames": 4, "width": 320, "height": 180}
    assert results["b_open"] == {"frames": 3, "width": 192, "height": 108}
    assert results["a_prop"]["frames"] == 4 and results["b_prop"]["frames"] == 3
    for name, frames in (("a", 4), ("b", 3)):
        assert not isinstance(results[name], BaseException), results[name]
        video, masks = clips[name]
        ref = vos_run(small_hf_dir, video, masks, tmp_path / f"out_{name}")
        assert_zip_equals_run(results[name], ref, frames)


def test_bad_input_gives_errors_and_the_session_stays_usable(app_url, shared_data, tmp_path):
    from gradio_client.exceptions import AppError

    video, masks = make_clip(shared_data, tmp_path / "clip", 3, (160, 90), masks=(0,))
    not_video = tmp_path / "notes.txt"
    not_video.write_text("not a video\n")
    wrong_size = tmp_path / "wrong.png"
    Image.open(masks[0]).resize((100, 100), Image.NEAREST).save(wrong_size)
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((90, 160), np.uint8)).save(empty)
    c = Client(app_url, verbose=False)

    def fails(match, *args, api_name):
        with pytest.raises(AppError, match=match):
            c.predict(*args, api_name=api_name)

    fails("no video open", api_name="/export")
    fails("no video open", 0, handle_file(str(masks[0])), api_name="/add_mask")
    fails("notes.txt: not a readable video", handle_file(str(not_video)), api_name="/open_video")
    assert c.predict(handle_file(str(video)), api_name="/open_video")["frames"] == 3
    fails("no mask yet", api_name="/propagate")
    fails("no result yet", api_name="/export")
    fails("wrong.png: mask is 100x100", 0, handle_file(str(wrong_size)), api_name="/add_mask")
    fails("empty.png.*no object", 0, handle_file(str(empty)), api_name="/add_mask")
    fails(r"frame 3 is outside the video \(3 frames, 0..2\)", 3, handle_file(str(masks[0])), api_name="/add_mask")
    fails("frame -1 is outside", -1, handle_file(str(masks[0])), api_name="/add_mask")
    fails("notes.txt: not a readable video", handle_file(str(not_video)), api_name="/open_video")
    # nothing was lost: the video opened before is still there and works to the end
    assert c.predict(0, handle_file(str(masks[0])), api_name="/add_mask") == {"frame": 0, "objects": [1]}
    assert c.predict(api_name="/propagate")["frames"] == 3
    with zipfile.ZipFile(c.predict(api_name="/export")) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 3


def test_stop_ends_propagate_between_frames_and_propagate_goes_on(app, shared_data, tmp_path):
    """/stop from the same client while its /propagate waits for the model: one frame is done, the
    rest comes with the next /propagate (the model lock held by the test makes it deterministic)."""
    import time

    url, host, demo = app
    video, masks = make_clip(shared_data, tmp_path / "clip", 3, (96, 54), masks=(0,))
    c = Client(url, verbose=False)
    c.predict(handle_file(str(video)), api_name="/open_video")
    c.predict(0, handle_file(str(masks[0])), api_name="/add_mask")
    assert c.predict(api_name="/stop") == {"stopping": False}
    with host.lock:
        job = c.submit(api_name="/propagate")
        deadline = time.monotonic() + 60
        while not any(s.busy.locked() for s in list(demo.vos_sessions._states)):
            assert time.monotonic() < deadline, "propagate did not start"
            time.sleep(0.05)
        assert c.predict(api_name="/stop") == {"stopping": True}
    assert job.result(timeout=120)["frames"] == 1
    assert c.predict(api_name="/propagate")["frames"] == 2
    with zipfile.ZipFile(c.predict(api_name="/export")) as z:
        assert len([n for n in z.namelist() if n.endswith(".png")]) == 3


def test_words_propose_a_mask_into_the_editor(small_hf_dir, clipseg_dir, shared_data, tmp_path):
    """The Words tab: CLIPSeg (a tiny random one) proposes one editor layer per text on the frame,
    the objects apart (how layers become ids: tests/test_app_state.py)."""
    from vos.app.server import launch
    from vos.app.state import AppSettings, ModelHost

    host = ModelHost(AppSettings(checkpoint=str(small_hf_dir), device="cpu", dtype="float32", context=CONTEXT,
                                 text_model=str(clipseg_dir)))
    demo, url = launch(host, server_name="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        video, _ = make_clip(shared_data, tmp_path / "clip", 2, (192, 108), masks=())
        c = Client(url, verbose=False)
        c.predict(handle_file(str(video)), api_name="/open_video")
        update = c.predict(1, "car, road", api_name="/ui_propose")     # the editor's new value
        assert update["layers"]["layers"] == ["object 1", "object 2"]
        layers = [np.array(Image.open(f)) for f in update["value"]["layers"]]
        assert len(layers) == 2 and all(layer.shape == (108, 192, 4) for layer in layers)
        painted = [layer[..., 3] > 127 for layer in layers]
        assert all(p.any() for p in painted) and not (painted[0] & painted[1]).any()
    finally:
        demo.close()
        demo.vos_sessions.close_all()


@pytest.mark.slow
def test_correction_in_the_editor_equals_vos_run_with_that_mask(app_url, small_hf_dir, shared_data, tmp_path):
    """Review and correct: frame 3 opens in the editor with its prediction as layers; applying them
    makes it an annotation and re-propagates frames 3 and 4 only; the result is vos run with the
    masks of frames 0 and 3 (the latter as the prediction's PNG)."""
    video, masks = make_clip(shared_data, tmp_path / "clip", 5, (192, 108), masks=(0,))
    c = Client(app_url, verbose=False)
    c.predict([handle_file(str(video))], api_name="/ui_open")       # the page's Open button
    c.predict(0, handle_file(str(masks[0])), api_name="/add_mask")
    c.predict(api_name="/propagate")
    with zipfile.ZipFile(c.predict(api_name="/export")) as z:
        before = {n: z.read(n) for n in z.namelist() if n.endswith(".png")}
    fix = tmp_path / "fix3.png"
    fix.write_bytes(before["00003.png"])
    update = c.predict(3, api_name="/ui_edit")
    assert update["layers"]["layers"] == ["object 1"]
    value = {"background": handle_file(update["value"]["background"]), "composite": None,
             "layers": [handle_file(f) for f in update["value"]["layers"]]}
    status, _, info = c.predict(3, value, api_name="/ui_apply")
    assert status.startswith("2 frames in") and "frame 3: objects [1]" in info
    after = c.predict(api_name="/export")
    with zipfile.ZipFile(after) as z:
        assert all(z.read(f"{k:05d}.png") == before[f"{k:05d}.png"] for k in range(4))
    ref = vos_run(small_hf_dir, video, {0: masks[0], 3: fix}, tmp_path / "out")
    assert_zip_equals_run(after, ref, 5)
