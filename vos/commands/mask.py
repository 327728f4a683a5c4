"""``vos mask``: write the first-frame annotation a model proposes from words, an example or classes.

The frame is an image file, or frame N (default 0) of a video or frame folder decoded upright
exactly as ``vos run`` sees it (:func:`pipelines.sources.open_source`, stopping at frame N). The
mask is proposed by :func:`vos.prompts.first_mask.propose_first_mask` and written as a DAVIS palette PNG at
the frame's size (:func:`vos.labels.write_label_png`), so a person can look at it, edit it in any
paint tool and pass it to ``vos run --first-mask``. ``--overlay`` also writes the frame with the
coloured mask. Bad input is one line and exit 2 with nothing written; each file is written
atomically, and the overlay is removed again if the mask cannot be written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipelines.errors import OutputError
from pipelines.sources import open_source
from pipelines.writers import overlay_masks
from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write
from vos.errors import UserError, check_device_dtype
from vos.labels import davis_palette, read_image, write_label_png
from vos.prompts.first_mask import describe_objects, prompt_from_args, propose_first_mask


def read_frame(path: str | os.PathLike, index: int = 0) -> tuple[np.ndarray, str]:
    """Frame ``index`` of an image, video file or frame folder, upright as ``vos run`` sees it.

    A video is decoded with :func:`pipelines.sources.open_source` up to frame ``index`` only.

    Returns:
        ``((H, W, 3) uint8 RGB, description)``, the description naming the frame for messages
        (``"frame 3 of clip.mp4"``, or the image's path).

    Raises:
        UserError: a missing path, a negative index, ``index > 0`` for a single image, or an index
            past the last frame; pipelines.errors.VideoDecodeError: a path that is neither an
            image nor a video, or a corrupt video.
    """
    p = Path(path)
    if index < 0:
        raise UserError(f"--frame must be 0 or more, got {index}")
    if not p.exists():
        raise UserError(f"{p}: no such file or directory")
    if p.is_file():
        try:
            with Image.open(p) as im:
                is_image = getattr(im, "n_frames", 1) == 1
        except (UnidentifiedImageError, OSError, ValueError):
            is_image = False
        if is_image:
            if index != 0:
                raise UserError(f"--frame {index}: {p} is a single image (only frame 0)")
            return read_image(p), str(p)
    with open_source(p) as source:
        count = 0
        for frame in source:
            if frame.index == index:
                return frame.rgb, f"frame {index} of {p}"
            count = frame.index + 1
    raise UserError(f"--frame {index}: {p} has only {count} frame(s) (0..{count - 1})")


def _check_output(path: Path, option: str) -> None:
    if path.suffix.lower() != ".png":
        raise UserError(f"{option} {path}: must be a .png file")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory")


def write_outputs(labels: np.ndarray, rgb: np.ndarray, output: Path, overlay: Path | None) -> None:
    """Write the mask PNG (and the overlay PNG), each atomically; nothing is left on failure.

    Raises:
        pipelines.errors.OutputError: a file cannot be written.
    """
    written: list[Path] = []
    target = output
    try:
        if overlay is not None:
            target = overlay
            overlay.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(overlay_masks(rgb, labels, davis_palette()))
            atomic_write(overlay, lambda f: picture.save(f, format="PNG"))
            written.append(overlay)
        target = output
        output.parent.mkdir(parents=True, exist_ok=True)
        write_label_png(output, labels)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot write ({one_line(exc)})") from None


def main(args) -> int:
    """``vos mask`` entry point (see :func:`vos.cli.build_parser`)."""
    prompt = prompt_from_args(args)
    if prompt is None:
        raise UserError("give one of --text, --example/--example-mask or --classes")
    prompt.check()
    check_device_dtype(args.device, args.dtype, resolve=False)
    output = Path(args.output)
    overlay = Path(args.overlay) if args.overlay else None
    _check_output(output, "--output")
    if overlay is not None:
        _check_output(overlay, "--overlay")
        if overlay.resolve() == output.resolve():
            raise UserError(f"--overlay {overlay}: same file as --output")
    rgb, where = read_frame(args.source, int(args.frame))
    labels, info = propose_first_mask(rgb, prompt, device=args.device, dtype=args.dtype, where=where)
    write_outputs(labels, rgb, output, overlay)
    n = len(info["objects"])
    print(f"{where}: {n} object{'s' if n != 1 else ''} from {info['model']}: "
          f"{describe_objects(info)} -> {output}")
    return 0
