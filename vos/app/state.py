"""The state behind ``vos app``: one model shared by all sessions, one :class:`VideoState` per session.

A session's video is decoded once, on open, into the session's temporary folder (one ``.npy`` per
frame, exactly the arrays ``vos run`` segments), so memory does not grow with the video's length.
Annotations are kept as label maps; results go to the same folder (the object ids of each frame and,
for predicted frames, the prompt labels :meth:`vos.engine.predictor.VideoPredictor.resume` takes
back). Propagation is the engine's: a :class:`~vos.engine.predictor.VideoPredictor` given every
annotation, stepped forward from the earliest annotated frame ``A`` and backward from it, in the
order ``vos run`` uses, so the result equals ``vos run VIDEO --mask K:FILE ...`` frame for frame.

What is pending after a change (:meth:`VideoState.add_mask`):

* a mask after ``A`` on frame ``K``: frames ``K`` and later only; the predictor is resumed at ``K``
  with the memory the earlier propagation had there (frames before ``K`` are kept);
* a mask on or before ``A`` (a new earliest annotation): every frame, as ``vos run`` would.

Model calls of all sessions are serialised by :attr:`ModelHost.lock`, one frame at a time, so
sessions propagating at once take turns frame by frame.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.errors import VideoDecodeError
from pipelines.model_stage import load_stage
from pipelines.sources import Frame, open_source
from pipelines.writers import MaskVideoWriter, OverlayVideoWriter, PalettePngWriter, overlay_masks
from seggpt_model.config import DEFAULT_CHECKPOINT
from seggpt_model.files import atomic_write
from vos.engine.predictor import VideoPredictor
from vos.engine.session import DEFAULT_CONTEXT, DEFAULT_MAX_PINNED
from vos.errors import MaskError, UserError
from vos.labels import FirstMask, davis_palette, read_first_mask
from vos.prompts.first_mask import FirstMaskProposer

__all__ = ["AppSettings", "ModelHost", "SessionBusy", "VideoState", "ids_from_layers"]

#: frames a session may hold (frames are on disk; this bounds the disk a tab can take)
MAX_FRAMES = 20_000


class SessionBusy(UserError):
    """The session is propagating; the request would change what it is working on."""


@dataclass(frozen=True)
class AppSettings:
    """The model options of ``vos app`` (what they mean for ``vos run``), defaults of every session."""

    checkpoint: str | None = None
    device: str | None = "auto"
    dtype: str | None = "auto"
    context: int = DEFAULT_CONTEXT
    max_pinned: int = DEFAULT_MAX_PINNED
    text_model: str | None = None        # CLIPSeg for word prompts (None: vos mask's default)
    attn: str = "auto"                   # attention kernel (--attn)
    compile: bool = False                # torch.compile the model (--compile)


class ModelHost:
    """The model stage, loaded once and shared by every session, and the lock its calls take.

    Args:
        settings: checkpoint, device, dtype, context, max_pinned.
        stage: an already loaded :class:`pipelines.model_stage.SegGptStage` (tests), else loaded
            here from ``settings``.

    Raises:
        ValueError: unknown device or dtype; seggpt_model.CheckpointError: bad checkpoint.
    """

    def __init__(self, settings: AppSettings, stage=None) -> None:
        self.settings = settings
        self.stage = stage if stage is not None else load_stage(settings.checkpoint, settings.device,
                                                                settings.dtype, attn=settings.attn,
                                                                compile=settings.compile)
        self.lock = threading.Lock()
        self._proposer = None

    def proposer(self):
        """The word-prompt models (:class:`vos.prompts.first_mask.FirstMaskProposer`), created on first use.

        Raises:
            UserError: ``transformers`` is missing (names the ``prompts`` extra).
        """
        if self._proposer is None:
            self._proposer = FirstMaskProposer(device=self.settings.device, dtype=self.settings.dtype)
        return self._proposer


def ids_from_layers(layers: list[np.ndarray], object_ids: list[int], size: tuple[int, int]) -> np.ndarray:
    """Object ids painted in image-editor layers: layer ``i`` is object ``object_ids[i]``.

    Args:
        layers: ``(H, W, 4)`` uint8 RGBA layers, bottom first; a pixel belongs to the layer's object
            where its alpha is over 127 (a later layer wins where two overlap). Layers beyond
            ``object_ids`` get new ids, the smallest not used yet.
        object_ids: the objects of the first layers.
        size: ``(width, height)`` of the frame.

    Returns:
        ``(H, W)`` uint8 object ids (0 background).

    Raises:
        MaskError: a layer of another size, or more objects than fit in 1..254.
    """
    w, h = size
    out = np.zeros((h, w), np.uint8)
    ids = list(object_ids)
    for i, layer in enumerate(layers):
        layer = np.asarray(layer)
        if layer.shape[:2] != (h, w):
            raise MaskError(f"painted layer {i + 1} is {layer.shape[1]}x{layer.shape[0]}, the frame "
                            f"is {w}x{h}")
        if i >= len(ids):
            free = [j for j in range(1, 255) if j not in ids]
            if not free:
                raise MaskError("more than 254 objects")
            ids.append(free[0])
        if layer.ndim == 3 and layer.shape[2] == 4:
            painted = layer[..., 3] > 127
        else:                                   # no alpha: any non-black pixel is painted
            painted = (layer.max(axis=-1) if layer.ndim == 3 else layer) > 0
        out[painted] = ids[i]
    return out


class VideoState:
    """One session's video, annotations and results, kept in a temporary folder.

    Created empty (a ``gr.State`` value per browser tab or API client); :meth:`open` fills it.
    Every method that changes the state raises :class:`vos.errors.UserError` (or a subclass) on bad
    input and leaves the state as it was. :meth:`close` removes the folder.

    Args:
        root: where session folders are made (default: the system's temporary folder).
        default_video: opened on first use when no video was opened (``vos app VIDEO``).
    """

    def __init__(self, root: str | os.PathLike | None = None, default_video: str | None = None) -> None:
        self.root = None if root is None else Path(root)
        self.default_video = default_video
        self.folder: Path | None = None
        self.name = ""
        self.video = ""
        self.width = self.height = self.num_frames = 0
        self.fps: float | None = None
        self.pts: list[float | None] = []
        self.annotations: dict[int, FirstMask] = {}
        self.done = np.zeros(0, bool)         # frames whose result is current
        self.forward_from = 0                 # first frame at or after A without a current result
        self.backward_done = False            # frames 0..A-1 are current
        self.stop = threading.Event()
        self.busy = threading.Lock()
        self.last_used = time.monotonic()
        self.closed = False

    def __deepcopy__(self, memo):             # gr.State copies its default for each session
        return VideoState(self.root, self.default_video)

    # -- files ----------------------------------------------------------------------------------
    def _path(self, kind: str, k: int) -> Path:
        return self.folder / kind / f"{k:05d}.npy"

    def _save(self, kind: str, k: int, array: np.ndarray) -> None:
        atomic_write(self._path(kind, k), lambda f: np.save(f, array, allow_pickle=False), fsync=False)

    def _need_video(self) -> None:
        if self.folder is None and self.default_video is not None and not self.closed:
            self.open(self.default_video)
        if self.folder is None:
            raise UserError("no video open: open a video first" if not self.closed else
                            "this session was closed after being idle: open the video again")

    def _check_frame(self, k) -> int:
        self._need_video()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer, float)) or int(k) != k:
            raise UserError(f"frame index {k!r} is not an integer")
        k = int(k)
        if not 0 <= k < self.num_frames:
            raise UserError(f"frame {k} is outside the video ({self.num_frames} frames, "
                            f"0..{self.num_frames - 1})")
        return k

    def touch(self) -> None:
        """Record a use (the idle timeout counts from the last one)."""
        self.last_used = time.monotonic()

    # -- open -----------------------------------------------------------------------------------
    def open(self, video: str | os.PathLike) -> dict:
        """Decode ``video`` (a file FFmpeg reads, or a folder of images) into the session folder.

        The previous video, annotations and results of the session are dropped once the new one is
        decoded; on error the session is left as it was.

        Returns:
            ``{"frames": N, "width": W, "height": H}``.

        Raises:
            pipelines.errors.VideoDecodeError: not a video, no frame, corrupt; UserError: more than
                :data:`MAX_FRAMES` frames, or the session is propagating.
        """
        if not self.busy.acquire(blocking=False):
            raise SessionBusy("propagation is running: stop it before opening another video")
        try:
            self.touch()
            folder = Path(tempfile.mkdtemp(prefix="vos-app-", dir=self.root))
            try:
                (folder / "frames").mkdir()
                pts: list[float | None] = []
                with open_source(video) as source:
                    for frame in source:
                        if frame.index >= MAX_FRAMES:
                            raise UserError(f"{video}: more than {MAX_FRAMES} frames")
                        np.save(folder / "frames" / f"{frame.index:05d}.npy", frame.rgb, allow_pickle=False)
                        pts.append(frame.pts)
                    if not pts:
                        raise VideoDecodeError(f"{video}: no frame to decode")
                    info = (source.name, source.width, source.height, source.fps)
                for kind in ("ids", "labels"):
                    (folder / kind).mkdir()
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            old, self.folder = self.folder, folder
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            self.name, self.width, self.height, self.fps = info
            self.video = str(video)
            self.pts = pts
            self.num_frames = len(pts)
            self.annotations = {}
            self.done = np.zeros(self.num_frames, bool)
            self.forward_from, self.backward_done = 0, False
            self.closed = False
            return {"frames": self.num_frames, "width": self.width, "height": self.height}
        finally:
            self.busy.release()

    # -- frames and results -----------------------------------------------------------------------
    def frame(self, k: int) -> np.ndarray:
        """Frame ``k``, ``(H, W, 3)`` uint8, upright as ``vos run`` sees it."""
        return np.load(self._path("frames", self._check_frame(k)))

    def result(self, k: int) -> np.ndarray | None:
        """Frame ``k``'s current object ids ``(H, W)`` uint8 (255 void), or None if not propagated."""
        k = self._check_frame(k)
        return np.load(self._path("ids", k)) if self.done[k] else None

    def labels(self, k: int) -> np.ndarray | None:
        """What frame ``k`` shows: its result, else its annotation (void 255), else None."""
        out = self.result(k)
        if out is None and k in self.annotations:
            ann = self.annotations[k]
            out = ann.labels.copy()
            if ann.void is not None:
                out[ann.void] = 255
        return out

    def overlay(self, k: int) -> np.ndarray:
        """Frame ``k`` with its labels painted as in ``vos run --overlay`` (the frame alone if none)."""
        rgb = self.frame(k)
        labels = self.labels(k)
        return rgb if labels is None else overlay_masks(rgb, labels, davis_palette())

    @property
    def object_ids(self) -> list[int]:
        """The objects of every annotation, ascending."""
        return sorted({i for a in self.annotations.values() for i in a.object_ids})

    @property
    def first_annotated(self) -> int | None:
        return min(self.annotations) if self.annotations else None

    @property
    def pending(self) -> int:
        """Frames without a current result (0 when everything is propagated)."""
        return int((~self.done).sum()) if self.annotations else 0

    # -- annotations ----------------------------------------------------------------------------
    def add_mask(self, k, mask: str | os.PathLike | np.ndarray) -> dict:
        """Make ``mask`` the annotation of frame ``k`` (replacing one it had), as ``--mask K:FILE``.

        Args:
            k: frame index.
            mask: a file :func:`vos.labels.read_first_mask` reads (palette, grayscale ids or colour
                PNG...), or an ``(H, W)`` uint8 array of object ids (0 background, 255 void).

        Returns:
            ``{"frame": K, "objects": [ids]}``.

        Raises:
            UserError / MaskError: bad frame index, unreadable or mis-sized mask, no object, or the
                session is propagating.
        """
        k = self._check_frame(k)
        if isinstance(mask, np.ndarray):
            ann = _mask_from_array(mask, (self.width, self.height), f"mask of frame {k}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")            # a resize within 1 % is fine here
                ann = read_first_mask(mask, frame_size=(self.width, self.height))
        if not ann.object_ids:
            raise MaskError(f"mask of frame {k} has no object")
        if not self.busy.acquire(blocking=False):
            raise SessionBusy("propagation is running: stop it before adding a mask")
        try:
            self.touch()
            first = self.first_annotated
            self.annotations[k] = ann
            if first is None or k <= first:           # a new earliest annotation: everything again
                self.done[:] = False
                self.forward_from, self.backward_done = k, False
            else:                                    # frames before k are kept
                self.done[k:] = False
                self.forward_from = min(self.forward_from, k)
            return {"frame": k, "objects": list(ann.object_ids)}
        finally:
            self.busy.release()

    def remove_mask(self, k) -> None:
        """Drop frame ``k``'s annotation (its frames are pending again, as after :meth:`add_mask`)."""
        k = self._check_frame(k)
        if k not in self.annotations:
            raise UserError(f"frame {k} has no mask")
        if not self.busy.acquire(blocking=False):
            raise SessionBusy("propagation is running: stop it before removing a mask")
        try:
            first = self.first_annotated
            del self.annotations[k]
            if k == first:
                self.done[:] = False
                self.forward_from, self.backward_done = self.first_annotated or 0, False
            else:
                self.done[k:] = False
                self.forward_from = min(self.forward_from, k)
        finally:
            self.busy.release()

    # -- propagation ----------------------------------------------------------------------------
    def propagate(self, host: ModelHost) -> Iterator[int]:
        """Segment every pending frame; yields each frame index once its result is saved.

        Order as in ``vos run``: forward from the first pending frame (the earliest annotated frame
        ``A``, or a resumed frame ``K`` after a correction), frames ``A-1..0`` backward right after
        ``A`` (or first, when resuming). :attr:`stop` (set by the Stop button) ends it between two
        frames, keeping every frame done so far.

        Raises:
            UserError: no video, no mask, or the session is already propagating.
        """
        self._need_video()
        if not self.annotations:
            raise UserError("no mask yet: add a mask on a frame first")
        if not self.busy.acquire(blocking=False):
            raise SessionBusy("propagation is already running")
        try:
            self.stop.clear()
            yield from self._propagate(host)
        finally:
            self.busy.release()
            self.touch()

    def _propagate(self, host: ModelHost) -> Iterator[int]:
        s = host.settings
        first = self.first_annotated
        p = VideoPredictor(host.stage, self.height, self.width, context=s.context, max_pinned=s.max_pinned)
        for k, ann in sorted(self.annotations.items()):
            p.add_mask(k, ann.labels, ann.void)
        start = max(self.forward_from, first)
        if start >= self.num_frames and self.backward_done:
            return
        if start > first:                      # a correction after A, or going on after Stop
            with host.lock:
                p.resume(start, self._resume_data)
            if not self.backward_done:
                yield from self._backward(p, host, first)
                if not self.backward_done:
                    return
        for k in range(start, self.num_frames):
            if self.stop.is_set():
                return
            rgb = self.frame(k)
            with host.lock:
                ids = p.step(k, rgb)
                labels = p.last_prompt_labels
            self._save("ids", k, ids)
            if labels is not None:
                self._save("labels", k, labels)
            self.done[k] = True
            self.forward_from = k + 1
            yield k
            if k == first and not self.backward_done:     # frames A-1..0 right after A, as vos run
                yield from self._backward(p, host, first)
                if not self.backward_done:
                    return

    def _backward(self, p: VideoPredictor, host: ModelHost, first: int) -> Iterator[int]:
        order = range(first - 1, -1, -1)
        frames = p.backward(self.frame(i) for i in order)
        for i in order:
            if self.stop.is_set():
                return
            with host.lock:
                ids = next(frames)
            self._save("ids", i, ids)
            self.done[i] = True
            yield i
        self.backward_done = True

    def _resume_data(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`VideoPredictor.resume` loads: frame ``i`` and its output or prompt labels."""
        kind = "ids" if i in self.annotations else "labels"
        return self.frame(i), np.load(self._path(kind, i))

    def propagate_all(self, host: ModelHost) -> dict:
        """:meth:`propagate` to the end: ``{"frames": frames segmented, "seconds": wall time}``."""
        t0 = time.perf_counter()
        n = sum(1 for _ in self.propagate(host))
        return {"frames": n, "seconds": round(time.perf_counter() - t0, 3)}

    # -- export ---------------------------------------------------------------------------------
    def _need_results(self) -> None:
        self._need_video()
        if not self.done.any():
            raise UserError("no result yet: add a mask and propagate first")
        if not self.done.all():
            raise UserError(f"{int((~self.done).sum())} of {self.num_frames} frames have no current "
                            f"result: propagate first")

    def _frames(self) -> Iterator[tuple[Frame, np.ndarray]]:
        for k in range(self.num_frames):
            yield Frame(k, self.pts[k], self.frame(k)), np.load(self._path("ids", k))

    def manifest(self, host: ModelHost) -> dict:
        """What ``manifest.json`` in the export holds (the fields of ``vos run``'s manifest)."""
        s = host.settings
        stage = host.stage
        return {
            "video": self.video, "name": self.name, "frames": self.num_frames,
            "width": self.width, "height": self.height, "fps": self.fps,
            "annotations": [{"frame": k, "objects": list(a.object_ids)} for k, a in sorted(self.annotations.items())],
            "objects": self.object_ids,
            "settings": {"checkpoint": s.checkpoint or DEFAULT_CHECKPOINT, "device": str(stage.device),
                         "dtype": str(stage.dtype).replace("torch.", ""), "context": s.context,
                         "max_pinned": s.max_pinned, "per_object": False,
                         "embedding_type": stage.embedding_type},
            "frame_list": [{"index": k, "file": f"{k:05d}.png", "source_index": k, "pts": self.pts[k]}
                           for k in range(self.num_frames)],
        }

    def export_zip(self, host: ModelHost) -> Path:
        """``NAME_masks.zip``: DAVIS palette PNGs ``00000.png ...`` (the writer of ``vos run``) and
        ``manifest.json``.

        Raises:
            UserError: no video, or frames without a current result.
        """
        self._need_results()
        self.touch()
        out = self.folder / "export"
        shutil.rmtree(out, ignore_errors=True)
        with PalettePngWriter(out / "masks", davis_palette()) as pngs:   # closed, or aborted on error
            for frame, ids in self._frames():
                pngs.write(frame, ids)
        manifest = json.dumps(self.manifest(host), indent=1) + "\n"
        path = self.folder / f"{self.name}_masks.zip"

        def write(f):
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                for png in pngs.written:
                    z.write(png, png.name)
                z.writestr("manifest.json", manifest)

        atomic_write(path, write, fsync=False)
        shutil.rmtree(out, ignore_errors=True)
        return path

    def export_videos(self) -> tuple[Path, Path]:
        """The H.264 overlay video and the lossless FFV1 mask video (the writers of ``vos run``).

        Raises:
            UserError: no video, or frames without a current result.
        """
        self._need_results()
        self.touch()
        palette = davis_palette()
        fps = self.fps or 24.0
        overlay = self.folder / f"{self.name}_overlay.mp4"
        masks = self.folder / f"{self.name}_masks.mkv"
        with (OverlayVideoWriter(overlay, self.width, self.height, fps, palette) as overlay_writer,
              MaskVideoWriter(masks, self.width, self.height, fps) as mask_writer):  # aborted on error
            for frame, ids in self._frames():
                overlay_writer.write(frame, ids)
                mask_writer.write(frame, ids)
        return overlay, masks

    def close(self) -> None:
        """Remove the session folder (idempotent); the state is empty afterwards."""
        self.stop.set()
        folder, self.folder = self.folder, None
        self.closed = True
        self.annotations = {}
        self.done = np.zeros(0, bool)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _mask_from_array(arr: np.ndarray, size: tuple[int, int], what: str) -> FirstMask:
    """An ``(H, W)`` uint8 id map (255 void) as a :class:`FirstMask`."""
    arr = np.asarray(arr)
    w, h = size
    if arr.shape != (h, w):
        raise MaskError(f"{what} is {arr.shape[1] if arr.ndim > 1 else '?'}x{arr.shape[0]}, the frame is {w}x{h}")
    arr = arr.astype(np.uint8)
    void = arr == 255
    labels = np.where(void, 0, arr).astype(np.uint8)
    ids = tuple(int(i) for i in np.unique(labels) if i)
    return FirstMask(labels=labels, object_ids=ids, void=void if void.any() else None, kind="ids")
