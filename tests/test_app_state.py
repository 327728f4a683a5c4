"""The state behind ``vos app`` without a server: Stop between frames and going on later equals one
uninterrupted ``vos run``; painted layers become object ids; session folders go when a session
closes or idles out; the ``vos app`` command's own checks and a real server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests._app import free_port, make_clip
from tests.conftest import REPO
from vos.app.state import AppSettings, ModelHost, VideoState, ids_from_layers
from vos.cli import main as vos_main
from vos.engine.video import run_video
from vos.errors import MaskError, UserError


@pytest.fixture(scope="module")
def host(small_hf_dir):
    return ModelHost(AppSettings(checkpoint=str(small_hf_dir), device="cpu", dtype="float32", context=2))


@pytest.mark.slow
def test_stop_mid_backward_then_go_on_equals_vos_run(host, shared_data, tmp_path):
    """Mask on frame 2 of 5: order 2, 1 | stop | 1, 0 (backward again), 3, 4 resumed at 3."""
    video, masks = make_clip(shared_data, tmp_path / "clip", 5, (192, 108), masks=(2,))
    state = VideoState(tmp_path)
    state.open(video)
    state.add_mask(2, masks[2])
    seen = []
    for k in state.propagate(host):
        seen.append(k)
        if len(seen) == 2:
            state.stop.set()                 # what the Stop button does
    assert seen == [2, 1]
    assert state.done.tolist() == [False, True, True, False, False] and state.pending == 3
    with pytest.raises(UserError, match="3 of 5 frames have no current result"):
        state.export_zip(host)
    seen = list(state.propagate(host))
    assert seen == [1, 0, 3, 4] and state.pending == 0
    ref = run_video(video, masks={2: masks[2]}, output=tmp_path / "out", name="ref", stage=host.stage,
                    context=2)
    for k in range(5):
        assert np.array_equal(state.result(k), np.array(Image.open(ref.output_dir / f"{k:05d}.png"))), k
    # a mask before A makes everything pending again; one after A only the frames from it on
    state.add_mask(4, masks[2])
    assert state.done.tolist() == [True, True, True, True, False]
    state.add_mask(0, masks[2])
    assert state.pending == 5 and state.forward_from == 0
    state.close()
    assert not any(tmp_path.glob("vos-app-*"))


def test_painted_layers_become_object_ids():
    h, w = 4, 6
    a = np.zeros((h, w, 4), np.uint8)
    a[:, :3, 3] = 255                        # layer 1: object 3, the left half
    b = np.zeros((h, w, 4), np.uint8)
    b[1:3, 2:5] = (255, 0, 0, 200)           # layer 2: object 7, on top where they overlap
    c = np.zeros((h, w, 4), np.uint8)
    c[0, 5] = (0, 0, 255, 255)               # an added layer: the next free id (1)
    c[3, 5] = (0, 0, 255, 100)               # faint (alpha <= 127): not painted
    ids = ids_from_layers([a, b, c], [3, 7], (w, h))
    expected = np.zeros((h, w), np.uint8)
    expected[:, :3] = 3
    expected[1:3, 2:5] = 7
    expected[0, 5] = 1
    assert np.array_equal(ids, expected)
    with pytest.raises(MaskError, match="painted layer 1 is 5x4, the frame is 6x4"):
        ids_from_layers([np.zeros((4, 5, 4), np.uint8)], [1], (w, h))


def test_idle_sessions_lose_their_folder(shared_data, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from vos.app.server import _Sessions

    video, _ = make_clip(shared_data, tmp_path / "clip", 2, (64, 36), masks=())
    sessions = _Sessions(tmp_path / "root", idle_timeout=0.05)
    (tmp_path / "root").mkdir()
    idle, busy = VideoState(tmp_path / "root"), VideoState(tmp_path / "root")
    for s in (idle, busy):
        sessions.add(s)
        s.open(video)
    time.sleep(0.1)
    busy.touch()
    sessions.sweep()
    assert idle.folder is None and busy.folder is not None
    assert len(list((tmp_path / "root").glob("vos-app-*"))) == 1
    with pytest.raises(UserError, match="closed after being idle"):
        idle.frame(0)
    assert idle.open(video)["frames"] == 2      # the tab can start again
    sessions.close_all()
    assert not (tmp_path / "root").exists()


# -- the command -------------------------------------------------------------------------------
def test_app_command_checks(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit):
        vos_main(["app", "--help"])
    out = capsys.readouterr().out
    assert "/open_video" in out and "--port" in out and "127.0.0.1" in out
    monkeypatch.setitem(sys.modules, "gradio", None)          # as if the app extra were missing
    assert vos_main(["app"]) == 2
    assert 'pip install "seggpt-vos[app]"' in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "gradio")
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    assert vos_main(["app", str(notes), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.txt" in err[0] and err[0].startswith("vos app: error:")
    assert vos_main(["app", "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


@pytest.mark.slow
def test_app_serves_the_start_video_and_stops_on_sigterm(small_hf_dir, shared_data, tmp_path):
    """``vos app VIDEO``: prints its URL; an API client works on VIDEO at once; SIGTERM stops the
    server (exit 143) and removes every session folder."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from gradio_client import Client, handle_file

    video, masks = make_clip(shared_data, tmp_path / "clip", 2, (64, 36), masks=(0,))
    port = free_port()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "vos.cli", "app", str(video), "--checkpoint", str(small_hf_dir),
                             "--device", "cpu", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("serving on" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"vos app exited: {proc.stderr.read()}"
            lines.append(line)
        assert f"http://127.0.0.1:{port}" in lines[-1]
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert c.predict(0, handle_file(str(masks[0])), api_name="/add_mask") == {"frame": 0, "objects": [1]}
        assert any(tmp.glob("vos-app-*/vos-app-*/frames/00001.npy"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "vos app: terminated" in err
    assert not any(tmp.glob("vos-app-*"))
