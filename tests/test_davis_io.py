"""DAVIS palette, label PNG I/O and first-frame mask reading (vos/davis.py)."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA
from vos.labels import (
    MaskWarning,
    davis_palette,
    read_first_mask,
    read_label_png,
    write_label_png,
)
from vos.errors import MaskError

DATA = SHARED_DATA
FFO = DATA / "prompts" / "first_frame_only" / "Annotations" / "480p"
SEGGPT = DATA / "prompts" / "seggpt_examples"
CAR = DATA / "davis_sample" / "Annotations" / "480p" / "car-shadow"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA}")


def _save(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _save_p(path: Path, labels: np.ndarray) -> Path:
    arr = np.ascontiguousarray(labels, dtype=np.uint8)
    im = Image.frombuffer("P", (arr.shape[1], arr.shape[0]), arr.tobytes(), "raw", "P", 0, 1)
    im.putpalette(davis_palette().tobytes())
    im.save(path)
    return path


def _png16_rgb(path: Path, w: int, h: int) -> Path:
    """A minimal 16-bit RGB PNG (Pillow would silently read it as 8-bit RGB)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    raw = b"".join(b"\x00" + b"\xff\xff\x00\x00\x00\x00" * w for _ in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return path


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ---- palette ------------------------------------------------------------------------------


def test_palette_known_entries():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[8].tolist() == [64, 0, 0]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256
    pal[0] = 1  # a copy: the next call is unaffected
    assert davis_palette()[0].tolist() == [0, 0, 0]


@needs_data
def test_palette_matches_real_davis_annotation_byte_for_byte():
    ref = Image.open(CAR / "00000.png").getpalette()
    assert bytes(ref) == davis_palette().tobytes()


# ---- label PNGs ---------------------------------------------------------------------------


@needs_data
def test_read_label_png_davis():
    lab = read_label_png(CAR / "00000.png")
    assert lab.shape == (480, 854) and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) == {0, 1}
    tennis = read_label_png(FFO / "tennis" / "00000.png")
    assert set(np.unique(tennis).tolist()) == {0, 1, 2, 255}  # void kept as stored


def test_write_label_png_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    out = tmp_path / "00000.png"
    write_label_png(out, lab)
    im = Image.open(out)
    assert im.mode == "P" and im.size == (53, 37)
    assert bytes(im.getpalette()) == davis_palette().tobytes()
    assert np.array_equal(np.array(im), lab)
    assert np.array_equal(read_label_png(out), lab)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]  # no temp file left
    # custom palette and overwrite
    pal = np.zeros((256, 3), np.uint8)
    pal[1] = (1, 2, 3)
    write_label_png(out, lab // 2, palette=pal)
    assert bytes(Image.open(out).getpalette()) == pal.tobytes()
    assert np.array_equal(read_label_png(out), lab // 2)


def test_write_label_png_errors(tmp_path):
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "a.png", np.full((2, 2), 300))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_label_png(blocker / "a.png", np.zeros((2, 2), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_read_label_png_errors(tmp_path):
    with pytest.raises(MaskError) as e:
        read_label_png(tmp_path / "missing.png")
    _one_line_naming(e, tmp_path / "missing.png")
    rgb = _save(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(MaskError):
        read_label_png(rgb)


# ---- first masks: real data -----------------------------------------------------------------


@needs_data
def test_first_mask_bike_two_objects():
    m = read_first_mask(FFO / "bike" / "00000.png", frame_size=(854, 480))
    assert m.kind == "palette" and m.object_ids == (1, 2)
    assert m.labels.shape == (480, 854) and m.labels.dtype == np.uint8
    assert int((m.labels == 1).sum()) == 6466 and int((m.labels == 2).sum()) == 7971
    assert m.void is None and m.warnings == ()


@needs_data
def test_first_mask_tennis_void():
    m = read_first_mask(FFO / "tennis" / "00000.png")
    assert m.object_ids == (1, 2)
    assert m.void is not None and m.void.dtype == bool and 100 < int(m.void.sum()) < 400
    assert 255 not in np.unique(m.labels)
    assert not m.labels[m.void].any()


@needs_data
def test_first_mask_judo_853_resized_with_warning():
    path = FFO / "judo" / "00005.png"
    with pytest.warns(MaskWarning) as rec:
        m = read_first_mask(path, frame_size=(854, 480))
    msgs = [str(r.message) for r in rec]
    assert any(str(path) in s and "853x480" in s and "854x480" in s for s in msgs)
    assert all("\n" not in s for s in msgs)
    assert m.labels.shape == (480, 854) and m.object_ids == (2,) and m.source_size == (853, 480)
    assert m.warnings and "853x480" in m.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = read_first_mask(path)  # no frame size: no resize, no warning
    assert plain.labels.shape == (480, 853)


@needs_data
def test_first_mask_judo_later_ids_and_car_shadow():
    assert read_first_mask(FFO / "judo" / "00013.png").object_ids == (4,)  # ids kept as given
    m = read_first_mask(CAR / "00000.png", frame_size=(854, 480))
    assert m.object_ids == (1,) and m.kind == "palette"


@needs_data
@pytest.mark.parametrize("name", ["hmbb_1_target.png", "hmbb_2_target.png", "hmbb_3_target.png",
                                  "video_1_target.png", "video_2_target.png", "video_3_target.png"])
def test_first_mask_seggpt_antialiased_rgb_is_binary(name):
    path = SEGGPT / name
    rgb = np.array(Image.open(path).convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # many grey levels
    m = read_first_mask(path)
    assert m.kind == "binary" and m.object_ids == (1,)
    assert np.array_equal(m.labels, (rgb.max(axis=2) > 127).astype(np.uint8))


@needs_data
def test_first_mask_palette_png_named_jpg_is_read_by_content():
    with pytest.warns(MaskWarning, match="rather than a mask"):
        m = read_first_mask(SEGGPT / "hmbb_3.jpg")
    assert m.mode == "P" and m.kind == "palette" and m.labels.shape == (400, 700)


@needs_data
def test_first_mask_jpeg_photo_rejected():
    with pytest.raises(MaskError) as e:
        read_first_mask(SEGGPT / "hmbb_1.jpg")
    _one_line_naming(e, SEGGPT / "hmbb_1.jpg")


# ---- first masks: synthetic formats ---------------------------------------------------------


def test_grey_ids_binary_and_void(tmp_path):
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 2:8] = 3
    ids[10:18, 10:20] = 7
    m = read_first_mask(_save(tmp_path / "ids.png", ids))
    assert m.mode == "L" and m.kind == "ids" and m.object_ids == (3, 7)
    assert np.array_equal(m.labels, ids)

    ids[0, :] = 255
    m = read_first_mask(_save(tmp_path / "void.png", ids))
    assert m.object_ids == (3, 7) and m.void is not None and int(m.void.sum()) == 30

    binary = np.where(ids == 7, 255, 0).astype(np.uint8)
    m = read_first_mask(_save(tmp_path / "bin.png", binary))
    assert m.kind == "binary" and m.object_ids == (1,) and int(m.labels.sum()) == 80


def test_grey_antialiased_binary(tmp_path):
    big = np.zeros((160, 160), np.uint8)
    yy, xx = np.mgrid[:160, :160]
    big[(yy - 80) ** 2 + (xx - 80) ** 2 < 50 ** 2] = 255
    small = np.array(Image.fromarray(big).resize((40, 40), Image.Resampling.BILINEAR))
    assert len(np.unique(small)) > 5
    m = read_first_mask(_save(tmp_path / "aa.png", small))
    assert m.kind == "binary" and m.object_ids == (1,)
    assert np.array_equal(m.labels, (small > 127).astype(np.uint8))


def test_mode_1_and_la(tmp_path):
    arr = np.zeros((10, 12), bool)
    arr[3:7, 4:9] = True
    Image.fromarray(arr).save(tmp_path / "one.png")
    m = read_first_mask(tmp_path / "one.png")
    assert m.mode == "1" and m.object_ids == (1,) and int(m.labels.sum()) == 20

    la = np.zeros((10, 12, 2), np.uint8)
    la[..., 0] = 255  # white everywhere ...
    la[3:7, 4:9, 1] = 255  # ... but opaque only here
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    m = read_first_mask(tmp_path / "la.png")
    assert m.mode == "LA" and m.object_ids == (1,) and int(m.labels.sum()) == 20


def test_rgb_davis_colours_keep_palette_ids(tmp_path):
    pal = davis_palette()
    lab = np.zeros((20, 20), np.uint8)
    lab[1:6, 1:6] = 5
    lab[10:15, 10:15] = 2
    lab[0, :] = 255
    m = read_first_mask(_save(tmp_path / "rgb.png", pal[lab]))
    assert m.kind == "colour" and m.object_ids == (2, 5)
    assert m.void is not None and int(m.void.sum()) == 20
    assert np.array_equal(m.labels, np.where(lab == 255, 0, lab))
    assert m.colours == {2: (0, 128, 0), 5: (128, 0, 128)}


def test_rgb_custom_colours_first_appearance_order(tmp_path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[1:6, 10:16] = (255, 0, 0)     # first in raster order: not a DAVIS colour -> 2 (1 is taken)
    rgb[8:14, 1:6] = (128, 0, 0)      # DAVIS entry 1 -> id 1
    rgb[15:19, 12:18] = (0, 255, 255)  # -> 3
    m = read_first_mask(_save(tmp_path / "c.png", rgb))
    assert m.object_ids == (1, 2, 3)
    assert m.colours == {1: (128, 0, 0), 2: (255, 0, 0), 3: (0, 255, 255)}
    assert (m.labels[3, 12], m.labels[10, 3], m.labels[16, 14]) == (2, 1, 3)


def test_rgb_antialiased_colours_not_split(tmp_path):
    h, w = 60, 100
    yy, xx = np.mgrid[:h, :w]
    rgb = np.zeros((h, w, 3), np.uint8)
    discs = [((20, 25, 12), (255, 0, 0)), ((35, 70, 15), (0, 128, 0)), ((48, 30, 6), (10, 200, 250))]
    for (cy, cx, r), col in discs:
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2] = col
    aa = np.array(Image.fromarray(rgb).resize((w * 4, h * 4), Image.Resampling.NEAREST)
                  .resize((w, h), Image.Resampling.BILINEAR))
    assert len(np.unique(aa.reshape(-1, 3), axis=0)) > 10
    m = read_first_mask(_save(tmp_path / "aa.png", aa))
    assert m.kind == "colour" and m.object_ids == (1, 2, 3)
    assert m.colours == {1: (255, 0, 0), 2: (0, 128, 0), 3: (10, 200, 250)}
    for (cy, cx, _r), col in discs:
        ref = (rgb == col).all(axis=2)
        obj = m.labels == m.labels[cy, cx]
        assert (obj & ref).sum() / (obj | ref).sum() > 0.85


def test_rgba_transparent_is_background(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = (255, 0, 0)
    rgba[2:6, 2:6, 3] = 255
    m = read_first_mask(_save(tmp_path / "a.png", rgba))
    assert m.object_ids == (1,) and int(m.labels.sum()) == 16


def test_jpeg_binary_mask_warns(tmp_path):
    arr = np.zeros((32, 32), np.uint8)
    arr[8:24, 8:24] = 255
    Image.fromarray(arr).save(tmp_path / "m.jpg", quality=90)
    with pytest.warns(MaskWarning, match="JPEG"):
        m = read_first_mask(tmp_path / "m.jpg")
    assert m.object_ids == (1,) and abs(int(m.labels.sum()) - 256) < 16


# ---- first masks: errors --------------------------------------------------------------------


def test_error_missing_directory_and_not_an_image(tmp_path):
    for path in (tmp_path / "nope.png", tmp_path):
        with pytest.raises(MaskError) as e:
            read_first_mask(path)
        _one_line_naming(e, path)
    txt = tmp_path / "mask.png"
    txt.write_text("this is not a PNG\n")
    with pytest.raises(MaskError, match="not an image") as e:
        read_first_mask(txt)
    _one_line_naming(e, txt)
    assert issubclass(MaskError, ValueError)


def test_error_empty(tmp_path):
    for name, arr in (("zero_p.png", None), ("zero_l.png", np.zeros((8, 8), np.uint8)),
                      ("black.png", np.zeros((8, 8, 3), np.uint8))):
        path = _save_p(tmp_path / name, np.zeros((8, 8), np.uint8)) if arr is None else _save(
            tmp_path / name, arr)
        with pytest.raises(MaskError, match="no object") as e:
            read_first_mask(path)
        _one_line_naming(e, path)
    void_only = np.zeros((8, 8), np.uint8)
    void_only[0] = 255
    with pytest.raises(MaskError, match="void"):
        read_first_mask(_save_p(tmp_path / "void.png", void_only))


def test_error_16_bit(tmp_path):
    arr = np.zeros((8, 8), np.uint16)
    arr[2:5, 2:5] = 1000
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    with pytest.raises(MaskError, match="16-bit") as e:
        read_first_mask(path)
    _one_line_naming(e, path)
    rgb16 = _png16_rgb(tmp_path / "rgb16.png", 4, 3)
    with pytest.raises(MaskError, match="16-bit"):
        read_first_mask(rgb16)


def test_error_too_many_objects(tmp_path):
    n = 300
    rgb = np.zeros((3 * 20, 3 * 15, 3), np.uint8)
    for k in range(n):
        r, c = divmod(k, 15)
        rgb[3 * r:3 * r + 3, 3 * c:3 * c + 3] = (10 + k % 200, 5 + k // 200, 77)
    path = _save(tmp_path / "many.png", rgb)
    with pytest.raises(MaskError, match="objects") as e:
        read_first_mask(path)
    assert "300" in _one_line_naming(e, path)


def test_error_size_mismatch_names_both_sizes(tmp_path):
    lab = np.zeros((100, 100), np.uint8)
    lab[10:20, 10:20] = 1
    path = _save_p(tmp_path / "sq.png", lab)
    with pytest.raises(MaskError) as e:
        read_first_mask(path, frame_size=(854, 480))
    msg = _one_line_naming(e, path)
    assert "100x100" in msg and "854x480" in msg
    # same aspect ratio: resized with a warning, ids and void kept
    lab[0, :] = 255
    with pytest.warns(MaskWarning, match="200x200"):
        m = read_first_mask(_save_p(tmp_path / "sq2.png", lab), frame_size=(200, 200))
    assert m.labels.shape == (200, 200) and m.object_ids == (1,)
    assert int((m.labels == 1).sum()) == 400 and m.void is not None and m.void[:2].all()
