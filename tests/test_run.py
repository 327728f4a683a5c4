"""``vos run`` end to end on real DAVIS data with a tiny random checkpoint, and its bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests._media import encode_mp4
from vos.cli import main as vos_main
from vos.labels import davis_palette
from vos.engine.session import PromptMemory


def _davis(shared_data: Path, seq: str, root: str = "davis_sample"):
    base = shared_data / root
    return base / "JPEGImages" / "480p" / seq, base / "Annotations" / "480p" / seq


def _run(*argv: str) -> int:
    return vos_main(["run", *map(str, argv)])


def _check_output(out: Path, first_mask: Path, n_frames: int, size: tuple[int, int]):
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(n_frames)]
    given = np.array(Image.open(first_mask))
    ids = set(np.unique(given).tolist()) - {0, 255}
    palette = davis_palette().tobytes()
    for p in pngs:
        im = Image.open(p)
        assert im.mode == "P" and im.size == size
        assert bytes(im.getpalette()[:768]) == palette
        assert set(np.unique(np.array(im)).tolist()) <= ids | {0, 255}
    assert np.array_equal(np.array(Image.open(pngs[0])), given)
    for p in pngs[1:]:
        assert set(np.unique(np.array(Image.open(p))).tolist()) <= ids | {0}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frames"] == n_frames == len(manifest["frame_list"])
    assert manifest["objects"] == sorted(ids)
    assert [r["index"] for r in manifest["frame_list"]] == list(range(n_frames))
    assert {"checkpoint", "device", "dtype", "context", "per_object"} <= set(manifest["settings"])
    assert manifest["timings"]["model_fps"] > 0
    return manifest


def test_prompt_memory_keeps_first_and_most_recent():
    memory = PromptMemory(context=3)
    memory.set_first(0)
    batches = []
    for frame in range(1, 6):
        batches.append(memory.prompts())
        memory.push(frame)
    assert batches == [[0], [0, 1], [0, 1, 2], [0, 2, 3], [0, 3, 4]]
    single = PromptMemory(context=1)
    single.set_first("a")
    single.push("b")
    assert single.prompts() == ["a"]
    with pytest.raises(ValueError):
        PromptMemory(context=0)
    with pytest.raises(RuntimeError):
        PromptMemory(context=2).prompts()


def test_car_shadow_frame_folder(tiny_hf_dir, shared_data, tmp_path, capsys):
    frames, ann = _davis(shared_data, "car-shadow")
    rc = _run(frames, "--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir,
              "--output", tmp_path, "--context", "2", "--mask-video", tmp_path / "m.mkv",
              "--overlay", tmp_path / "o.mp4")
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("40 frames, model ") and str(tmp_path / "car-shadow") in summary
    manifest = _check_output(tmp_path / "car-shadow", ann / "00000.png", 40, (854, 480))
    assert manifest["settings"]["context"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "car-shadow").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    # the mask video holds exactly the PNG label maps; the overlay has every frame
    with av.open(str(tmp_path / "m.mkv")) as c:
        labels = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(labels) == 40
    assert np.array_equal(labels[7], np.array(Image.open(tmp_path / "car-shadow" / "00007.png")))
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == 40


def test_car_shadow_mp4(tiny_hf_dir, shared_data, tmp_path):
    frames, ann = _davis(shared_data, "car-shadow")
    video = encode_mp4(frames, tmp_path / "car.mp4")
    rc = _run(video, "--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir,
              "--output", tmp_path / "res", "--context", "2", "--quiet")
    assert rc == 0
    manifest = _check_output(tmp_path / "res" / "car", ann / "00000.png", 40, (854, 480))
    assert manifest["fps"] == pytest.approx(24.0)
    assert manifest["frame_list"][3]["pts"] == pytest.approx(3 / 24)


@pytest.mark.parametrize("per_object", [False, True])
@pytest.mark.parametrize("seq", ["bike", "tennis"])
def test_multi_object_first_frames(tiny_hf_dir, shared_data, tmp_path, seq, per_object):
    frames, ann = _davis(shared_data, seq, root="prompts/first_frame_only")
    extra = ["--per-object"] if per_object else []
    rc = _run(frames, "--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir,
              "--output", tmp_path, "--context", "3", "--quiet", *extra)
    assert rc == 0
    n = len(list(frames.glob("*.jpg")))
    manifest = _check_output(tmp_path / seq, ann / "00000.png", n, (854, 480))
    assert manifest["objects"] == [1, 2] and manifest["settings"]["per_object"] is per_object


def test_per_object_merges_by_highest_score():
    """Unit test of the per-object merge with a fake model whose scores are known."""
    import torch

    from pipelines.model_stage import SegGptStage

    class Fake:
        def __init__(self):
            self.config = type("C", (), {"query_image_size": 4})()
            self.device, self.dtype = torch.device("cpu"), torch.float32

        def eval(self):
            return self

    stage = SegGptStage(Fake())
    # object 1 scores 0.9 left / 0.2 right, object 2 scores 0.6 everywhere -> [1, 1, 2, 2]
    scores = {1: torch.tensor([0.9, 0.9, 0.2, 0.2]).repeat(4, 1), 2: torch.full((4, 4), 0.6)}

    def fake_predict(query, prompts, palette, select):
        grey = scores[select] * 255
        from seggpt_model.processing import IMAGENET_MEAN, IMAGENET_STD

        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (((grey / 255)[None] - mean) / std)[None]

    stage._predict = fake_predict
    labels = stage.segment(torch.zeros(3, 4, 4), [], 2, per_object=True)
    assert labels[0].tolist() == [1, 1, 2, 2]
    scores[2] = torch.full((4, 4), 0.3)
    labels = stage.segment(torch.zeros(3, 4, 4), [], 2, per_object=True)
    assert labels[0].tolist() == [1, 1, 0, 0]


def test_help_works_without_heavy_imports():
    code = ("import sys; from vos.cli import main\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules and 'av' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--first-mask" in proc.stdout and "orientation" in proc.stdout
    proc = subprocess.run(["vos", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--per-object" in proc.stdout


# ----------------------------------------------------------------------------------------------
# bad input: one line on stderr naming the file, exit 2, nothing that looks finished

@pytest.fixture(scope="module")
def small_video(tmp_path_factory, shared_data):
    frames, _ = _davis(shared_data, "car-shadow")
    return encode_mp4(frames, tmp_path_factory.mktemp("vid") / "clip.mp4", limit=4)


def _expect_error(capsys, tmp_path, argv, needle):
    rc = _run(*argv, "--output", tmp_path / "out", "--quiet")
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "out").exists() or not [
        p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_videos(tiny_hf_dir, shared_data, tmp_path, capsys, small_video):
    _, ann = _davis(shared_data, "car-shadow")
    mask = ann / "00000.png"
    common = ["--first-mask", mask, "--checkpoint", tiny_hf_dir]
    _expect_error(capsys, tmp_path, [tmp_path / "missing.mp4", *common], "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    _expect_error(capsys, tmp_path, [text, *common], "notes.mp4")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    _expect_error(capsys, tmp_path, [empty_dir, *common], "empty")
    audio = tmp_path / "audio.mka"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    _expect_error(capsys, tmp_path, [audio, *common], "audio.mka")


def test_truncated_video_and_allow_partial(tiny_hf_dir, shared_data, tmp_path, capsys):
    frames, ann = _davis(shared_data, "car-shadow")
    mkv = tmp_path / "clip.mkv"
    files = sorted(frames.glob("*.jpg"))[:12]
    with av.open(str(mkv), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 854, 480, "yuv420p"
        stream.options = {"g": "1"}
        for f in files:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.array(Image.open(f)), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = mkv.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    common = ["--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir, "--context", "1"]
    _expect_error(capsys, tmp_path, [cut, *common], "cut.mkv")
    rc = _run(cut, *common, "--allow-partial", "--output", tmp_path / "partial", "--quiet")
    assert rc == 0
    manifest = json.loads((tmp_path / "partial" / "cut" / "manifest.json").read_text())
    assert 1 <= manifest["frames"] < 12
    assert manifest["settings"]["allow_partial"] is True


def test_bad_masks(tiny_hf_dir, shared_data, tmp_path, capsys, small_video):
    common = [small_video, "--checkpoint", tiny_hf_dir]
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "nope.png"], "nope.png")
    (tmp_path / "text.png").write_text("hello")
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "text.png"], "text.png")
    Image.fromarray(np.zeros((480, 854), np.uint8)).save(tmp_path / "empty.png")
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "empty.png"], "empty.png")
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(tmp_path / "square.png")
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "square.png"], "square.png")
    Image.fromarray(np.full((480, 854), 1000, np.uint16)).save(tmp_path / "deep.png")
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "deep.png"], "deep.png")
    many = (np.arange(480 * 854) % 300).reshape(480, 854)
    rgb = np.stack([many % 256, many // 256 * 60, np.full_like(many, 7)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "many.png")
    _expect_error(capsys, tmp_path, [*common, "--first-mask", tmp_path / "many.png"], "many.png")


def test_mask_with_close_aspect_is_resized_with_warning(tiny_hf_dir, tmp_path, capsys, small_video):
    mask = np.zeros((240, 427), np.uint8)
    mask[100:140, 200:260] = 1
    Image.fromarray(mask, mode="L").save(tmp_path / "half.png")
    with pytest.warns(UserWarning, match="half.png: mask is 427x240 but the frames are 854x480"):
        rc = _run(small_video, "--first-mask", tmp_path / "half.png", "--checkpoint", tiny_hf_dir,
                  "--output", tmp_path / "out", "--context", "1", "--quiet")
    assert rc == 0
    first = np.array(Image.open(tmp_path / "out" / "clip" / "00000.png"))
    assert first.shape == (480, 854) and set(np.unique(first)) == {0, 1}


def test_bad_output_device_dtype_and_checkpoint(tiny_hf_dir, shared_data, tmp_path, capsys, small_video):
    _, ann = _davis(shared_data, "car-shadow")
    common = [small_video, "--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = _run(*common, "--output", blocker / "sub", "--quiet")
    err = capsys.readouterr().err
    assert rc == 2 and "not writable" in err and str(blocker) in err
    _expect_error(capsys, tmp_path, [*common, "--device", "tpu"], "unknown device 'tpu'")
    _expect_error(capsys, tmp_path, [*common, "--dtype", "int8"], "unknown dtype 'int8'")
    _expect_error(capsys, tmp_path, [small_video, "--first-mask", ann / "00000.png",
                                     "--checkpoint", tmp_path / "nope.safetensors"], "nope.safetensors")
    _expect_error(capsys, tmp_path, [*common, "--context", "0"], "--context")


def test_config_file_defaults_and_flags(tmp_path):
    """defaults < --config file < flags; vos batch keys are accepted only where they apply."""
    from argparse import Namespace

    from vos.commands.batch import BATCH_DEFAULTS
    from vos.errors import UserError
    from vos.commands.options import resolve_options

    cfg = tmp_path / "vos.json"
    cfg.write_text(json.dumps({"context": 3, "per-object": True, "num_actors": 4, "max_retries": 0}))
    args = Namespace(config=str(cfg), context=None, per_object=False, checkpoint="ck", max_retries=None)
    opts = resolve_options(args, BATCH_DEFAULTS)
    assert opts["context"] == 3 and opts["per_object"] is True and opts["checkpoint"] == "ck"
    assert opts["num_actors"] == 4 and opts["max_retries"] == 0 and opts["dtype"] == "auto"
    args.context = 5
    assert resolve_options(args, BATCH_DEFAULTS)["context"] == 5
    with pytest.raises(UserError, match="unknown config keys \\['max_retries', 'num_actors'\\]"):
        resolve_options(args)            # vos run does not take batch keys
    cfg.write_text("[1, 2]")
    with pytest.raises(UserError, match="JSON object"):
        resolve_options(args)


# ----------------------------------------------------------------------------------------------
# stopping: SIGTERM cleans up like Ctrl-C; after SIGKILL the next run removes the leftover

def _start_run(tiny_hf_dir, frames: Path, mask: Path, out: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vos.cli", "run", str(frames), "--first-mask", str(mask),
                             "--checkpoint", str(tiny_hf_dir), "--output", str(out), "--name", name,
                             "--context", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_png(proc: subprocess.Popen, out: Path, name: str, timeout_s: float = 300) -> None:
    """Wait until the run's temporary folder holds a finished PNG."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if list(out.glob(f".{name}.tmp-*/*.png")):
            return
        if proc.poll() is not None:
            pytest.fail(f"vos run ended early ({proc.returncode}): {proc.communicate()[1]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no PNG appeared in the temporary folder")


def test_sigterm_removes_the_temporary_folder(tiny_hf_dir, shared_data, tmp_path):
    import signal

    frames, ann = _davis(shared_data, "car-shadow")
    out = tmp_path / "out"
    proc = _start_run(tiny_hf_dir, frames, ann / "00000.png", out, "car")
    _wait_for_png(proc, out, "car")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vos run: terminated"
    assert list(out.iterdir()) == []                  # no .car.tmp-*, no car


def test_sigkill_leftover_is_removed_by_the_next_run(tiny_hf_dir, shared_data, tmp_path):
    frames, ann = _davis(shared_data, "car-shadow")
    short = tmp_path / "short"
    short.mkdir()
    for f in sorted(frames.glob("*.jpg"))[:6]:
        (short / f.name).symlink_to(f)
    out = tmp_path / "out"
    proc = _start_run(tiny_hf_dir, short, ann / "00000.png", out, "car")
    _wait_for_png(proc, out, "car")
    proc.kill()
    proc.communicate(timeout=60)
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".car.tmp-")       # a killed run cannot clean up
    rc = _run(short, "--first-mask", ann / "00000.png", "--checkpoint", tiny_hf_dir, "--output", out,
              "--name", "car", "--context", "2", "--quiet")
    assert rc == 0
    assert [p.name for p in out.iterdir()] == ["car"]
    assert len(list((out / "car").glob("*.png"))) == 6
