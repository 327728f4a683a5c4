"""Writer stages (pipelines/writers.py): palette PNGs, FFV1 mask video, H.264 overlay video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.errors import OutputError
from pipelines.sources import Frame
from pipelines.writers import (
    FrameWriter,
    MaskVideoWriter,
    OverlayVideoWriter,
    PalettePngWriter,
    overlay_masks,
    temp_path_for,
)
from vos.labels import davis_palette

PAL = davis_palette()


def _labels(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w)).astype(np.uint8) for _ in range(n)]


def _frame(index: int, shape: tuple[int, ...], pts: float | None = None,
           rgb: np.ndarray | None = None) -> Frame:
    """A Frame for labels of ``shape`` (H, W); ``rgb`` defaults to black."""
    return Frame(index, pts, np.zeros((*shape[:2], 3), np.uint8) if rgb is None else rgb)


def _decode(path: Path) -> tuple[av.video.stream.VideoStream, list[av.VideoFrame]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        info = (s.codec_context.name, s.codec_context.format.name, s.codec_context.width,
                s.codec_context.height, s.average_rate)
    return info, frames


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _blocked(tmp_path: Path) -> Path:
    """A regular file: any path under it cannot be created, even by root."""
    f = tmp_path / "regular_file"
    f.write_text("x")
    return f


# ---- PalettePngWriter -----------------------------------------------------------------------


def test_png_writer_roundtrip_odd_size(tmp_path):
    out = tmp_path / "run" / "seq"
    labs = _labels(3, 37, 51)
    with PalettePngWriter(out, PAL) as w:
        for i, lab in enumerate(labs):
            w.write(_frame(i, lab.shape), lab)
        assert w.count == 3
    assert _names(out) == ["00000.png", "00001.png", "00002.png"]
    for i, lab in enumerate(labs):
        im = Image.open(out / f"{i:05d}.png")
        assert im.format == "PNG" and im.mode == "P" and im.size == (51, 37)
        assert bytes(im.getpalette()) == PAL.tobytes()
        assert np.array_equal(np.array(im), lab)


def test_png_writer_validates(tmp_path):
    w = PalettePngWriter(tmp_path / "o", PAL)
    w.write(_frame(0, (4, 5)), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError):
        w.write(_frame(1, (5, 4)), np.zeros((5, 4), np.uint8))  # shape changed
    with pytest.raises(ValueError):
        w.write(_frame(1, (4, 5)), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError):
        w.write(_frame(-1, (4, 5)), np.zeros((4, 5), np.uint8))
    with pytest.raises(TypeError):
        w.write(1, np.zeros((4, 5), np.uint8))  # the old (index, labels) call shape
    w.write(_frame(1, (4, 5)), np.ones((4, 5), bool))
    w.close()
    with pytest.raises(RuntimeError):
        w.write(_frame(2, (4, 5)), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError):
        PalettePngWriter(tmp_path / "p", PAL[:10])


def test_png_writer_unwritable(tmp_path):
    blocker = _blocked(tmp_path)
    for out in (blocker / "seq", blocker):
        with pytest.raises(OutputError) as e:
            PalettePngWriter(out, PAL)
        assert str(out) in str(e.value) and "\n" not in str(e.value)


def test_png_writer_abort_and_exception(tmp_path):
    out = tmp_path / "seq"
    with pytest.raises(KeyError):
        with PalettePngWriter(out, PAL) as w:
            w.write(_frame(0, (4, 4)), np.zeros((4, 4), np.uint8))
            w.write(_frame(1, (4, 4)), np.zeros((4, 4), np.uint8))
            raise KeyError("boom")
    assert not out.exists()  # created by the writer, emptied and removed
    existing = tmp_path / "keep"
    existing.mkdir()
    (existing / "other.txt").write_text("mine")
    w = PalettePngWriter(existing, PAL)
    w.write(_frame(0, (4, 4)), np.zeros((4, 4), np.uint8))
    w.abort()
    assert _names(existing) == ["other.txt"]


# ---- MaskVideoWriter ------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(37, 51), (48, 64), (1, 3)])
def test_mask_video_lossless_odd_sizes(tmp_path, h, w):
    path = tmp_path / "masks.mkv"
    labs = _labels(5, h, w, seed=h)
    labs[0][:] = 0
    labs[1].flat[:256] = np.arange(256)  # every value at least once
    with MaskVideoWriter(path, w, h, 25) as mw:
        for i, lab in enumerate(labs):
            mw.write(_frame(i, lab.shape), lab)
    assert _names(tmp_path) == ["masks.mkv"]
    (codec, fmt, cw, ch, rate), frames = _decode(path)
    assert (codec, fmt, cw, ch) == ("ffv1", "gray", w, h) and rate == 25
    assert len(frames) == 5
    for fr, lab in zip(frames, labs, strict=True):
        assert np.array_equal(fr.to_ndarray(format="gray"), lab)


def test_mask_video_vfr_timestamps(tmp_path):
    path = tmp_path / "m.mkv"
    pts = [10.0, 10.04, 10.2, 11.0]
    with MaskVideoWriter(path, 8, 6, Fraction(30000, 1001)) as mw:
        for i, p in enumerate(pts):
            mw.write(_frame(i, (6, 8), pts=p), np.zeros((6, 8), np.uint8))
    _, frames = _decode(path)
    assert [round(float(f.time), 3) for f in frames] == [0.0, 0.04, 0.2, 1.0]


def test_mask_video_validates_and_unwritable(tmp_path):
    with MaskVideoWriter(tmp_path / "m.mkv", 8, 6, 10) as mw:
        with pytest.raises(ValueError):
            mw.write(_frame(0, (8, 6)), np.zeros((8, 6), np.uint8))
        mw.write(_frame(0, (6, 8)), np.zeros((6, 8), np.uint8))
    with pytest.raises(RuntimeError):
        mw.write(_frame(1, (6, 8)), np.zeros((6, 8), np.uint8))
    blocker = _blocked(tmp_path)
    with pytest.raises(OutputError) as e:
        MaskVideoWriter(blocker / "sub" / "m.mkv", 8, 6, 10)
    assert str(blocker / "sub" / "m.mkv") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(OutputError):
        MaskVideoWriter(tmp_path, 8, 6, 10)  # a directory
    with pytest.raises(ValueError):
        MaskVideoWriter(tmp_path / "x.mkv", 0, 6, 10)
    with pytest.raises(ValueError):
        MaskVideoWriter(tmp_path / "x.mkv", 8, 6, 0)


def test_mask_video_abort_and_exception_leave_nothing(tmp_path):
    path = tmp_path / "m.mkv"
    mw = MaskVideoWriter(path, 8, 6, 10)
    mw.write(_frame(0, (6, 8)), np.ones((6, 8), np.uint8))
    assert temp_path_for(path).exists() and not path.exists()
    mw.abort()
    mw.abort()
    mw.close()  # no-op after abort
    assert _names(tmp_path) == []
    with pytest.raises(KeyError):
        with MaskVideoWriter(path, 8, 6, 10) as mw:
            mw.write(_frame(0, (6, 8)), np.ones((6, 8), np.uint8))
            raise KeyError("boom")
    assert _names(tmp_path) == []
    with pytest.raises(OutputError, match="no frames"):
        with MaskVideoWriter(path, 8, 6, 10):
            pass
    assert _names(tmp_path) == []


# ---- overlay --------------------------------------------------------------------------------


def test_overlay_masks_blend_and_contours():
    rgb = np.full((10, 12, 3), 100, np.uint8)
    lab = np.zeros((10, 12), np.uint8)
    lab[2:8, 3:9] = 1
    out = overlay_masks(rgb, lab, PAL, alpha=0.5, contours=True)
    assert out[0, 0].tolist() == [100, 100, 100]  # background untouched
    assert out[4, 5].tolist() == [114, 50, 50]  # (100 + 128) / 2, 100 / 2, 100 / 2
    assert out[2, 5].tolist() == [128, 0, 0]  # border: opaque palette colour
    plain = overlay_masks(rgb, lab, PAL, alpha=0.5, contours=False)
    assert plain[2, 5].tolist() == [114, 50, 50]
    assert np.array_equal(overlay_masks(rgb, lab, PAL, alpha=0.0, contours=False), rgb)
    with pytest.raises(ValueError):
        overlay_masks(rgb, lab[:5], PAL)


def _overlay_case(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 2] = 200  # blue-ish background
    lab = np.zeros((h, w), np.uint8)
    lab[h // 4: 3 * h // 4, w // 4: w // 2] = 1  # red DAVIS object
    lab[h // 4: 3 * h // 4, w // 2 + 4: 3 * w // 4] = 2  # green DAVIS object
    return rgb, lab


@pytest.mark.parametrize("h,w", [(63, 97), (64, 96)])
def test_overlay_video_mp4(tmp_path, h, w):
    path = tmp_path / "overlay.mp4"
    rgb, lab = _overlay_case(h, w)
    with OverlayVideoWriter(path, w, h, 25, PAL, alpha=0.5) as ow:
        assert ow.encoded_size == (w + w % 2, h + h % 2)
        for i in range(6):
            ow.write(Frame(i, None, rgb), lab)
    assert _names(tmp_path) == ["overlay.mp4"]
    data = path.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # faststart
    (codec, fmt, cw, ch, rate), frames = _decode(path)
    assert (codec, fmt, cw, ch) == ("h264", "yuv420p", w + w % 2, h + h % 2) and rate == 25
    assert len(frames) == 6
    assert [round(float(f.time), 3) for f in frames] == [0.0, 0.04, 0.08, 0.12, 0.16, 0.2]
    dec = frames[-1].to_ndarray(format="rgb24").astype(int)
    expected = overlay_masks(rgb, lab, PAL, 0.5, contours=False).astype(int)
    for region in (lab == 0, lab == 1, lab == 2):
        inner = region.copy()  # away from edges (chroma is subsampled, borders are opaque)
        for ax in (0, 1):
            for s in (1, 2, 3, -1, -2, -3):
                inner &= np.roll(region, s, axis=ax)
        got = dec[:h, :w][inner].mean(axis=0)
        want = expected[inner].mean(axis=0)
        assert np.abs(got - want).max() < 10, (got, want)


def test_overlay_video_vfr_and_ntsc_rate(tmp_path):
    path = tmp_path / "o.mp4"
    rgb, lab = _overlay_case(32, 48)
    pts = [5.0, 5.033, 5.1, 5.5, 5.52]
    with OverlayVideoWriter(path, 48, 32, 30000 / 1001, PAL) as ow:
        for i, p in enumerate(pts):
            ow.write(Frame(i, p, rgb), lab)
    _, frames = _decode(path)
    assert [round(float(f.time), 3) for f in frames] == [0.0, 0.033, 0.1, 0.5, 0.52]
    path2 = tmp_path / "cfr.mp4"
    with OverlayVideoWriter(path2, 48, 32, 30000 / 1001, PAL) as ow:
        for i in range(3):
            ow.write(Frame(i, None, rgb), lab)
    (_, _, _, _, rate), frames = _decode(path2)
    assert rate == Fraction(30000, 1001)
    assert [f.time for f in frames] == [0, pytest.approx(1001 / 30000), pytest.approx(2002 / 30000)]


def test_overlay_video_errors_leave_nothing(tmp_path):
    blocker = _blocked(tmp_path)
    with pytest.raises(OutputError) as e:
        OverlayVideoWriter(blocker / "o.mp4", 48, 32, 25, PAL)
    assert str(blocker / "o.mp4") in str(e.value) and "\n" not in str(e.value)
    out = tmp_path / "out"
    rgb, lab = _overlay_case(32, 48)
    with pytest.raises(ValueError):
        with OverlayVideoWriter(out / "o.mp4", 48, 32, 25, PAL) as ow:
            ow.write(Frame(0, None, rgb), lab)
            ow.write(Frame(1, None, rgb[:, :40]), lab)  # wrong size: raises inside the block
    assert _names(out) == []
    with pytest.raises(ValueError):
        OverlayVideoWriter(out / "o.mp4", 48, 32, 25, PAL, alpha=2.0)


# ---- one protocol, real DAVIS frames ----------------------------------------------------------


def _davis_clip(shared_data: Path, n: int = 6) -> list[tuple[Frame, np.ndarray]]:
    """The first ``n`` car-shadow frames (854x480) with their DAVIS annotations as labels."""
    frames_dir = shared_data / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"
    ann_dir = shared_data / "davis_sample" / "Annotations" / "480p" / "car-shadow"
    out = []
    for i, f in enumerate(sorted(frames_dir.glob("*.jpg"))[:n]):
        rgb = np.array(Image.open(f).convert("RGB"))
        labels = np.array(Image.open(ann_dir / f"{f.stem}.png"))
        out.append((Frame(i, i / 24, rgb), labels))
    return out


def test_all_writers_share_one_protocol_on_davis_frames(tmp_path, shared_data):
    clip = _davis_clip(shared_data)
    h, w = clip[0][1].shape
    writers = [PalettePngWriter(tmp_path / "pngs", PAL, workers=2),
               MaskVideoWriter(tmp_path / "masks.mkv", w, h, 24),
               OverlayVideoWriter(tmp_path / "overlay.mp4", w, h, 24, PAL)]
    assert all(isinstance(wr, FrameWriter) for wr in writers)
    for frame, labels in clip:
        for wr in writers:
            wr.write(frame, labels)
    for wr in writers:
        wr.close()
    assert _names(tmp_path / "pngs") == [f"{i:05d}.png" for i in range(len(clip))]
    _, masks = _decode(tmp_path / "masks.mkv")
    _, overlay = _decode(tmp_path / "overlay.mp4")
    assert len(masks) == len(overlay) == len(clip)
    for i, (frame, labels) in enumerate(clip):
        assert np.array_equal(np.array(Image.open(tmp_path / "pngs" / f"{i:05d}.png")), labels)
        assert np.array_equal(masks[i].to_ndarray(format="gray"), labels)
        got = overlay[i].to_ndarray(format="rgb24").astype(int)
        want = overlay_masks(frame.rgb, labels, PAL).astype(int)
        assert np.abs(got - want).mean() < 4  # lossy H.264 of the same picture
    assert [round(float(f.time), 3) for f in masks] == [round(i / 24, 3) for i in range(len(clip))]


def _reference_overlay(rgb: np.ndarray, lab: np.ndarray, alpha: float, contours: bool) -> np.ndarray:
    """The overlay formula pixel by pixel over the whole frame (no bounding box, no lookup tables)."""
    a = int(round(alpha * 256))
    blend = (rgb.astype(np.int64) * (256 - a) + PAL[lab].astype(np.int64) * a + 128) >> 8
    out = np.where(lab[..., None] != 0, blend, rgb).astype(np.uint8)
    if contours:
        p = np.pad(lab, 1, mode="edge")
        border = ((p[:-2, 1:-1] != lab) | (p[2:, 1:-1] != lab) | (p[1:-1, :-2] != lab)
                  | (p[1:-1, 2:] != lab)) & (lab != 0)
        out[border] = PAL[lab[border]]
    return out


@pytest.mark.parametrize("alpha, contours", [(0.5, True), (0.3, False), (1.0, True), (0.0, False)])
def test_overlay_masks_matches_full_frame_formula(shared_data, alpha, contours):
    (frame, labels), = _davis_clip(shared_data, 1)
    rng = np.random.default_rng(3)
    lab = labels.copy()
    lab[300:320, 700:854] = 255  # void touching the right border
    lab[0:5, 0:40] = rng.integers(0, 4, (5, 40))  # noisy labels in the top-left corner
    want = _reference_overlay(frame.rgb, lab, alpha, contours)
    assert np.array_equal(overlay_masks(frame.rgb, lab, PAL, alpha, contours), want)
    canvas = np.zeros((482, 860, 3), np.uint8)  # a strided target, like a video frame's plane
    got = overlay_masks(frame.rgb, lab, PAL, alpha, contours, out=canvas[:480, :854])
    assert got.base is canvas and np.array_equal(canvas[:480, :854], want)
    empty = np.zeros_like(lab)
    assert np.array_equal(overlay_masks(frame.rgb, empty, PAL, alpha, contours), frame.rgb)


# ---- parallel PNG encoding --------------------------------------------------------------------


def test_png_writer_threads_keep_order_and_bytes(tmp_path):
    labs = _labels(25, 48, 64, seed=5)
    for workers in (0, 3):
        with PalettePngWriter(tmp_path / f"w{workers}", PAL, workers=workers) as w:
            for i, lab in enumerate(labs):
                arr = lab.copy()
                w.write(_frame(100 + i, arr.shape), arr)
                arr[:] = 0  # the caller may reuse its array at once
        assert _names(tmp_path / f"w{workers}") == [f"{i:05d}.png" for i in range(25)]
    for i, lab in enumerate(labs):
        data = (tmp_path / "w3" / f"{i:05d}.png").read_bytes()
        assert data == (tmp_path / "w0" / f"{i:05d}.png").read_bytes()
        assert np.array_equal(np.array(Image.open(tmp_path / "w3" / f"{i:05d}.png")), lab)


def _failing_atomic_write(monkeypatch, bad_name: str, delay: float = 0.0):
    import time

    import pipelines.writers.base as writers_base

    real = writers_base.atomic_write

    def fake(path, data, **kw):
        time.sleep(delay)
        if Path(path).name == bad_name:
            raise OSError(28, "No space left on device")
        return real(path, data, **kw)

    monkeypatch.setattr(writers_base, "atomic_write", fake)


@pytest.mark.parametrize("workers", [0, 2])
def test_png_writer_encoding_error_is_output_error_and_leaves_nothing(tmp_path, monkeypatch, workers):
    _failing_atomic_write(monkeypatch, "00004.png")
    out = tmp_path / "seq"
    w = PalettePngWriter(out, PAL, workers=workers)
    with pytest.raises(OutputError) as e:
        for i, lab in enumerate(_labels(30, 8, 8)):
            w.write(_frame(i, lab.shape), lab)
        w.close()
    msg = str(e.value)
    assert str(out / "00004.png") in msg and "No space left on device" in msg and "\n" not in msg
    w.abort()
    assert not out.exists() or _names(out) == []
    with pytest.raises((OutputError, RuntimeError)):
        w.write(_frame(99, (8, 8)), np.zeros((8, 8), np.uint8))


def test_png_writer_error_in_last_frames_surfaces_from_close(tmp_path, monkeypatch):
    _failing_atomic_write(monkeypatch, "00002.png", delay=0.05)
    out = tmp_path / "seq"
    w = PalettePngWriter(out, PAL, workers=2)
    for i, lab in enumerate(_labels(3, 8, 8)):
        w.write(_frame(i, lab.shape), lab)  # too quick for the slow encodes to have failed yet
    with pytest.raises(OutputError, match="00002.png"):
        w.close()
    assert not out.exists()  # close() removed what was written, and the folder it made
    w.abort()  # nothing left to do


def test_png_writer_abort_with_pending_frames_leaves_nothing(tmp_path, monkeypatch):
    _failing_atomic_write(monkeypatch, "never.png", delay=0.02)
    out = tmp_path / "seq"
    w = PalettePngWriter(out, PAL, workers=2)
    for i, lab in enumerate(_labels(4, 8, 8)):
        w.write(_frame(i, lab.shape), lab)
    w.abort()
    assert not out.exists()
