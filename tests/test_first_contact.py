"""What a new user meets first in ``vos run``: ``--frames``, ``--overwrite``, ``--fps``, the CPU time
estimate, the messages and ``--help`` (issue 22). Real DAVIS frames, tiny random checkpoint."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests._media import encode_mp4, small_car_shadow
from vos.cli import build_parser
from vos.cli import main as vos_main
from vos.engine.video import cpu_estimate_line


def _run(*argv) -> int:
    return vos_main(["run", *map(str, argv)])


#: Frame size of the test clip: car-shadow's 854x480 scaled down (same aspect), so that runs are quick.
SIZE = (256, 144)


@pytest.fixture(scope="module")
def clip(shared_data, tmp_path_factory):
    """The first 8 frames of car-shadow at :data:`SIZE` as a frame folder, and its frame-0
    annotation scaled the same way (nearest neighbour, DAVIS palette)."""
    return small_car_shadow(shared_data, tmp_path_factory.mktemp("clip"), SIZE, 8)


def _labels(folder: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [ln for ln in err if ": error: " in ln]
    assert len(lines) == 1, err
    return lines[0]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_frames_is_the_same_run_as_on_the_cut_video(tiny_hf_dir, clip, tmp_path, capsys):
    """``--frames 2:6 --mask 3:M`` (frame 2 segmented backward from 3) gives what ``vos run`` gives
    on a folder holding only frames 2..5 with ``--mask 1:M``, frame for frame."""
    folder, mask = clip
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in sorted(folder.glob("*.jpg"))[2:6]:
        shutil.copy(f, cut / f.name)
    common = ["--checkpoint", tiny_hf_dir, "--device", "cpu", "--context", "2", "--quiet"]
    assert _run(folder, "--mask", f"3:{mask}", "--frames", "2:6", "--output", tmp_path / "a", *common) == 0
    assert _run(cut, "--mask", f"1:{mask}", "--output", tmp_path / "b", *common) == 0
    got, want = _labels(tmp_path / "a" / "car"), _labels(tmp_path / "b" / "cut")
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert np.array_equal(got[1], np.array(Image.open(mask)))      # frame 3 is the given mask
    manifest = json.loads((tmp_path / "a" / "car" / "manifest.json").read_text())
    assert manifest["frame_range"] == [2, 6] and manifest["frames"] == 4
    assert [r["source_index"] for r in manifest["frame_list"]] == [2, 3, 4, 5]
    # an open end: frames 6.. of 8
    assert _run(folder, "--mask", f"6:{mask}", "--frames", "6:", "--output", tmp_path / "c", *common) == 0
    assert len(_labels(tmp_path / "c" / "car")) == 2


def test_frames_errors(tiny_hf_dir, clip, tmp_path, capsys, shared_data):
    folder, mask = clip
    common = ["--checkpoint", tiny_hf_dir, "--device", "cpu", "--quiet", "--output", tmp_path / "out"]
    for value, needle in (("5:2", "STOP must be greater than START"), ("a:3", "expected START:STOP"),
                          ("4", "expected START:STOP"), ("-1:3", "expected START:STOP")):
        assert _run(folder, "--first-mask", mask, f"--frames={value}", *common) == 2
        assert needle in _error_line(capsys)
    assert _run(folder, "--first-mask", mask, "--frames", "2:6", *common) == 2
    assert _error_line(capsys).endswith(f"{mask}: mask of frame 0 is outside --frames 2:6")
    assert _run(folder, "--mask", f"6:{mask}", "--frames", "2:6", *common) == 2
    assert "mask of frame 6 is outside --frames 2:6" in _error_line(capsys)
    video = encode_mp4(folder, tmp_path / "clip.mp4", limit=4)    # frame count known only by decoding
    assert _run(video, "--mask", f"5:{mask}", "--frames", "5:9", *common) == 2
    assert "no frame in --frames 5:9" in _error_line(capsys)
    assert not (tmp_path / "out").exists()          # a failed run leaves no folder behind


def test_finished_result_is_replaced_only_with_overwrite(tiny_hf_dir, clip, tmp_path, capsys):
    folder, mask = clip
    common = [folder, "--first-mask", mask, "--checkpoint", tiny_hf_dir, "--device", "cpu", "--quiet",
              "--output", tmp_path / "out"]
    assert _run(*common, "--frames", "0:3") == 0
    before = _tree(tmp_path / "out")
    assert _run(*common, "--frames", "0:2") == 2
    assert _error_line(capsys) == (f"vos run: error: {tmp_path / 'out' / 'car'}: holds a finished result "
                                   f"(manifest.json); pass --overwrite to replace it, or choose another "
                                   f"--output or --name")
    assert _tree(tmp_path / "out") == before                       # untouched, no temporaries
    # a failing --overwrite run keeps the old result too
    assert _run(*common, "--frames", "0:2", "--overwrite", "--context", "0") == 2
    capsys.readouterr()
    assert _tree(tmp_path / "out") == before
    assert _run(*common, "--frames", "0:2", "--overwrite") == 0
    manifest = json.loads((tmp_path / "out" / "car" / "manifest.json").read_text())
    assert manifest["frames"] == 2 and len(_labels(tmp_path / "out" / "car")) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["car"]


def test_failed_run_leaves_nothing_and_output_file_is_named(tiny_hf_dir, clip, tmp_path, capsys):
    folder, mask = clip
    out = tmp_path / "new" / "results"
    assert _run(folder, "--first-mask", mask, "--checkpoint", tmp_path / "missing.safetensors",
                "--device", "cpu", "--quiet", "--output", out) == 2
    assert "missing.safetensors" in _error_line(capsys)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    assert _run(folder, "--first-mask", mask, "--checkpoint", tmp_path / "missing.safetensors",
                "--device", "cpu", "--quiet", "--output", existing) == 2
    capsys.readouterr()
    assert existing.is_dir() and not list(existing.iterdir())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for output in (blocker, blocker / "sub"):
        assert _run(folder, "--first-mask", mask, "--checkpoint", tiny_hf_dir, "--quiet",
                    "--output", output) == 2
        assert _error_line(capsys) == f"vos run: error: {blocker}: is a file, not a folder (--output {output})"


@pytest.mark.parametrize("fps", [None, 10])
def test_fps_of_frame_folder_videos(tiny_hf_dir, clip, tmp_path, fps):
    folder, mask = clip
    overlay, labels = tmp_path / "o.mp4", tmp_path / "m.mkv"
    extra = [] if fps is None else ["--fps", fps]
    assert _run(folder, "--first-mask", mask, "--checkpoint", tiny_hf_dir, "--device", "cpu", "--quiet",
                "--frames", "0:3", "--output", tmp_path / "out", "--overlay", overlay,
                "--mask-video", labels, *extra) == 0
    for path in (overlay, labels):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pts = [float(f.pts * f.time_base) for f in container.decode(stream)]
        assert len(pts) == 3
        assert np.allclose(np.diff(pts), 1 / (fps or 24), atol=1e-3)    # Matroska counts milliseconds


def test_bad_fps(tiny_hf_dir, clip, tmp_path, capsys):
    folder, mask = clip
    assert _run(folder, "--first-mask", mask, "--checkpoint", tiny_hf_dir, "--quiet", "--fps", "0",
                "--output", tmp_path / "out") == 2
    assert "--fps" in _error_line(capsys)


def test_cpu_estimate_line_scales_the_first_frame_to_the_full_context():
    # first frame with 1 prompt in 2 s; 8 prompts cost (8 + 1) / (1 + 1) = 4.5 times as much
    assert cpu_estimate_line(2.0, 1, 8, 40) == ("about 9.0 s a frame on this CPU: ~6 min for 40 frames; "
                                                "--device cuda, --context 2 or --frames for a quicker look")
    # already at the full context (2 prompts of 2), a total under 2 minutes in seconds
    assert cpu_estimate_line(21.0, 2, 2, 5) == ("about 21 s a frame on this CPU: ~105 s for 5 frames; "
                                                "--device cuda or --frames for a quicker look")
    assert cpu_estimate_line(3.0, 1, 1, 1) == ("about 3.0 s a frame on this CPU: ~3.0 s for 1 frame; "
                                               "--device cuda or --frames for a quicker look")
    # frame count unknown (a video without a declared length)
    assert cpu_estimate_line(30.0, 1, 1, None) == ("about 30 s a frame on this CPU; --device cuda or "
                                                   "--frames for a quicker look")


def test_cpu_run_prints_one_estimate_line(tiny_hf_dir, clip, tmp_path, capsys):
    folder, mask = clip
    common = [folder, "--first-mask", mask, "--checkpoint", tiny_hf_dir, "--device", "cpu", "--context", "2"]
    assert _run(*common, "--frames", "0:3", "--output", tmp_path / "a") == 0
    err = capsys.readouterr().err
    lines = re.findall(r"about [^\r\n]*", err)
    assert len(lines) == 1, err
    m = re.fullmatch(r"about (\d+(?:\.\d)?) s a frame on this CPU: ~(\d+(?:\.\d)?) (s|min) for 2 frames; "
                     r"--device cuda or --frames for a quicker look", lines[0].strip())
    assert m, lines[0]
    per_frame, total = float(m.group(1)), float(m.group(2)) * (60 if m.group(3) == "min" else 1)
    assert per_frame > 0 and abs(total - 2 * per_frame) <= (1.5 if m.group(3) == "s" else 30)
    assert _run(*common, "--frames", "0:2", "--output", tmp_path / "b", "--quiet") == 0
    assert "about" not in capsys.readouterr().err


def _help(*argv: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    return sub[argv[0]].format_help()


def test_run_help_lists_the_main_inputs_first_and_wraps():
    text = _help("run")
    listed = re.findall(r"^  (--[a-z-]+)", text[text.index("options:"):], re.M)    # options in help order
    order = [listed.index(flag) for flag in ("--first-mask", "--mask", "--frames", "--text", "--example",
                                             "--classes")]
    assert order == sorted(order)
    for flag in ("--frames START:STOP", "--overwrite", "--fps F"):
        assert flag in text
    description = text[text.index("\n\n") + 2: text.index("positional arguments")]
    assert max(len(line) for line in description.splitlines()) <= 80


def test_context_help_fits_each_command():
    run, batch, image = (" ".join(_help(c).split()) for c in ("run", "batch", "image"))
    run, batch = (text[text.index("options:"):] for text in (run, batch))
    assert "the --max-pinned most recent" in run
    assert "prompts per frame of each video" in batch and "--max-pinned of vos run" not in batch
    image_context = image[image.index("--context N", image.index("options:")):]
    assert image_context.startswith("--context N use at most N of the prompt image/mask pairs")
    assert "predicted" not in image_context.split("--config")[0]


def test_no_estimate_line_off_the_cpu(tiny_hf_dir, clip, tmp_path, capsys):
    """The estimate is for CPUs only: the same run with the stage reporting a CUDA device prints none."""
    import torch

    from pipelines.model_stage import load_stage
    from vos.engine.video import run_video

    class ReportsCuda:            # the real stage, computing on the CPU, seen by run_video as on CUDA
        device = torch.device("cuda")

        def __init__(self, stage):
            self._stage = stage

        def __getattr__(self, name):
            return getattr(self._stage, name)

    folder, mask = clip
    stage = load_stage(str(tiny_hf_dir), "cpu", "float32")
    run_video(folder, mask, output=tmp_path / "a", frames="0:2", context=2, quiet=False, stage=stage)
    assert "about" in capsys.readouterr().err
    run_video(folder, mask, output=tmp_path / "b", frames="0:2", context=2, quiet=False,
              stage=ReportsCuda(stage))
    assert "about" not in capsys.readouterr().err
