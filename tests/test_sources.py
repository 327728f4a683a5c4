"""Tests of pipelines.sources: video files and frame folders, validation, corruption, rotation."""

from __future__ import annotations

import gc
import math
import os
import shutil
import warnings
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PipelineError, VideoDecodeError
from pipelines.sources import (
    CorruptVideoError,
    Frame,
    FrameFolderSource,
    FrameGapWarning,
    PartialVideoWarning,
    VideoFileSource,
    natural_sort_key,
    open_source,
)
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
DAVIS_FRAMES = DATA / "davis_sample" / "JPEGImages" / "480p" / "car-shadow"

FORMATS = {  # extension -> codec
    "mp4": "libx264",
    "mkv": "libx264",
    "webm": "libvpx-vp9",
    "avi": "mpeg4",
    "mov": "libx264",
}


def _codec_ok(codec: str) -> bool:
    return codec in av.codecs_available


def write_video(
    path: Path,
    frames,
    *,
    codec: str = "libx264",
    rate: int = 25,
    pts_ms: list[int] | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    vflip: bool = False,
    container_options: dict | None = None,
) -> Path:
    """Encode (H, W, 3) uint8 frames with PyAV; ``pts_ms`` gives explicit (VFR) timestamps."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "veryfast"}
        elif codec == "mpeg4":
            s.bit_rate = 4_000_000
        elif codec == "libvpx-vp9":
            s.options = {"deadline": "realtime", "cpu-used": "8"}
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip or vflip:
            s.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        for i, img in enumerate([first, *frames]):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts_ms is not None:
                vf.pts = pts_ms[i]
                vf.time_base = Fraction(1, 1000)
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def gray_frames(n: int, h: int = 48, w: int = 64):
    """Flat frames whose gray level encodes the index (level = 4 * i)."""
    for i in range(n):
        yield np.full((h, w, 3), (4 * i) % 256, np.uint8)


def noisy_frames(n: int = 60, h: int = 64, w: int = 96):
    """Hard-to-compress frames, so that every frame has a sizeable packet."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img[:, : (2 * i) % w] = 200
        yield img


def read_all(source) -> list[Frame]:
    return list(source)


def one_line_naming(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert path.name in msg, msg
    assert "\n" not in msg, msg
    assert "Traceback" not in msg


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vids")


@pytest.fixture(scope="module")
def gray_videos(vids) -> dict[str, Path]:
    out = {}
    for ext, codec in FORMATS.items():
        if _codec_ok(codec):
            out[ext] = write_video(vids / f"gray.{ext}", gray_frames(60), codec=codec)
    return out


@pytest.fixture(scope="module")
def noisy_videos(vids) -> dict[str, Path]:
    out = {}
    for ext, codec in FORMATS.items():
        if _codec_ok(codec):
            out[ext] = write_video(vids / f"noisy.{ext}", noisy_frames(), codec=codec)
    out["mp4-faststart"] = write_video(
        vids / "noisy_faststart.mp4", noisy_frames(), container_options={"movflags": "faststart"}
    )
    return out


def _variant(path: Path, tag: str, data: bytes) -> Path:
    out = path.with_name(f"{path.stem}_{tag}{path.suffix}")
    out.write_bytes(data)
    return out


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    return _variant(path, "trunc", data[: len(data) // 2])


def garbled(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    return _variant(path, "garbage", bytes(data))


# --------------------------------------------------------------------------- video files


@pytest.mark.parametrize("ext", list(FORMATS))
def test_video_formats_count_size_order_pts(gray_videos, ext):
    if ext not in gray_videos:
        pytest.skip(f"encoder {FORMATS[ext]} not available")
    path = gray_videos[ext]
    with open_source(path) as src:
        assert isinstance(src, VideoFileSource)
        assert (src.width, src.height) == (64, 48)
        assert src.fps == pytest.approx(25.0)
        assert src.num_frames == 60
        assert src.name == "gray"
        assert src.path == path
        frames = read_all(src)
    assert [f.index for f in frames] == list(range(60))
    for f in frames:
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.rgb.flags.c_contiguous
        assert abs(float(f.rgb.mean()) - 4 * f.index) < 3, (f.index, f.rgb.mean())
    assert np.all(np.diff([f.rgb.mean() for f in frames]) > 0)  # presentation order
    pts = np.array([f.pts for f in frames])
    assert pts[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(np.diff(pts), 0.04, atol=1e-3)


def test_video_can_be_iterated_twice_and_closed_twice(gray_videos):
    src = open_source(gray_videos["mp4"])
    first = [f.rgb.mean() for f in src]
    second = [f.rgb.mean() for f in src]
    assert len(first) == len(second) == 60
    np.testing.assert_allclose(first, second)
    src.close()
    src.close()


def test_close_before_iterating_releases_the_first_frame(gray_videos):
    src = open_source(gray_videos["mkv"])
    src.close()  # must not raise nor leak


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_variable_frame_rate_pts(vids, ext):
    pts_ms = [0, 40, 120, 130, 300, 310, 500, 1000, 1033, 1066]
    path = write_video(vids / f"vfr.{ext}", gray_frames(len(pts_ms)), pts_ms=pts_ms, rate=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # irregular from the start: no gap warning
        with open_source(path) as src:
            frames = read_all(src)
    assert [f.index for f in frames] == list(range(len(pts_ms)))
    np.testing.assert_allclose([f.pts for f in frames], np.array(pts_ms) / 1000, atol=1e-3)
    assert [round(f.rgb.mean() / 4) for f in frames] == list(range(len(pts_ms)))


@pytest.mark.skipif(not DAVIS_FRAMES.is_dir(), reason="DAVIS sample not available")
def test_davis_frames_as_video(vids):
    jpgs = sorted(DAVIS_FRAMES.glob("*.jpg"))
    assert len(jpgs) == 40
    refs = [np.asarray(Image.open(p).convert("RGB")) for p in jpgs]
    path = write_video(vids / "car-shadow.mp4", iter(refs), rate=24)
    with open_source(path) as src:
        assert (src.width, src.height, src.num_frames, src.name) == (854, 480, 40, "car-shadow")
        assert src.fps == pytest.approx(24.0)
        frames = read_all(src)
    assert len(frames) == 40

    def mad(a, b):
        return float(np.abs(a[::4, ::4].astype(np.int16) - b[::4, ::4]).mean())

    for i, f in enumerate(frames):
        assert f.rgb.shape == (480, 854, 3)
        own = mad(f.rgb, refs[i])
        assert own < 6, (i, own)
        for j in (i - 1, i + 1):  # order: closer to its own source frame than to neighbours
            if 0 <= j < 40:
                assert own < mad(f.rgb, refs[j]), (i, j)
    np.testing.assert_allclose([f.pts for f in frames], np.arange(40) / 24, atol=1e-3)


# --------------------------------------------------------------------------- frame folders


@pytest.mark.skipif(not DAVIS_FRAMES.is_dir(), reason="DAVIS sample not available")
def test_davis_frame_folder():
    with open_source(DAVIS_FRAMES) as src:
        assert isinstance(src, FrameFolderSource)
        assert (src.width, src.height, src.num_frames, src.name, src.fps) == (854, 480, 40, "car-shadow", None)
        for i, f in enumerate(src):
            assert f.index == i and f.pts is None
            assert f.rgb.flags.c_contiguous and f.rgb.dtype == np.uint8
            if i in (0, 17, 39):
                ref = np.asarray(Image.open(DAVIS_FRAMES / f"{i:05d}.jpg").convert("RGB"))
                np.testing.assert_array_equal(f.rgb, ref)
    assert open_source(DAVIS_FRAMES, fps=24).fps == 24.0


def test_folder_natural_sort_modes_and_ignored_files(tmp_path):
    names = {"frame10.jpeg": "RGB", "frame2.JPG": "L", "frame1.png": "RGBA", "frame03.PNG": "P"}
    for name, mode in names.items():
        level = {"frame1.png": 10, "frame2.JPG": 60, "frame03.PNG": 102, "frame10.jpeg": 160}[name]
        Image.new("RGB", (20, 12), (level,) * 3).convert(mode).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    Image.new("RGB", (5, 5)).save(tmp_path / ".hidden.png")
    (tmp_path / "sub.png").mkdir()
    with open_source(tmp_path) as src:
        assert src.num_frames == 4 and (src.width, src.height) == (20, 12)
        assert [p.name for p in src.files] == ["frame1.png", "frame2.JPG", "frame03.PNG", "frame10.jpeg"]
        frames = read_all(src)
    assert [f.rgb.shape for f in frames] == [(12, 20, 3)] * 4
    assert [int(f.rgb[0, 0, 0]) for f in frames] == pytest.approx([10, 60, 102, 160], abs=3)


def test_folder_16_bit_png_is_scaled(tmp_path):
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "0.png")
    with open_source(tmp_path) as src:
        rgb = next(iter(src)).rgb
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8 and abs(int(rgb[0, 0, 0]) - 128) <= 1


def test_natural_sort_key():
    names = ["10.jpg", "2.jpg", "1.jpg", "b.jpg", "A.jpg", "img_002.png", "img_1.png"]
    assert sorted(names, key=natural_sort_key) == ["1.jpg", "2.jpg", "10.jpg", "A.jpg", "b.jpg", "img_1.png", "img_002.png"]


def test_folder_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "0.jpg", exif=exif)
    with open_source(tmp_path) as src:
        assert (src.width, src.height) == (10, 30)
        assert next(iter(src)).rgb.shape == (30, 10, 3)


def test_folder_frame_of_another_size(tmp_path):
    for i in range(3):
        Image.new("RGB", (16, 16)).save(tmp_path / f"{i}.png")
    Image.new("RGB", (16, 8)).save(tmp_path / "3.png")
    for allow_partial in (False, True):
        with open_source(tmp_path, allow_partial=allow_partial) as src:
            it = iter(src)
            assert [next(it).index for _ in range(3)] == [0, 1, 2]
            with pytest.raises(VideoDecodeError) as ei:
                next(it)
            one_line_naming(ei.value, tmp_path / "3.png")
            assert "16x8" in str(ei.value)


def test_folder_corrupt_image_strict_and_partial(tmp_path):
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 40,) * 3).save(tmp_path / f"{i}.jpg")
    (tmp_path / "2.jpg").write_bytes((tmp_path / "2.jpg").read_bytes()[:40])
    with open_source(tmp_path) as src:
        with pytest.raises(CorruptVideoError) as ei:
            read_all(src)
    one_line_naming(ei.value, tmp_path / "2.jpg")
    assert ei.value.good_frames == 2
    with open_source(tmp_path, allow_partial=True) as src:
        with pytest.warns(PartialVideoWarning, match="corrupt after frame 2"):
            frames = read_all(src)
    assert len(frames) == 2


# --------------------------------------------------------------------------- bad inputs


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for i in range(5):
            frame.pts = i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _no_decodable_frames(path: Path) -> Path:
    write_video(path, gray_frames(2))
    with av.open(str(path)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    for pos, size in packets:
        data[pos : pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing.mp4", "no such file"),
        ("text.mp4", "not a readable video"),
        ("notes.txt", "not a video"),
        ("image_png.mp4", "not a video"),
        ("image_jpg.mp4", "not a video"),
        ("image.png", "not a video"),
        ("empty.mp4", "empty"),
        ("audio.m4a", "no video stream"),
        ("zeroed.mkv", "no decodable frames"),
        ("empty_folder", "no frames"),
        ("folder_without_images", "no frames"),
        ("folder_bad_first_image", "cannot read the image"),
    ],
)
def test_bad_inputs_fail_at_open_with_one_line(tmp_path, case, expected):
    path = tmp_path / case
    if case in ("text.mp4", "notes.txt"):
        path.write_text("hello, this is not a video\n" * 20)
    elif case.startswith("image"):
        fmt = "JPEG" if "jpg" in case else "PNG"
        Image.new("RGB", (32, 32), (1, 2, 3)).save(path, format=fmt)
    elif case == "empty.mp4":
        path.write_bytes(b"")
    elif case == "audio.m4a":
        _audio_only(path)
    elif case == "zeroed.mkv":
        _no_decodable_frames(path)
    elif case == "empty_folder":
        path.mkdir()
    elif case == "folder_without_images":
        path.mkdir()
        (path / "readme.txt").write_text("x")
        (path / "clip.mp4").write_bytes(b"\0" * 10)
    elif case == "folder_bad_first_image":
        path.mkdir()
        (path / "00000.jpg").write_bytes(b"not a jpeg")
        path = path / "00000.jpg"
    target = path.parent if case == "folder_bad_first_image" else path
    for allow_partial in (False, True):
        with pytest.raises(VideoDecodeError, match=expected) as ei:
            open_source(target, allow_partial=allow_partial)
        one_line_naming(ei.value, path)
        assert isinstance(ei.value, PipelineError)


def test_unreadable_file(gray_videos, tmp_path, monkeypatch):
    path = tmp_path / "locked.mp4"
    shutil.copy(gray_videos["mp4"], path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root ignores permissions: simulate the check failing
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
        with pytest.raises(VideoDecodeError, match="permission") as ei:
            open_source(path)
        one_line_naming(ei.value, path)
    finally:
        path.chmod(0o644)


def test_bad_fps_argument(gray_videos):
    for fps in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            open_source(gray_videos["mp4"], fps=fps)


# --------------------------------------------------------------------------- corruption


CORRUPT_CASES = [
    # (video key, damage, how it shows): "open" = rejected by open_source whatever
    # allow_partial says; "error" = CorruptVideoError while iterating; "error-or-gap" = either
    # that or a FrameGapWarning (the Matroska demuxer may resynchronise after the garbage).
    ("mp4", "trunc", "open"),  # moov index at the end: nothing left to open
    ("mov", "trunc", "open"),
    ("mp4-faststart", "trunc", "error"),
    ("mkv", "trunc", "error"),
    ("webm", "trunc", "error"),
    ("avi", "trunc", "error"),
    ("mp4", "garbage", "error"),
    ("mp4-faststart", "garbage", "error"),
    ("mov", "garbage", "error"),
    ("mkv", "garbage", "error-or-gap"),
    ("webm", "garbage", "error"),
    ("avi", "garbage", "error"),
]


def _collect(path: Path, **kw) -> tuple[list[Frame], BaseException | None, list[warnings.WarningMessage]]:
    frames, error = [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_source(path, **kw) as src:
            try:
                for f in src:
                    frames.append(f)
            except VideoDecodeError as exc:
                error = exc
    return frames, error, list(caught)


@pytest.mark.parametrize("key, damage, shows", CORRUPT_CASES)
def test_corrupt_videos(noisy_videos, key, damage, shows):
    if key not in noisy_videos:
        pytest.skip("encoder not available")
    original = noisy_videos[key]
    path = truncated(original) if damage == "trunc" else garbled(original)
    if shows == "open":
        for allow_partial in (False, True):
            with pytest.raises(VideoDecodeError) as ei:
                open_source(path, allow_partial=allow_partial)
            one_line_naming(ei.value, path)
        return

    frames, error, caught = _collect(path)
    if error is None:
        assert shows == "error-or-gap", "corruption not detected"
        gaps = [w for w in caught if issubclass(w.category, FrameGapWarning)]
        assert len(gaps) == 1 and path.name in str(gaps[0].message)
        assert 1 <= len(frames) < 60
        return
    assert isinstance(error, CorruptVideoError)
    one_line_naming(error, path)
    good = error.good_frames
    assert 1 <= good < 60 and len(frames) == good
    assert f"corrupt after frame {good}" in str(error)

    partial_frames, error, caught = _collect(path, allow_partial=True)
    assert error is None
    partial = [w for w in caught if issubclass(w.category, PartialVideoWarning)]
    assert len(partial) == 1, [str(w.message) for w in caught]
    assert path.name in str(partial[0].message) and "\n" not in str(partial[0].message)
    assert len(partial_frames) == good
    # The frames before the damage decode as in the intact file (the last one may carry
    # damage the decoder concealed, e.g. garbage starting inside its payload).
    with open_source(original) as src:
        for f, ref in zip(partial_frames[:-1], src):
            assert np.abs(f.rgb.astype(np.int16) - ref.rgb).mean() < 1.0, f.index


def test_timestamp_gap_in_constant_rate_video_warns(vids):
    pts_ms = [40 * i for i in range(30) if not 10 <= i < 15]
    path = write_video(vids / "gap.mkv", gray_frames(len(pts_ms)), pts_ms=pts_ms)
    frames, error, caught = _collect(path)
    assert error is None and len(frames) == len(pts_ms)
    gaps = [w for w in caught if issubclass(w.category, FrameGapWarning)]
    assert len(gaps) == 1 and "gap.mkv" in str(gaps[0].message) and "0.360 s to 0.600 s" in str(gaps[0].message)


def test_intact_noisy_videos_are_not_flagged(noisy_videos):
    for key, path in noisy_videos.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_source(path) as src:
                assert sum(1 for _ in src) == 60, key


# --------------------------------------------------------------------------- rotation


def quadrant_image(h: int = 32, w: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 255, 255)
    img[: h // 2, w // 2 :] = (255, 0, 0)
    img[h // 2 :, : w // 2] = (0, 255, 0)
    img[h // 2 :, w // 2 :] = (0, 0, 255)
    return img


def quadrants(img: np.ndarray) -> list[tuple[int, ...]]:
    h, w = img.shape[:2]
    return [
        tuple(int(v > 128) for v in img[r * h // 2 + h // 4, c * w // 2 + w // 4])
        for r in range(2)
        for c in range(2)
    ]


ORIENTATIONS = [(0, False, False), (90, False, False), (-90, False, False), (180, False, False),
                (0, True, False), (0, False, True), (90, True, False), (90, False, True)]


@pytest.mark.parametrize("degrees, hflip, vflip", ORIENTATIONS)
def test_rotation_metadata_is_applied(vids, degrees, hflip, vflip):
    img = quadrant_image()
    path = write_video(vids / f"rot_{degrees}_{int(hflip)}{int(vflip)}.mp4", [img] * 3,
                       rotation=degrees, hflip=hflip, vflip=vflip)
    expected = np.rot90(img, degrees // 90)  # counter-clockwise, then the mirrors
    if hflip:
        expected = expected[:, ::-1]
    if vflip:
        expected = expected[::-1]
    with open_source(path) as src:
        assert (src.height, src.width) == expected.shape[:2]
        frames = read_all(src)
    for f in frames:
        assert f.rgb.shape == expected.shape and f.rgb.flags.c_contiguous
        assert quadrants(f.rgb) == quadrants(expected)


@pytest.mark.parametrize("ext", ["mkv", "mov", "webm"])
def test_rotation_other_containers(vids, ext):
    if not _codec_ok(FORMATS[ext]):
        pytest.skip("encoder not available")
    img = quadrant_image()
    path = write_video(vids / f"rot90.{ext}", [img] * 2, codec=FORMATS[ext], rotation=-90)
    with open_source(path) as src:
        assert (src.width, src.height) == (32, 64)
        assert quadrants(next(iter(src)).rgb) == quadrants(np.rot90(img, -1))


def _display_rotation_get(m: np.ndarray) -> float:
    """libavutil ``av_display_rotation_get``: the clockwise angle (degrees) of a display matrix."""
    v = [float(x) / 65536 for x in m[:6]]
    s0, s1 = math.hypot(v[0], v[3]), math.hypot(v[1], v[4])
    return -math.degrees(math.atan2(v[1] / s1, v[0] / s0))


def _ffmpeg_cli_autorotate_filters(m: np.ndarray) -> list[tuple[str, str | None]]:
    """The filters the ``ffmpeg`` command line inserts for autorotate (fftools ``get_rotation``
    and the display-matrix branch of ``configure_input_video_filter``)."""
    theta = -round(_display_rotation_get(m))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if m[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        return [f for f, on in ((("hflip", None), m[0] < 0), (("vflip", None), m[4] < 0)) if on]
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if m[3] < 0 else "cclock")]
    return [("vflip", None)] if abs(theta) < 1 and m[4] < 0 else []


def ffmpeg_cli_first_frame(path: Path) -> np.ndarray:
    """The first frame as ``ffmpeg -i path -f rawvideo -pix_fmt rgb24`` shows it, without the
    command line: the raw decoded frame through the same libavfilter filters autorotate uses."""
    from av.sidedata.sidedata import Type

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        raw = next(c.decode(stream))
        sd = raw.side_data.get(Type.DISPLAYMATRIX)  # none: nothing to turn (identity)
        filters = [] if sd is None else _ffmpeg_cli_autorotate_filters(np.frombuffer(bytes(sd), np.int32)[:9])
        graph = av.filter.Graph()
        last = graph.add_buffer(template=stream)
        for name, arg in filters:
            node = graph.add(name, arg)
            last.link_to(node)
            last = node
        last.link_to(graph.add("buffersink"))
        graph.configure()
        graph.push(raw)
        return graph.pull().to_ndarray(format="rgb24")


@pytest.mark.parametrize("degrees, hflip, vflip", ORIENTATIONS)
def test_rotation_matches_ffmpeg_cli_autorotate(vids, degrees, hflip, vflip):
    img = quadrant_image()
    # the display matrix is set on the stream by PyAV (no ffmpeg command line needed)
    path = write_video(vids / f"cli_{degrees}_{int(hflip)}{int(vflip)}.mp4", [img] * 2,
                       rotation=degrees, hflip=hflip, vflip=vflip)
    with open_source(path) as src:
        ours = next(iter(src)).rgb
    reference = ffmpeg_cli_first_frame(path)
    assert reference.shape == ours.shape
    assert quadrants(reference) == quadrants(ours)


# --------------------------------------------------------------------------- memory


@pytest.mark.slow  # decodes 300 frames
def test_source_does_not_hold_frames(vids):
    path = write_video(vids / "long.mp4", gray_frames(300, 64, 64))
    alive_max = 0
    refs: list[weakref.ref] = []
    with open_source(path) as src:
        assert src.num_frames == 300
        count = 0
        for frame in src:
            refs.append(weakref.ref(frame.rgb))
            refs.append(weakref.ref(frame))
            del frame
            if count % 10 == 0:
                gc.collect()
            alive_max = max(alive_max, sum(r() is not None for r in refs))
            count += 1
        assert count == 300
    gc.collect()
    assert alive_max <= 4, alive_max  # at most the current frame (+ rgb) and one being built
    assert sum(r() is not None for r in refs) == 0


def test_folder_source_does_not_hold_frames(tmp_path):
    for i in range(30):
        Image.new("RGB", (64, 64), (i, i, i)).save(tmp_path / f"{i}.png")
    refs = []
    with open_source(tmp_path) as src:
        for frame in src:
            refs.append(weakref.ref(frame.rgb))
            del frame
            assert sum(r() is not None for r in refs) <= 1
    gc.collect()
    assert all(r() is None for r in refs)


# --------------------------------------------------------------------------- with the runner


def test_video_source_through_the_runner_keeps_few_frames_alive(vids):
    from pipelines.runner import run_pipeline

    path = write_video(vids / "runner.mkv", gray_frames(120, 64, 64))
    refs: list[weakref.ref] = []
    peak = 0
    written = []

    def process(frame: Frame) -> tuple[int, np.ndarray]:
        nonlocal peak
        refs.append(weakref.ref(frame.rgb))
        peak = max(peak, sum(r() is not None for r in refs))
        return frame.index, (frame.rgb[..., 0] > 127).astype(np.uint8)

    with open_source(path) as src:
        stats = run_pipeline(src, process, lambda r: written.append(r[0]), read_ahead=2, write_behind=2)
    assert written == list(range(120)) and stats.items_written == 120
    assert peak <= 2 + 4, peak  # queued + the ones held by the reader / decoder and the model


def test_corrupt_video_error_propagates_through_the_runner(noisy_videos):
    from pipelines.runner import run_pipeline

    path = garbled(noisy_videos["mp4"])
    written = []
    with open_source(path) as src:
        with pytest.raises(CorruptVideoError, match="corrupt after frame") as ei:
            run_pipeline(src, lambda f: f.index, written.append, read_ahead=1, write_behind=1)
    # in order, and nothing past the damage (queued frames may be dropped when it stops)
    assert written == list(range(len(written))) and len(written) <= ei.value.good_frames
