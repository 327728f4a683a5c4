"""``vos run --mask K:FILE`` (issue 14): masks on any frame, backward propagation, new objects,
corrections, and ``--first-mask`` alone unchanged. Real DAVIS frames, a tiny random SegGPT (its
query size lowered to 224 so that the many reference runs stay cheap on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests._media import encode_mp4
from vos.cli import main as vos_main
from vos.labels import read_first_mask

CAR = ("davis_sample", "car-shadow")
JUDO = ("prompts/first_frame_only", "judo")
BIKE = ("prompts/first_frame_only", "bike")


def _seq(shared_data: Path, which) -> tuple[Path, Path]:
    root, seq = which
    base = shared_data / root
    return base / "JPEGImages" / "480p" / seq, base / "Annotations" / "480p" / seq


@pytest.fixture(scope="module")
def stage(small_hf_dir):
    from pipelines.model_stage import load_stage

    return load_stage(str(small_hf_dir), "cpu", "float32")


def _link_frames(files: list[Path], folder: Path) -> Path:
    """A frame folder whose i-th frame (name order) is ``files[i]`` (symlinks, nothing copied)."""
    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        (folder / f"{i:05d}{f.suffix}").symlink_to(f)
    return folder


def _decoded_frames(video: Path, folder: Path) -> list[Path]:
    """Every decoded frame of ``video`` as a lossless PNG in ``folder`` (reference runs read them)."""
    from pipelines.sources import open_source

    folder.mkdir(parents=True)
    with open_source(video) as src:
        for f in src:
            Image.fromarray(f.rgb).save(folder / f"{f.index:05d}.png")
    return sorted(folder.glob("*.png"))


def _pngs(out: Path) -> list[np.ndarray]:
    files = sorted(out.glob("*.png"))
    assert [p.name for p in files] == [f"{i:05d}.png" for i in range(len(files))]
    return [np.array(Image.open(p)) for p in files]


def _run(*argv) -> int:
    return vos_main(["run", *map(str, argv), "--quiet"])


def _reference(stage, frames_dir: Path, mask: Path, out: Path, context: int) -> list[np.ndarray]:
    """``vos run FRAMES --first-mask MASK`` (the library form, with the loaded stage)."""
    from vos.engine.video import run_video

    result = run_video(frames_dir, mask, output=out, name="ref", context=context, stage=stage)
    return _pngs(result.output_dir)


def _check_late_mask(stage, small_hf_dir, files: list[Path], video: Path, ann: Path, k: int, tmp_path,
                     context: int = 2, extra=()):
    rc = _run(video, "--mask", f"{k}:{ann}", "--checkpoint", small_hf_dir, "--output", tmp_path / "out",
              "--name", "late", "--context", context, *extra)
    assert rc == 0
    out = _pngs(tmp_path / "out" / "late")
    assert len(out) == len(files)
    assert np.array_equal(out[k], np.array(Image.open(ann)))             # frame K is the annotation
    forward = _reference(stage, _link_frames(files[k:], tmp_path / "fwd"), ann, tmp_path / "r1", context)
    assert all(np.array_equal(a, b) for a, b in zip(out[k + 1:], forward[1:], strict=True))
    backward = _reference(stage, _link_frames(files[k::-1], tmp_path / "bwd"), ann, tmp_path / "r2", context)
    assert all(np.array_equal(out[k - i], backward[i]) for i in range(1, k + 1))
    assert any(b.any() for b in backward[1:])          # something was segmented backward
    manifest = json.loads((tmp_path / "out" / "late" / "manifest.json").read_text())
    assert manifest["frames"] == len(files) and manifest["first_mask"] is None
    assert [(a["frame"], a["objects"]) for a in manifest["annotations"]] == [(k, [1])]
    assert [r["source_index"] for r in manifest["frame_list"]] == list(range(len(files)))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]   # spill removed
    return out


@pytest.mark.slow  # backward over 20 frames
def test_late_mask_frame_folder(stage, small_hf_dir, shared_data, tmp_path):
    frames, ann = _seq(shared_data, CAR)
    files = sorted(frames.glob("*.jpg"))
    _check_late_mask(stage, small_hf_dir, files, frames, ann / "00020.png", 20, tmp_path)


@pytest.mark.slow  # backward over 10 frames of an mp4
def test_late_mask_mp4(stage, small_hf_dir, shared_data, tmp_path):
    frames, ann = _seq(shared_data, CAR)
    video = encode_mp4(frames, tmp_path / "car.mp4", limit=16)
    files = _decoded_frames(video, tmp_path / "decoded")
    out = _check_late_mask(stage, small_hf_dir, files, video, ann / "00010.png", 10, tmp_path,
                           extra=("--mask-video", tmp_path / "m.mkv"))
    with av.open(str(tmp_path / "m.mkv")) as c:          # the video writers get frames in order too
        labels = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    assert len(labels) == 16 and all(np.array_equal(a, b) for a, b in zip(labels, out))


def test_new_objects_on_later_frames(stage, small_hf_dir, shared_data, tmp_path):
    """judo: real masks of frames 0, 5, 8, 13, each with one new object (5's is 853 wide: resized)."""
    frames, ann = _seq(shared_data, JUDO)
    marks = {0: 1, 5: 2, 8: 3, 13: 4}
    with pytest.warns(UserWarning, match="00005.png: mask is 853x480"):
        rc = _run(frames, "--first-mask", ann / "00000.png", *[x for k in (5, 8, 13) for x in
                  ("--mask", f"{k}:{ann / f'{k:05d}.png'}")], "--checkpoint", small_hf_dir,
                  "--output", tmp_path / "out", "--context", 2)
    assert rc == 0
    out = _pngs(tmp_path / "out" / "judo")
    assert len(out) == 16
    with pytest.warns(UserWarning, match="00005.png: mask is 853x480"):     # read again below
        masks = {k: read_first_mask(ann / f"{k:05d}.png", frame_size=(854, 480)).labels for k in marks}
    for k, obj in marks.items():
        mask = masks[k]
        assert all(obj not in o for o in out[:k])                        # absent before K
        assert np.array_equal(out[k] == obj, mask == obj)                # exactly the annotation at K
    # before frame 5 the run is the first-mask-only run; at 5 object 1 keeps its predicted pixels
    ref = _reference(stage, _link_frames(sorted(frames.glob("*.jpg"))[:6], tmp_path / "f6"),
                     ann / "00000.png", tmp_path / "ref", 2)
    assert all(np.array_equal(a, b) for a, b in zip(out[:5], ref[:5]))
    mask5 = masks[5]
    assert np.array_equal(out[5][mask5 == 0], ref[5][mask5 == 0]) and (ref[5] == 1).any()
    manifest = json.loads((tmp_path / "out" / "judo" / "manifest.json").read_text())
    assert [(a["frame"], a["objects"]) for a in manifest["annotations"]] == [(k, [o]) for k, o in marks.items()]
    assert manifest["objects"] == [1, 2, 3, 4]


def test_correction_on_a_later_frame(stage, small_hf_dir, shared_data, tmp_path):
    frames, ann = _seq(shared_data, CAR)
    files = sorted(frames.glob("*.jpg"))[:7]
    folder = _link_frames(files, tmp_path / "car7")
    rc = _run(folder, "--first-mask", ann / "00000.png", "--mask", f"4:{ann / '00004.png'}",
              "--checkpoint", small_hf_dir, "--output", tmp_path / "out", "--name", "fix", "--context", 2)
    assert rc == 0
    out = _pngs(tmp_path / "out" / "fix")
    ref = _reference(stage, _link_frames(files[:5], tmp_path / "car5"), ann / "00000.png", tmp_path / "r", 2)
    assert all(np.array_equal(a, b) for a, b in zip(out[:4], ref[:4]))
    assert np.array_equal(out[4], np.array(Image.open(ann / "00004.png")))
    assert not np.array_equal(ref[4], out[4])          # the prediction was corrected


def _head_run(stage, frames: list[Path], mask_path: Path, context: int) -> list[np.ndarray]:
    """``vos run --first-mask`` as the code at HEAD 3b13b82 did it (vos.engine.session.VideoSession then),
    written out on the stage's methods: the first frame pinned, a FIFO of ``context - 1`` predictions."""
    rgbs = [np.array(Image.open(f).convert("RGB")) for f in frames]
    h, w = rgbs[0].shape[:2]
    mask = read_first_mask(mask_path, frame_size=(w, h))
    ids = list(mask.object_ids)
    to_labels = np.zeros(256, np.uint8)
    to_labels[ids] = np.arange(1, len(ids) + 1)
    to_ids = np.array([0, *ids], np.uint8)
    first = stage.prompt(rgbs[0], to_labels[mask.labels])
    recent: list = []
    out = mask.labels.copy()
    if mask.void is not None:
        out[mask.void] = 255
    outs = [out]
    for rgb in rgbs[1:]:
        query = stage.query(rgb)
        labels = stage.segment(query, [first, *recent], len(ids), False)
        recent = [*recent, stage.as_prompt(query, labels)][-(context - 1):] if context > 1 else []
        outs.append(to_ids[stage.to_frame(labels, h, w)])
    return outs


@pytest.mark.parametrize("which", [BIKE, CAR])
def test_first_mask_alone_is_unchanged(stage, small_hf_dir, shared_data, tmp_path, which):
    frames, ann = _seq(shared_data, which)
    files = sorted(frames.glob("*.jpg"))[:5]
    rc = _run(_link_frames(files, tmp_path / "v"), "--first-mask", ann / "00000.png",
              "--checkpoint", small_hf_dir, "--output", tmp_path / "out", "--context", 3)
    assert rc == 0
    out = _pngs(tmp_path / "out" / "v")
    expected = _head_run(stage, files, ann / "00000.png", 3)
    assert len(out) == len(expected) and all(np.array_equal(a, b) for a, b in zip(out, expected))


# ----------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written

def _expect_error(capsys, tmp_path, argv, needle):
    rc = _run(*argv, "--output", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("vos run: error: "), err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_bad_masks_and_frame_indices(small_hf_dir, shared_data, tmp_path, capsys):
    frames, ann = _seq(shared_data, CAR)
    folder = _link_frames(sorted(frames.glob("*.jpg"))[:4], tmp_path / "car4")
    video = encode_mp4(frames, tmp_path / "clip.mp4", limit=4)
    m0, m2 = ann / "00000.png", ann / "00002.png"
    ck = ["--checkpoint", small_hf_dir]
    _expect_error(capsys, tmp_path, [folder, *ck], "no mask given")
    _expect_error(capsys, tmp_path, [folder, "--mask", m2, *ck], "expected K:FILE")
    _expect_error(capsys, tmp_path, [folder, f"--mask=-1:{m2}", *ck], "expected K:FILE")
    _expect_error(capsys, tmp_path, [folder, "--mask", f"2:{m2}", "--mask", f"2:{m0}", *ck],
                  "frame 2 has two masks")
    _expect_error(capsys, tmp_path, [folder, "--first-mask", m0, "--mask", f"0:{m2}", *ck],
                  "frame 0 has two masks")
    _expect_error(capsys, tmp_path, [folder, "--mask", f"4:{m2}", *ck], "frame 4 is outside the video")
    # a video's length is known only once it is decoded: still one line, nothing published
    _expect_error(capsys, tmp_path, [video, "--mask", f"9:{m2}", *ck], "frame 9 is outside the video (4 frames")
    _expect_error(capsys, tmp_path, [video, "--first-mask", m0, "--mask", f"6:{m2}", *ck, "--context", 1],
                  "frame 6 is outside the video")
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(tmp_path / "square.png")
    _expect_error(capsys, tmp_path, [folder, "--first-mask", m0, "--mask", f"2:{tmp_path / 'square.png'}",
                                     *ck], "square.png")
    many = (np.arange(480 * 854) % 300).reshape(480, 854)
    rgb = np.stack([many % 256, many // 256 * 60, np.full_like(many, 7)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "many.png")
    _expect_error(capsys, tmp_path, [folder, "--mask", f"1:{tmp_path / 'many.png'}", *ck], "many.png")
    _expect_error(capsys, tmp_path, [folder, "--first-mask", m0, "--max-pinned", 0, *ck], "--max-pinned")


def test_help_documents_masks_and_the_backward_rule(capsys):
    with pytest.raises(SystemExit):
        vos_main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--mask K:FILE" in text and "--max-pinned" in text
    assert "not propagated backward before K" in text
