"""The ``vos app`` web page (Gradio Blocks) and its named API endpoints.

Page: open a video (a file, or a frame folder's images), move through it with a slider, mark objects
on any frame (paint one layer per object, import a mask PNG, or propose one from words and edit it),
propagate with progress, frames/s, a live preview and a Stop button, review the overlay, correct a
frame (the editor opens with the prediction as layers; applying it re-propagates from that frame
on), export a zip of DAVIS palette PNGs and ``manifest.json``, and the overlay and mask videos.

API (``gradio_client.Client(url).predict(..., api_name=...)``; state is per client session):

* ``/open_video(video: file) -> {"frames": N, "width": W, "height": H}``
* ``/add_mask(frame: int, mask: file) -> {"frame": K, "objects": [ids]}``
* ``/propagate() -> {"frames": N, "seconds": S}`` (runs what is pending, blocking until done)
* ``/export() -> file`` (the zip)
* ``/export_videos() -> [overlay.mp4, masks.mkv]``
* ``/stop() -> {"stopping": bool}`` (ends a running ``/propagate`` of the same session between two
  frames, keeping the frames done; a later ``/propagate`` goes on from there)

Bad input raises :class:`gradio.Error` with the one-line message of the project's errors (a toast in
the page, an error through the API); the session's state is left as it was.

Gradio is an optional dependency (the ``app`` extra): import this module only when it is installed.
"""

from __future__ import annotations

import functools
import inspect
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np

from pipelines.errors import PipelineError
from pipelines.writers import overlay_masks
from seggpt_model.errors import CheckpointError, one_line
from vos.app.state import ModelHost, VideoState, ids_from_layers
from vos.errors import UserError
from vos.labels import davis_palette
from vos.prompts.first_mask import MaskPrompt, propose_first_mask

__all__ = ["build_app", "launch"]

#: sessions unused for this long lose their folder (seconds)
IDLE_TIMEOUT_S = 3600.0

_USER_ERRORS = (UserError, PipelineError, CheckpointError)


def _errors_as_gradio(fn, before: Callable[[], None] | None = None):
    """Run ``fn`` (after ``before()``, if given); a user error becomes :class:`gradio.Error` with its
    one-line message, any other exception one too (``internal error: ...``), so no request takes
    the server down. Generator functions (progress streams) stay generators."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, _USER_ERRORS):
            return gr.Error(one_line(exc), print_exception=False)
        return gr.Error(f"internal error: {one_line(exc)}")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            if before is not None:
                before()
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise convert(exc) from exc
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if before is not None:
            before()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise convert(exc) from exc
    return call


class _Sessions:
    """Every live :class:`VideoState` of the server, for the idle timeout and the final clean-up."""

    def __init__(self, root: Path, idle_timeout: float) -> None:
        self.root = root
        self.idle_timeout = idle_timeout
        self._states: weakref.WeakSet[VideoState] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, state: VideoState) -> None:
        with self._lock:
            self._states.add(state)

    def sweep(self) -> None:
        """Close sessions idle for longer than the timeout (not while they propagate)."""
        now = time.monotonic()
        with self._lock:
            states = list(self._states)
        for s in states:
            if s.folder is not None and now - s.last_used > self.idle_timeout and not s.busy.locked():
                s.close()

    def close_all(self) -> None:
        with self._lock:
            states = list(self._states)
        for s in states:
            s.close()
        shutil.rmtree(self.root, ignore_errors=True)


class _SessionState(VideoState):
    """A :class:`VideoState` that registers each per-session copy (``gr.State`` deep-copies its
    default for every session) and remembers which object each editor layer is."""

    def __init__(self, sessions: _Sessions, default_video: str | None) -> None:
        super().__init__(sessions.root, default_video)
        self.sessions = sessions
        self.layer_ids: list[int] = []

    def __deepcopy__(self, memo):
        state = _SessionState(self.sessions, self.default_video)
        self.sessions.add(state)
        return state


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def build_app(host: ModelHost, video: str | None = None, *, idle_timeout: float = IDLE_TIMEOUT_S,
              root: str | Path | None = None) -> gr.Blocks:
    """The page and its API on ``host``'s model.

    Args:
        host: the model shared by every session.
        video: a video every new session opens at start (``vos app VIDEO``), or None.
        idle_timeout: seconds after which an unused session's files are removed.
        root: where session folders are made (default: a new temporary folder).

    Returns:
        the :class:`gradio.Blocks`; ``blocks.vos_sessions.close_all()`` removes every session folder.
    """
    root = Path(tempfile.mkdtemp(prefix="vos-app-", dir=root))
    sessions = _Sessions(root, idle_timeout)
    palette = davis_palette()
    brush = gr.Brush(colors=[_hex(palette[i]) for i in range(1, 11)], default_color=_hex(palette[1]),
                     color_mode="defaults")

    def guarded(fn):   # every handler: idle sessions swept first, errors as one-line gradio errors
        return _errors_as_gradio(fn, before=sessions.sweep)

    # -- shared helpers ---------------------------------------------------------------------------
    def describe(state: VideoState) -> str:
        if state.folder is None:
            return "No video open."
        anns = ", ".join(f"frame {k}: objects {list(a.object_ids)}" for k, a in sorted(state.annotations.items()))
        done = int(state.done.sum())
        return (f"**{state.name}**: {state.num_frames} frames, {state.width}x{state.height}. "
                f"Masks: {anns or 'none yet'}. Results: {done}/{state.num_frames} frames.")

    def view(state: VideoState, k) -> np.ndarray | None:
        if state.folder is None:
            return None
        return state.overlay(min(max(int(k), 0), state.num_frames - 1))

    def open_path(state: VideoState, files) -> dict:
        if not files:
            raise UserError("no file given: choose a video file or a frame folder's images")
        files = [files] if isinstance(files, (str, Path)) else list(files)
        if len(files) == 1:
            return state.open(files[0])
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=root))
        try:
            for f in files:
                (folder / Path(f).name).symlink_to(Path(f).resolve())
            return state.open(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def editor_value(state: VideoState, k: int, labels: np.ndarray | None):
        rgb = state.frame(k)
        ids = sorted(int(i) for i in np.unique(labels) if 0 < i < 255) if labels is not None else []
        ids = ids or state.object_ids or [1]
        layers = []
        for i in ids:
            layer = np.zeros((*rgb.shape[:2], 4), np.uint8)
            if labels is not None:
                layer[labels == i] = (*palette[i], 255)
            layers.append(layer)
        state.layer_ids = ids
        names = [f"object {i}" for i in ids]
        # the composite too: Gradio 6's editor shows it at once (layers given alone stay unseen)
        composite = rgb if labels is None else overlay_masks(rgb, labels, palette, alpha=0.6, contours=False)
        return gr.ImageEditor(value={"background": rgb, "layers": layers, "composite": composite},
                              layers=gr.LayerOptions(layers=names, allow_additional_layers=True))

    # -- UI handlers ----------------------------------------------------------------------------
    def ui_open(files, state):
        info = open_path(state, files)
        return (describe(state), gr.Slider(minimum=0, maximum=info["frames"] - 1, value=0, step=1),
                view(state, 0), editor_value(state, 0, None))

    def ui_show(k, state):
        return view(state, k)

    def ui_edit(k, state):
        k = state._check_frame(k)
        return editor_value(state, k, state.labels(k))

    def ui_apply(k, value, state, progress=gr.Progress()):
        """The editor's layers become frame k's mask; after a propagation, the frames from k on
        (or all, for a new earliest mask) are segmented again at once."""
        k = state._check_frame(k)
        layers = (value or {}).get("layers") or []
        ids = ids_from_layers(layers, state.layer_ids, (state.width, state.height))
        propagated = bool(state.done.any())
        state.add_mask(k, ids)
        yield gr.skip(), view(state, k), describe(state)
        if propagated:
            yield from ui_propagate(k, state, progress)

    def ui_import(k, path, state):
        if not path:
            raise UserError("no mask file given")
        state.add_mask(k, path)
        return describe(state), view(state, k), editor_value(state, state._check_frame(k), state.labels(k))

    def ui_propose(k, texts, state):
        k = state._check_frame(k)
        names = tuple(t.strip() for t in (texts or "").split(",") if t.strip())
        prompt = MaskPrompt(texts=names, text_model=host.settings.text_model).check()
        with host.lock:
            labels, _ = propose_first_mask(state.frame(k), prompt, proposer=host.proposer(),
                                           where=f"frame {k}")
        return editor_value(state, k, labels)

    def ui_remove(k, state):
        state.remove_mask(k)
        return describe(state), view(state, k)

    def ui_propagate(k, state, progress=gr.Progress()):
        t0 = time.perf_counter()
        n, last = 0, 0.0
        total = max(state.pending, 1)
        for i in state.propagate(host):
            n += 1
            now = time.perf_counter()
            fps = n / max(now - t0, 1e-9)
            progress((n, total), desc=f"frame {i}")
            if now - last > 0.5:
                last = now
                yield f"Propagating: frame {i}, {n}/{total}, {fps:.2f} frames/s", view(state, i), gr.skip()
        secs = time.perf_counter() - t0
        stopped = " (stopped)" if state.stop.is_set() else ""
        yield (f"{n} frames in {secs:.1f} s, {n / max(secs, 1e-9):.2f} frames/s{stopped}.",
               view(state, k), describe(state))

    def stop(state):
        busy = state.busy.locked()
        state.stop.set()
        return {"stopping": busy}

    def ui_export(state):
        return str(state.export_zip(host))

    def ui_export_videos(state):
        return [str(p) for p in state.export_videos()]

    # -- API handlers ---------------------------------------------------------------------------
    def api_open(video, state):
        return open_path(state, video)

    def api_add_mask(frame, mask, state):
        if not mask:
            raise UserError("no mask file given")
        return state.add_mask(frame, mask)

    def api_propagate(state):
        return state.propagate_all(host)

    with gr.Blocks(title="seggpt-vos", delete_cache=(600, int(idle_timeout)), analytics_enabled=False) as demo:
        state = gr.State(_SessionState(sessions, video), delete_callback=lambda s: s.close())
        gr.Markdown("## seggpt-vos: video object segmentation with SegGPT\n"
                    "Open a video, mark the objects on any frame (paint one layer per object, import "
                    "a mask PNG, or propose one from words), propagate, correct a frame, export.")
        with gr.Row():
            with gr.Column(scale=3):
                files = gr.File(label="Video file, or a frame folder's images", file_count="multiple",
                                elem_id="video-files")
                open_btn = gr.Button("Open video", elem_id="open")
                info = gr.Markdown("No video open.", elem_id="info")
                slider = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame")
                image = gr.Image(label="Frame with masks", type="numpy", interactive=False,
                                 format="png", elem_id="view")
                with gr.Row():
                    prop_btn = gr.Button("Propagate", variant="primary", elem_id="propagate")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    export_btn = gr.Button("Export masks (zip)", elem_id="export")
                    videos_btn = gr.Button("Export videos", elem_id="export-videos")
                zip_file = gr.File(label="Masks: DAVIS PNGs + manifest.json", elem_id="zip")
                video_files = gr.File(label="Overlay (H.264) and mask video (FFV1)", file_count="multiple",
                                      elem_id="videos")
            with gr.Column(scale=2):
                with gr.Tab("Import a mask"):
                    mask_file = gr.File(label="Mask PNG of this frame (palette, grey ids or colours)",
                                        type="filepath", elem_id="mask-file")
                    import_btn = gr.Button("Use as this frame's mask", elem_id="import")
                with gr.Tab("Paint"):
                    editor = gr.ImageEditor(label="One layer per object", type="numpy", format="png",
                                            brush=brush, transforms=(), sources=(), elem_id="editor",
                                            layers=gr.LayerOptions(allow_additional_layers=True))
                    with gr.Row():
                        edit_btn = gr.Button("Edit this frame (prediction as layers)", elem_id="edit")
                        apply_btn = gr.Button("Apply as this frame's mask", variant="primary", elem_id="apply")
                with gr.Tab("Words"):
                    texts = gr.Textbox(label="Objects, comma-separated (CLIPSeg; needs the prompts extra)",
                                       elem_id="texts")
                    propose_btn = gr.Button("Propose (then edit and apply in Paint)", elem_id="propose")
                remove_btn = gr.Button("Remove this frame's mask", elem_id="remove")

        # API-only endpoints, on hidden components
        with gr.Row(visible=False):
            api_video = gr.File(label="video")
            api_frame = gr.Number(label="frame", precision=0)
            api_mask = gr.File(label="mask")
            api_json = gr.JSON()
            api_file = gr.File()
            api_files = gr.File(file_count="multiple")
            for name, fn, inputs, outputs in (
                    ("open_video", api_open, [api_video, state], api_json),
                    ("add_mask", api_add_mask, [api_frame, api_mask, state], api_json),
                    ("propagate", api_propagate, [state], api_json),
                    ("export", ui_export, [state], api_file),
                    ("export_videos", ui_export_videos, [state], api_files),
                    ("stop", stop, [state], api_json)):
                gr.Button(visible=False).click(guarded(fn), inputs, outputs, api_name=name,
                                               concurrency_limit=None)

        ui = dict(api_visibility="undocumented", concurrency_limit=None)
        open_btn.click(guarded(ui_open), [files, state], [info, slider, image, editor], **ui)
        slider.change(guarded(ui_show), [slider, state], image, show_progress="hidden",
                      trigger_mode="always_last", **ui)
        edit_btn.click(guarded(ui_edit), [slider, state], editor, **ui)
        apply_btn.click(guarded(ui_apply), [slider, editor, state], [status, image, info], **ui)
        import_btn.click(guarded(ui_import), [slider, mask_file, state], [info, image, editor], **ui)
        propose_btn.click(guarded(ui_propose), [slider, texts, state], editor, **ui)
        remove_btn.click(guarded(ui_remove), [slider, state], [info, image], **ui)
        prop_btn.click(guarded(ui_propagate), [slider, state], [status, image, info], **ui)
        stop_btn.click(guarded(stop), [state], None, **ui)
        export_btn.click(guarded(ui_export), [state], zip_file, **ui)
        videos_btn.click(guarded(ui_export_videos), [state], video_files, **ui)
        if video is not None:         # the page shows it at once (API sessions open it on first use)
            demo.load(guarded(lambda s: ui_open([video], s)), [state], [info, slider, image, editor], **ui)

    demo.vos_sessions = sessions
    return demo


def launch(host: ModelHost, video: str | None = None, *, server_name: str = "127.0.0.1",
           port: int = 7860, block: bool = True, quiet: bool = False) -> tuple[gr.Blocks, str]:
    """Build the page and serve it; prints its URL.

    Args:
        host: the shared model; video: opened by every session at start.
        server_name: interface to listen on (localhost unless told otherwise); port: TCP port.
        block: serve until Ctrl-C (then close the server and remove every session folder); else
            return at once with the server running (tests).

    Returns:
        ``(blocks, url)``.

    Raises:
        OSError: the port is taken.
    """
    demo = build_app(host, video)
    demo.queue(default_concurrency_limit=None)
    _, url, _ = demo.launch(server_name=server_name, server_port=port, prevent_thread_lock=True,
                            quiet=True, show_error=True)
    if not quiet:
        print(f"vos app: serving on {url} (Ctrl-C to stop)", flush=True)
    if not block:
        return demo, url
    try:
        while True:
            time.sleep(3600)
    finally:
        demo.close()
        demo.vos_sessions.close_all()
    return demo, url
