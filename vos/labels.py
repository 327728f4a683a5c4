"""Label maps and images as the ``vos`` layer reads and writes them: the DAVIS palette, palette-PNG
label maps, first-frame masks in every format the CLI takes, and images (:func:`read_image`).

A *label map* is an ``(H, W)`` ``uint8`` array: 0 is background, 1..254 are object ids and 255 is
*void* (the DAVIS convention: pixels excluded from evaluation and never an object). DAVIS stores label
maps as palette-mode (``P``) PNGs whose pixel values are the ids and whose palette is
:func:`davis_palette`.

:func:`read_first_mask` is the forgiving reader for the user's first-frame prompt. It accepts

* a palette (``P``) PNG: the indices are the object ids, kept as given (they need not be contiguous);
  index 255 is void. The palette itself is ignored (some tools write an *almost* DAVIS palette).
* a grayscale (``L``, ``LA`` or ``1``) image: see :func:`read_first_mask` for the rule
  (ids, or 0/255 binary, or anti-aliased binary).
* an RGB / RGBA colour mask: one object per colour; see :func:`read_first_mask` for the rule.

No torch here: numpy, Pillow and the PNG encoder and image loader of :mod:`pipelines`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipelines.sources import load_image
from pipelines.writers import save_label_png
from seggpt_model.errors import one_line
from vos.errors import MaskError, UserError

__all__ = [
    "VOID_ID",
    "MAX_OBJECTS",
    "FirstMask",
    "MaskWarning",
    "davis_palette",
    "read_label_png",
    "write_label_png",
    "read_first_mask",
    "read_image",
]

#: Label value of void pixels in DAVIS annotations (ignored by the evaluation, never an object).
VOID_ID = 255

#: Object ids are 1..254, so at most 254 objects fit in a uint8 label map next to background and void.
MAX_OBJECTS = 254

#: Fraction of a colour's pixels that must be interior (all 4 neighbours of the same colour) for it
#: to count as a real object colour in an RGB mask rather than an anti-aliasing blend.
_INTERIOR_FRACTION = 0.05

#: Colours whose channels differ by at most this much are "grey" in an RGB mask.
_GREY_TOLERANCE = 16

#: More objects than this in a first mask is suspicious (probably a photo, not a mask): warn.
_MANY_OBJECTS = 64

#: A JPEG mask may have at most this fraction of pixels with mid levels (48..207): edges only.
_JPEG_MID_FRACTION = 0.05

#: Two sizes whose aspect ratios differ by at most this fraction are resized instead of rejected.
_ASPECT_TOLERANCE = 0.01


class MaskWarning(UserWarning):
    """A first-frame mask was accepted but changed (e.g. resized to the frame size)."""


@lru_cache(maxsize=1)
def _palette_cached() -> bytes:
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal.tobytes()


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map, the palette of every DAVIS annotation PNG.

    Bit formula: write the index ``i`` in binary as ``... b5 b4 b3 b2 b1 b0``. Bits ``b0, b3, b6``
    (every third bit from bit 0) give red, bits ``b1, b4, b7`` give green, bits ``b2, b5`` give blue,
    and the first bit of each group is the *most* significant bit of the channel: bit ``3*j + k`` of
    ``i`` sets bit ``7 - j`` of channel ``k``. Hence index 0 = (0, 0, 0), 1 = (128, 0, 0),
    2 = (0, 128, 0), 3 = (128, 128, 0), 4 = (0, 0, 128), 8 = (64, 0, 0), ...,
    255 = (224, 224, 192) (the void colour).

    Returns:
        ``(256, 3)`` ``uint8`` array of RGB colours, a fresh copy on each call.
    """
    return np.frombuffer(_palette_cached(), dtype=np.uint8).reshape(256, 3).copy()


# ----------------------------------------------------------------------------------------------
# label PNGs
# ----------------------------------------------------------------------------------------------


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode ``path`` with Pillow, turning every failure into a one-line MaskError."""
    if not path.exists():
        raise MaskError(f"{path}: no such file")
    if path.is_dir():
        raise MaskError(f"{path}: is a directory, not a mask image")
    try:
        im = Image.open(path)
        im.load()
    except UnidentifiedImageError:
        raise MaskError(f"{path}: not an image Pillow can read (expected a PNG mask)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MaskError(f"{path}: cannot decode image: {one_line(e)}") from None
    return im


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk (Pillow silently reduces 16-bit RGB to 8 bits), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _check_depth(path: Path, im: Image.Image) -> None:
    depth = _png_bit_depth(path) if im.format == "PNG" else None
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or (depth is not None and depth > 8):
        bits = depth if depth is not None else (32 if im.mode in ("I", "F") else 16)
        raise MaskError(
            f"{path}: {bits}-bit image (mode {im.mode}); masks must be 8-bit "
            f"(palette, grayscale or RGB PNG)")


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label map (a DAVIS annotation or result) from a palette or grayscale PNG.

    The pixel values are returned as they are stored: palette indices for a ``P`` image, grey
    levels for an ``L`` image (no thresholding, no palette lookup, void 255 kept as 255).

    Args:
        path: the PNG file.

    Returns:
        ``(H, W)`` ``uint8`` array of label values 0..255.

    Raises:
        MaskError: the file is missing, not an image, 16-bit, or not a single-channel
            (``P``, ``L`` or ``1``) image.
    """
    path = Path(path)
    im = _open_image(path)
    _check_depth(path, im)
    if im.mode in ("P", "L"):
        return np.array(im, dtype=np.uint8)
    if im.mode == "PA":
        return np.array(im.getchannel(0), dtype=np.uint8)
    if im.mode == "1":
        return np.array(im, dtype=np.uint8)
    raise MaskError(f"{path}: mode {im.mode} is not a label map (expected a palette or grayscale PNG)")


def _check_labels(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be an integer array (uint8 label ids), got {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise ValueError(f"{what} values must be in 0..255, got {int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.uint8)


def _palette_bytes(palette: np.ndarray | None) -> bytes:
    if palette is None:
        return _palette_cached()
    pal = np.asarray(palette)
    if pal.shape != (256, 3) or pal.dtype != np.uint8:
        raise ValueError(f"palette must be a (256, 3) uint8 array, got {pal.shape} {pal.dtype}")
    return pal.tobytes()


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray,
                    palette: np.ndarray | None = None) -> None:
    """Write a label map as a palette-mode PNG, atomically.

    Written with :func:`seggpt_model.files.atomic_write` (a temporary file in the same folder,
    flushed to disk and renamed over ``path``), so ``path`` either does not exist or is complete;
    the file gets the usual umask permissions.

    Args:
        path: destination ``.png`` file; its folder must exist.
        labels: ``(H, W)`` label ids, ``uint8`` (bool or other integer dtypes with values in
            0..255 are converted).
        palette: ``(256, 3)`` ``uint8`` colours; ``None`` means :func:`davis_palette`.

    Raises:
        ValueError: ``labels`` is not 2-D integer in 0..255, or ``palette`` is not ``(256, 3)`` uint8.
        OSError: the file cannot be written (the temporary file is removed).
    """
    arr = np.ascontiguousarray(_check_labels(labels), dtype=np.uint8)
    save_label_png(path, arr.tobytes(), (arr.shape[1], arr.shape[0]), _palette_bytes(palette))


# ----------------------------------------------------------------------------------------------
# first-frame masks
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class FirstMask:
    """A first-frame prompt read by :func:`read_first_mask`.

    Attributes:
        labels: ``(H, W)`` ``uint8`` label map at frame size: 0 background, otherwise an id from
            :attr:`object_ids`. Void pixels are 0 here (see :attr:`void`), so ``labels`` never holds 255.
        object_ids: the ids present in ``labels``, sorted ascending, each in 1..254.
        void: ``(H, W)`` ``bool`` mask of void pixels (DAVIS value 255), or ``None`` if there are none.
        warnings: one-line messages about changes made while reading (also issued with
            :func:`warnings.warn` as :class:`MaskWarning`).
        path: the file that was read.
        mode: the Pillow mode of the file (``"P"``, ``"L"``, ``"RGB"``...).
        kind: how the file was interpreted: ``"palette"`` (indices are ids), ``"ids"`` (grey levels
            are ids), ``"binary"`` (0/255 or thresholded grey: one object, id 1) or ``"colour"``
            (one object per colour).
        source_size: ``(width, height)`` of the file before any resize.
        colours: for ``kind == "colour"``: the RGB colour of each object id in the file.
    """

    labels: np.ndarray
    object_ids: tuple[int, ...]
    void: np.ndarray | None
    warnings: tuple[str, ...] = ()
    path: Path | None = None
    mode: str = ""
    kind: str = ""
    source_size: tuple[int, int] = (0, 0)
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of :attr:`labels`."""
        return int(self.labels.shape[1]), int(self.labels.shape[0])

    @property
    def num_objects(self) -> int:
        """Number of objects (``len(object_ids)``)."""
        return len(self.object_ids)


def _interior(codes: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels whose 4 neighbours (edge-replicated) all have the same code."""
    pad = np.pad(codes, 1, mode="edge")
    c = pad[1:-1, 1:-1]
    return (pad[:-2, 1:-1] == c) & (pad[2:, 1:-1] == c) & (pad[1:-1, :-2] == c) & (pad[1:-1, 2:] == c)


def _grey_labels(path: Path, grey: np.ndarray) -> tuple[np.ndarray, str]:
    """The grayscale rule: 0/255 binary, anti-aliased binary, or ids (255 void). Returns (labels, kind)."""
    values, counts = np.unique(grey, return_counts=True)
    nonzero = [int(v) for v in values if v != 0]
    if nonzero == [255]:
        return (grey == 255).astype(np.uint8), "binary"
    if 255 in nonzero and len(nonzero) > 1:
        # Anti-aliased 0/255 mask: 255 is a solid region and every other level is a thin edge band.
        interior = np.bincount(grey[_interior(grey)], minlength=256)
        frac = interior[values] / counts
        solid = {int(v) for v, f in zip(values, frac, strict=True) if f >= _INTERIOR_FRACTION}
        if 255 in solid and not (solid - {0, 255}):
            return (grey > 127).astype(np.uint8), "binary"
    return grey.copy(), "ids"


def _colour_labels(path: Path, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str,
                                                          dict[int, tuple[int, int, int]]]:
    """The RGB rule. Returns (labels with 255 = void, void or None, kind, colours)."""
    h, w, _ = rgb.shape
    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    flat = codes.ravel()
    uniq, first, inverse, counts = np.unique(flat, return_index=True, return_inverse=True,
                                             return_counts=True)
    cols = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.int32)

    # 1. all (near-)grey: a binary mask, e.g. SegGPT's white-on-black targets with anti-aliased
    #    edges. Object where any channel > 127.
    if int((cols.max(axis=1) - cols.min(axis=1)).max()) <= _GREY_TOLERANCE:
        return (rgb.max(axis=2) > 127).astype(np.uint8), None, "binary", {1: (255, 255, 255)}

    pal = davis_palette().astype(np.int32)
    pal_codes = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    pal_index = {int(c): i for i, c in enumerate(pal_codes)}  # each DAVIS colour is distinct
    void_code = int(pal_codes[VOID_ID])
    is_black = uniq == 0

    # 2. every colour is a DAVIS palette entry: a rendered DAVIS mask; keep every colour exactly.
    #    3. otherwise: a colour with (almost) no interior pixel is an anti-aliasing blend and is
    #    merged into the nearest (RGB distance) remaining colour, black included.
    all_davis = all(int(c) in pal_index for c in uniq)
    if all_davis:
        anchor = np.ones(len(uniq), dtype=bool)
    else:
        interior = np.bincount(inverse[_interior(inverse.reshape(h, w)).ravel()],
                               minlength=len(uniq))
        anchor = interior / counts >= _INTERIOR_FRACTION
        anchor |= is_black | (uniq == void_code)
    if not is_black.any():
        # Background is black even where no pixel is black: add it as an anchor.
        uniq = np.concatenate([[0], uniq])
        first = np.concatenate([[-1], first])
        inverse = inverse + 1
        cols = np.concatenate([[[0, 0, 0]], cols])
        anchor = np.concatenate([[True], anchor])
    anchors = np.flatnonzero(anchor)

    # ids: DAVIS colours keep their index; other colours get the smallest free id in order of
    # first appearance (row-major scan).
    id_of = np.zeros(len(uniq), dtype=np.int32)
    used: set[int] = set()
    custom = []
    for k in anchors:
        code = int(uniq[k])
        if code == 0:
            id_of[k] = 0
        elif code == void_code:
            id_of[k] = VOID_ID
        elif code in pal_index:
            id_of[k] = pal_index[code]
            used.add(pal_index[code])
        else:
            custom.append(k)
    n_objects = len(used) + len(custom)
    if n_objects > MAX_OBJECTS:
        raise MaskError(f"{path}: {n_objects} objects (distinct colours), more than the "
                        f"{MAX_OBJECTS} that fit in 8-bit ids 1..{MAX_OBJECTS} (255 is void)")
    next_id = 1
    for k in sorted(custom, key=lambda k: first[k]):
        while next_id in used:
            next_id += 1
        id_of[k] = next_id
        used.add(next_id)

    # map every non-anchor colour to its nearest anchor (chunked to bound memory)
    anchor_cols = cols[anchors]
    minors = np.flatnonzero(~anchor)
    for s in range(0, len(minors), 4096):
        chunk = minors[s:s + 4096]
        d = ((cols[chunk, None, :] - anchor_cols[None, :, :]) ** 2).sum(axis=2)
        id_of[chunk] = id_of[anchors[np.argmin(d, axis=1)]]

    labels = id_of[inverse].reshape(h, w).astype(np.uint8)
    colours = {int(id_of[k]): (int(cols[k, 0]), int(cols[k, 1]), int(cols[k, 2]))
               for k in anchors if id_of[k] not in (0, VOID_ID)}
    return labels, None, "colour", colours


def _aspect_close(a: tuple[int, int], b: tuple[int, int]) -> bool:
    (aw, ah), (bw, bh) = a, b
    return abs((aw * bh) / (ah * bw) - 1.0) <= _ASPECT_TOLERANCE


def read_first_mask(path: str | os.PathLike[str],
                    frame_size: tuple[int, int] | None = None) -> FirstMask:
    """Read the first frame's mask (the prompt) in any of the usual formats.

    Formats (decided by content, not by file name):

    * **palette PNG** (mode ``P``/``PA``): each index is an object id, kept as given (ids need not
      be contiguous). 0 is background, 255 is void (DAVIS convention, never an object). The palette
      is ignored.
    * **grayscale** (mode ``L``, ``LA`` or ``1``):

      - values only 0 and 255: a **binary** mask, 255 becomes object **1**;
      - 255 is a solid region and every other non-zero level is a thin edge band (an anti-aliased
        0/255 mask): binary, object 1 where the value > 127;
      - otherwise each non-zero value is an object id, kept as given, and 255 is void.

      Mode ``1`` is binary (object 1). For ``LA``, pixels with alpha < 128 are background.
    * **RGB colour mask** (mode ``RGB``/``RGBA``, or others converted to RGB); black (0, 0, 0) is
      background and, for RGBA, so is every pixel with alpha < 128. Then, in this order:

      1. if every colour is grey or near-grey (channels within 16 of each other): a **binary**
         mask, object **1** where any channel > 127 (SegGPT's white-on-black targets, whose
         anti-aliased edges hold dozens of grey levels, give one object);
      2. if every colour is an entry of :func:`davis_palette`: a rendered DAVIS mask; each colour
         is the object whose id is its palette index, and (224, 224, 192) (entry 255) is void;
      3. otherwise each distinct colour is one object, except *anti-aliasing blends*: colours of
         which fewer than 5 % of the pixels are interior (all 4 neighbours of the same colour),
         i.e. thin bands along edges. Each blend pixel joins the nearest (RGB distance) remaining
         colour, black included. Colours that are DAVIS palette entries keep their index as id
         (the void colour stays void); the other colours get the smallest unused ids 1, 2, ... in
         order of first appearance in a row-major scan.

    A JPEG file is lossy, so it is read as binary (object 1 where any channel > 127) with a warning;
    if more than 5 % of its pixels are mid-grey (max channel in 48..207) it is taken for a photo and
    rejected.

    Size: ``frame_size`` is ``(width, height)`` of the video frames. A mask of another size whose
    aspect ratio is within 1 % of the frame's (e.g. 853x480 for 854x480 frames) is resized with
    nearest-neighbour interpolation, and a :class:`MaskWarning` names the file and both sizes;
    otherwise it is an error.

    Args:
        path: the mask file.
        frame_size: ``(width, height)`` the labels must have, or ``None`` to keep the file's size.

    Returns:
        a :class:`FirstMask`; ``labels`` is ``(H, W)`` ``uint8`` at frame size with values in
        ``{0} | set(object_ids)``, ``void`` is ``(H, W)`` bool or ``None``.

    Raises:
        MaskError: (one line naming the file) missing file, a directory, not an image, 16-bit or
            float image, no object (only background/void), more than 254 objects, or a size whose
            aspect ratio differs from ``frame_size``'s by more than 1 %.
    """
    path = Path(path)
    im = _open_image(path)
    _check_depth(path, im)
    found: list[str] = []
    mode = im.mode
    source_size = (int(im.width), int(im.height))
    colours: dict[int, tuple[int, int, int]] = {}

    if im.format == "JPEG":
        level = np.array(im.convert("RGB"), dtype=np.uint8).max(axis=2)
        if np.count_nonzero((level >= 48) & (level <= 207)) > _JPEG_MID_FRACTION * level.size:
            raise MaskError(f"{path}: JPEG image that does not look like a black/white mask (a "
                            f"photo?); give the mask as a PNG")
        labels = (level > 127).astype(np.uint8)
        kind = "binary"
        found.append(f"{path}: JPEG is lossy; read as a binary mask (object 1 where any "
                     f"channel > 127); save masks as PNG to keep several objects")
    elif mode in ("P", "PA"):
        labels = np.array(im if mode == "P" else im.getchannel(0), dtype=np.uint8)
        kind = "palette"
    elif mode == "1":
        labels = np.array(im, dtype=np.uint8)
        kind = "binary"
    elif mode in ("L", "LA"):
        grey = np.array(im.getchannel(0), dtype=np.uint8)
        if mode == "LA":
            grey[np.array(im.getchannel(1)) < 128] = 0
        labels, kind = _grey_labels(path, grey)
    else:
        if mode in ("RGBA", "RGBa"):
            rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
            rgb = rgba[..., :3].copy()
            rgb[rgba[..., 3] < 128] = 0
        else:
            try:
                rgb = np.array(im.convert("RGB"), dtype=np.uint8)
            except (ValueError, OSError) as e:
                raise MaskError(f"{path}: cannot convert mode {mode} to RGB: {e}") from None
        labels, _, kind, colours = _colour_labels(path, rgb)

    void_mask = labels == VOID_ID
    labels[void_mask] = 0

    if frame_size is not None:
        fw, fh = int(frame_size[0]), int(frame_size[1])
        if (labels.shape[1], labels.shape[0]) != (fw, fh):
            mw, mh = labels.shape[1], labels.shape[0]
            if not _aspect_close((mw, mh), (fw, fh)):
                raise MaskError(f"{path}: mask is {mw}x{mh} but the frames are {fw}x{fh} "
                                f"(aspect ratios differ by more than 1%)")
            found.append(f"{path}: mask is {mw}x{mh} but the frames are {fw}x{fh}; resized "
                         f"with nearest-neighbour (aspect ratios agree within 1%)")
            before = set(np.unique(labels).tolist()) - {0}
            labels = np.array(Image.fromarray(labels).resize((fw, fh), Image.Resampling.NEAREST))
            void_mask = np.array(Image.fromarray(void_mask.astype(np.uint8))
                                 .resize((fw, fh), Image.Resampling.NEAREST)).astype(bool)
            lost = sorted(before - set(np.unique(labels).tolist()))
            if lost:
                found.append(f"{path}: object ids {lost} vanished when resizing to {fw}x{fh}")

    object_ids = tuple(int(v) for v in np.unique(labels) if v != 0)
    if not object_ids:
        what = "only background and void" if void_mask.any() else "only background (0)"
        raise MaskError(f"{path}: no object in the mask ({what})")
    if len(object_ids) > _MANY_OBJECTS:
        found.append(f"{path}: {len(object_ids)} objects; is this an image rather than a mask?")
    for msg in found:
        warnings.warn(msg, MaskWarning, stacklevel=2)
    return FirstMask(
        labels=np.ascontiguousarray(labels, dtype=np.uint8),
        object_ids=object_ids,
        void=void_mask if void_mask.any() else None,
        warnings=tuple(found),
        path=path,
        mode=mode,
        kind=kind,
        source_size=source_size,
        colours={k: v for k, v in colours.items() if k in object_ids},
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB, decoded by content (a ``.jpg`` that is really a
    palette PNG works), upright from its EXIF orientation, 16-bit gray scaled to 8 bits.

    Raises:
        UserError: missing file, a directory, or not an image Pillow can decode.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a directory, not an image")
    try:
        return load_image(p)
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise UserError(f"{p}: cannot read the image ({one_line(exc)})") from None
