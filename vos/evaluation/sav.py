"""``vos eval --protocol sav``: the J&F protocol of SAM 2's SA-V evaluator (SA-V and id-map folders).

The protocol is that of SAM 2's ``sav_dataset/sav_evaluator.py`` (github ``facebookresearch/sam2``,
``sav_dataset/utils/sav_benchmark.py``), which is ``vos-benchmark`` (github
``hkchengrex/vos-benchmark``, ``vos_benchmark/benchmark.py`` and ``evaluator.py``) plus SA-V's
per-object folders. It is the protocol SAM 2 and Cutie report MOSE, SA-V, LVOS and YouTube-VOS train
numbers with. Two ground-truth layouts are read, chosen per video by what its folder holds:

* **SA-V per-object folders**: ``GT/<vid>/<obj>/<stem>.png``, one binary mask per object per
  annotated frame (``<obj>`` is the object's folder name, ``000``, ``001``...); the results have the
  same shape, ``R/<vid>/<obj>/<stem>.png``. Each object is scored on its own frames; overlapping
  objects are fine.
* **DAVIS-style folders**: ``GT/<vid>/<stem>.png`` palette or grayscale PNGs of object ids (MOSE,
  LVOS and YouTube-VOS train splits, DAVIS), results ``R/<vid>/<stem>.png`` the same way.

The rules, exactly as the reference code applies them:

* **frames**: the ground truth's PNGs sorted by file name; the first and the last are not scored
  (``keep_first_last=True`` scores them) -- per object folder for SA-V, per video for DAVIS-style
  folders (every object of such a video shares its frame list). A result frame is read for every
  scored ground-truth frame and must exist; other result frames are ignored.
* **objects**: the ids found in the scored ground-truth frames (every value but 0, **255
  included**: the reference has no void label; an SA-V folder is one object). An id that is never in
  the scored ground truth is not counted, even when predicted; an id missing from some frames is
  still counted.
* **from first seen**: an object's per-frame list starts at the first scored frame where it is in
  the ground truth *or* in the result; from then on every frame counts, with J = F = 1 where both
  masks are empty.
* **J and F** per object and frame: :mod:`vos.evaluation.metrics` (J = IoU, 1 when both masks are
  empty; F the DAVIS boundary F-measure with the tolerance disk of radius
  ``ceil(0.008 * ||(H, W)||)``), the same kernel as the DAVIS protocol.
* **means**: an object's J (F) is the mean over its list; the global J (F) is the mean over all
  objects of all videos, and J&F = (J + F) / 2. Reported as fractions in ``[0, 1]`` (the reference
  prints percents).

Where it differs from the DAVIS 2017 protocol (:mod:`vos.evaluation.davis2017`): there the objects
are ``1..N`` with ``N`` the largest id of the first frame (so a missing id in between is an object with
an empty mask, J = F = 1 where not predicted, and an id that appears after the first frame above
``N`` is not scored), every object is scored on every frame between the first and the last, 255 is
void (background), and Recall and Decay are reported too.

Where it differs from the reference code, without changing any number it reports:

* bad input is one :class:`~vos.errors.EvalError` naming the file (a missing ground-truth or results
  folder, a results video or frame missing, a result whose size differs from its ground truth, an RGB
  or unreadable PNG, an SA-V mask that is not binary: more than two values, or two non-zero ones,
  which the reference reads as all object) instead of an assertion or ``exit(1)``;
* an SA-V object that is empty in every scored ground-truth frame, and a video with no object, are
  not counted and an :class:`~vos.evaluation.common.EvalWarning` says so (the reference stops on the
  former with an assertion and skips the latter silently);
* non-PNG and hidden files in a video folder are ignored; results are never written into the
  results folder (``vos-benchmark`` writes ``results.csv`` there).

Library use::

    from vos.evaluation.sav import evaluate_sav
    res = evaluate_sav("sav_val/Annotations_6fps", "results/sav_val")
    res["global"]["J&F-Mean"], res["per_object"]["sav_000001_000"]["J-Mean"]
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.errors import EvalError
from vos.evaluation import metrics
from vos.evaluation.common import (
    EvalWarning,
    default_workers,
    map_chunks,
    png_stems,
    read_label_map,
    table,
    write_text,
)
from vos.evaluation.davis2017 import resolve_sequences

__all__ = [
    "SAV_COLUMNS",
    "evaluate_sav",
    "format_sav_report",
    "write_sav_json",
    "davis_videos",
]

#: Columns of the global and per-object tables of the SA-V protocol (fractions in [0, 1]).
SAV_COLUMNS = ("J&F-Mean", "J-Mean", "F-Mean")


@dataclass(frozen=True)
class _Track:
    """One unit of work (:func:`vos.evaluation.common.map_chunks`): a DAVIS-style video (``obj is
    None``: the objects are the ids of its PNGs) or one object folder of an SA-V video (one binary
    mask per frame)."""

    video: str
    obj: str | None
    gt_dir: str
    res_dir: str
    frames: tuple[str, ...]   # stems of the scored ground-truth frames, in order
    n_objects: int = 1        # work weight (vos.evaluation.common.split_chunks)

    @property
    def name(self) -> str:
        return self.video if self.obj is None else f"{self.video}/{self.obj}"


# --------------------------------------------------------------------------------------------------
# planning: folder listings only, no image is opened
# --------------------------------------------------------------------------------------------------


def _frame_stems(folder: str) -> list[str]:
    """Stems of the ``*.png`` files of a folder, ordered as the reference orders them: by file name
    (``sorted(os.listdir())``; ``a-b.png`` comes before ``a.png``)."""
    return sorted(png_stems(folder), key=lambda s: s + ".png")


def _subdirs(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


_ROOT_HINTS = (("Annotations_6fps", "an SA-V split: pass --gt-root {root}/Annotations_6fps"),
               ("Annotations", ("a dataset root: pass --gt-root {root}/Annotations "
                                "(for DAVIS, --davis-root {root})")))


def _list_videos(gt_root: Path, videos: list[str] | None) -> list[str]:
    if not gt_root.is_dir():
        raise EvalError(f"ground truth folder not found: {gt_root}")
    names = _subdirs(gt_root)
    for child, hint in _ROOT_HINTS:
        if child in names and not png_stems(str(gt_root / child)):
            raise EvalError(f"ground truth folder {gt_root} holds {child}/, so it looks like "
                            f"{hint.format(root=gt_root)}")
    if isinstance(videos, str):
        videos = [videos]
    if videos:
        wanted = list(dict.fromkeys(videos))
        known = set(names)
        unknown = [v for v in wanted if v not in known]
        if unknown:
            raise EvalError(f"video(s) not in the ground truth folder {gt_root}: {', '.join(unknown)}")
        return wanted
    if not names:
        raise EvalError(f"ground truth folder {gt_root} has no video folders (expected "
                        f"{gt_root}/<video>/<frame>.png or {gt_root}/<video>/<object>/<frame>.png)")
    return names


def _missing_frames(where: str, res_dir: str, stems: tuple[str, ...]) -> None:
    have = set(png_stems(res_dir))
    missing = [s for s in stems if s not in have]
    if missing:
        if not os.path.isdir(res_dir):
            raise EvalError(f"{where}: results folder not found: {res_dir}")
        shown = ", ".join(f"{s}.png" for s in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise EvalError(f"{where}: {len(missing)} result frame(s) missing in {res_dir}: {shown}{more}")


def _plan(gt_root: Path, results_dir: Path, names: list[str], keep_first_last: bool) -> list[_Track]:
    """Every (video, object folder) to score, in video then object order; checks that the ground truth
    is readable as one of the two layouts and that every scored result frame exists."""
    per_video = []
    for vid in names:
        vdir = gt_root / vid
        if not vdir.is_dir():
            raise EvalError(f"video {vid}: ground truth folder not found: {vdir}")
        stems = _frame_stems(str(vdir))
        objs = _subdirs(vdir)
        if stems and objs:
            raise EvalError(f"video {vid}: ground truth folder {vdir} holds both PNGs and sub-folders; "
                            f"expected <frame>.png id maps or SA-V <object>/<frame>.png masks, not both")
        if not stems and not objs:
            raise EvalError(f"video {vid}: ground truth folder {vdir} has no PNG and no object folder")
        per_video.append((vid, vdir, stems, objs))

    if not results_dir.is_dir():
        raise EvalError(f"results folder not found: {results_dir}")
    missing = [v for v in names if not (results_dir / v).is_dir()]
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise EvalError(f"results folder {results_dir} has no folder for video(s): "
                        f"{', '.join(missing[:10])}{more} (expected {results_dir / missing[0]})")

    def scored(s: list[str]) -> tuple[str, ...]:
        return tuple(s if keep_first_last else s[1:-1])

    tracks = []
    for vid, vdir, stems, objs in per_video:
        rdir = results_dir / vid
        if stems:
            t = _Track(vid, None, str(vdir), str(rdir), scored(stems))
            _missing_frames(f"video {vid}", t.res_dir, t.frames)
            tracks.append(t)
            continue
        for obj in objs:
            ostems = _frame_stems(str(vdir / obj))
            t = _Track(vid, obj, str(vdir / obj), str(rdir / obj), scored(ostems))
            if t.frames and not (rdir / obj).is_dir():
                raise EvalError(f"video {vid}: results have no folder for object {obj}: {rdir / obj} "
                                f"(SA-V ground truth is one folder of binary masks per object)")
            _missing_frames(f"video {vid} object {obj}", t.res_dir, t.frames)
            tracks.append(t)
    return tracks


# --------------------------------------------------------------------------------------------------
# scoring (runs in the worker processes)
# --------------------------------------------------------------------------------------------------


def _values(a: np.ndarray) -> np.ndarray:
    """The distinct values of a label map, ascending (a histogram for 8-bit maps: OpenCV's when
    installed, several times faster than ``np.bincount``, itself much faster than a sort)."""
    if a.dtype == np.uint8:
        cv2 = metrics._get_cv2()
        if cv2:
            return np.flatnonzero(cv2.calcHist([a], [0], None, [256], [0, 256]).ravel())
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    return np.unique(a)


def _present(a: np.ndarray) -> tuple[int, ...]:
    """The non-zero values of a label map, ascending."""
    return tuple(int(v) for v in _values(a) if v != 0)


def _binary(a: np.ndarray, path: str, role: str) -> np.ndarray:
    """An SA-V per-object mask as a bool ``(H, W)`` array: at most two values, one of them 0 when
    there are two (the reference accepts at most two values and takes ``> 0`` as the object).

    Raises:
        EvalError: more than two values, or two non-zero values.
    """
    hi = a.max()
    if hi == 0:
        return np.zeros(a.shape, bool)
    fg = a != 0
    if a.min() == hi or np.count_nonzero(a == hi) == np.count_nonzero(fg):
        return fg
    vals = _values(a)
    shown = ", ".join(str(int(v)) for v in vals[:6]) + (", ..." if vals.size > 6 else "")
    raise EvalError(f"{role} {path}: values {shown}; an SA-V per-object mask must be binary "
                    f"(0 and one foreground value)")


def _score_chunk(track: _Track, start: int, stop: int):
    """Per frame of ``track.frames[start:stop]``: ``(gt_ids, res_ids, scores)`` with ``scores`` the
    ``{id: (J, F)}`` of every id in the ground truth or the result of that frame (the ids present in
    neither have J = F = 1)."""
    out = []
    where = f"video {track.video}" + ("" if track.obj is None else f" object {track.obj}")
    radius = None
    for stem in track.frames[start:stop]:
        gt_path = os.path.join(track.gt_dir, f"{stem}.png")
        res_path = os.path.join(track.res_dir, f"{stem}.png")
        gt = read_label_map(gt_path, f"{where}: ground truth")
        res = read_label_map(res_path, f"{where}: result")
        if res.shape != gt.shape:
            raise EvalError(f"{where}: result {res_path} is {res.shape[1]}x{res.shape[0]} but the "
                            f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
        if radius is None or radius[0] != gt.shape:
            radius = (gt.shape, metrics.bound_pixels(gt.shape))
        if track.obj is not None:   # one object, id 1
            g = _binary(gt, gt_path, f"{where}: ground truth")
            r = _binary(res, res_path, f"{where}: result")
            gt_ids, res_ids = (1,) if g.any() else (), (1,) if r.any() else ()
            scores = {1: metrics._object_scores(g, r, radius[1])} if gt_ids or res_ids else {}
        else:
            gt_ids, res_ids = _present(gt), _present(res)
            scores = {k: metrics._object_scores(gt == k, res == k, radius[1])
                      for k in sorted(set(gt_ids) | set(res_ids))}
        out.append((gt_ids, res_ids, scores))
    return out


def _track_objects(track: _Track, frames: list) -> dict[int, tuple[list[str], list[float], list[float]]]:
    """Per object id counted in a track: its scored frames (from the first where it is seen in the
    ground truth or the result), J and F. The ids are those of the scored ground truth, ascending."""
    first: dict[int, int] = {}
    in_gt: set[int] = set()
    js: dict[int, list[float]] = defaultdict(list)
    fs: dict[int, list[float]] = defaultdict(list)
    for i, (gt_ids, res_ids, scores) in enumerate(frames):
        for k in gt_ids + res_ids:
            first.setdefault(k, i)
        in_gt.update(gt_ids)
        for k in first:
            j, f = scores.get(k, (1.0, 1.0))
            js[k].append(j)
            fs[k].append(f)
    return {k: (list(track.frames[first[k]:]), js[k], fs[k]) for k in sorted(in_gt)}


def evaluate_sav(gt_root: str | os.PathLike, results_dir: str | os.PathLike, *,
                 keep_first_last: bool = False, videos: list[str] | None = None,
                 workers: int | None = None) -> dict:
    """Score a results folder with the SA-V / vos-benchmark J&F protocol (see the module docstring).

    Args:
        gt_root: folder of video folders: SA-V ``<vid>/<obj>/<stem>.png`` binary masks or DAVIS-style
            ``<vid>/<stem>.png`` id maps (each video by what its folder holds). Only folder
            listings are read before the scoring starts.
        results_dir: ``<vid>/...`` in the same shape as the ground truth (a PNG for every scored
            frame; single-channel, values 0/255 or 0/1 for SA-V masks, object ids otherwise).
        keep_first_last: also score the first and the last annotated frame of each object folder
            (SA-V) or video (DAVIS-style); the protocol skips them.
        videos: score only these video folders (kept in the given order); default all, sorted.
        workers: worker processes (default: all cores); 1 scores in this process. The result does
            not depend on it.

    Returns:
        dict with

        * ``"protocol"``: ``"sav"``; ``"keep_first_last"``: the flag;
        * ``"global"``: ``{"J&F-Mean", "J-Mean", "F-Mean"}``, floats in ``[0, 1]``, means over all
          objects of all videos (J&F = (J + F) / 2);
        * ``"per_object"``: ``{"<vid>_<obj>": {same keys}}``, in video then object order, where
          ``<obj>`` is the SA-V object folder name (``000``) or the id of a DAVIS-style video
          (``1``, ``255``);
        * ``"per_sequence"``: ``{"<vid>": {same keys}}``, means over the video's objects;
        * ``"per_frame"``: ``{"<vid>_<obj>": {"frames": [stems], "J": [...], "F": [...]}}``, the
          frames from the one where the object is first seen;
        * ``"n_objects"``: objects counted; ``"n_frames"``: ground-truth/result PNG pairs read.

    Raises:
        EvalError: missing ground-truth or results folder, video or frame; a video folder with both
            or neither PNGs and object folders; a result whose size differs from its ground truth;
            an RGB or unreadable PNG; an SA-V mask that is not binary; no object to score;
            ``workers < 1``.

    Warns:
        EvalWarning: an SA-V object empty in all its scored ground-truth frames, or a video with no
            object in its scored frames (not counted).

    Source: SAM 2 ``sav_dataset/utils/sav_benchmark.py`` (``VideoEvaluator``, ``Evaluator``,
    ``benchmark``), from ``vos-benchmark`` ``vos_benchmark/benchmark.py`` and ``evaluator.py``.
    """
    if workers is None:
        workers = default_workers()
    if int(workers) < 1:
        raise EvalError(f"--workers must be at least 1, got {workers}")
    gt_root, results_dir = Path(gt_root), Path(results_dir)
    names = _list_videos(gt_root, videos)
    tracks = _plan(gt_root, results_dir, names, keep_first_last)
    per_track = {name: [fr for out in outs for fr in out]
                 for name, outs in map_chunks(_score_chunk, tracks, int(workers)).items()}

    per_object: dict[str, dict[str, float]] = {}
    per_frame: dict[str, dict] = {}
    video_objects: dict[str, list[str]] = {v: [] for v in names}
    for t in tracks:
        objs = _track_objects(t, per_track[t.name])
        if t.obj is not None and not objs:
            why = (f"empty in all {len(t.frames)} scored ground-truth frame(s)" if t.frames else
                   "no scored frame (its first and last frames are not scored)")
            warnings.warn(f"video {t.video} object {t.obj}: {why} of {t.gt_dir}; not counted",
                          EvalWarning, stacklevel=2)
        for k, (frames, j, f) in objs.items():
            key = f"{t.video}_{k if t.obj is None else t.obj}"
            jm, fm = float(np.mean(j)), float(np.mean(f))
            per_object[key] = {"J&F-Mean": (jm + fm) / 2.0, "J-Mean": jm, "F-Mean": fm}
            per_frame[key] = {"frames": frames, "J": j, "F": f}
            video_objects[t.video].append(key)

    per_sequence: dict[str, dict[str, float]] = {}
    for vid in names:
        keys = video_objects[vid]
        if not keys:
            if not any(t.obj is not None for t in tracks if t.video == vid):
                warnings.warn(f"video {vid}: no object in its scored ground-truth frames; not counted",
                              EvalWarning, stacklevel=2)
            continue
        sj = float(np.mean([per_object[k]["J-Mean"] for k in keys]))
        sf = float(np.mean([per_object[k]["F-Mean"] for k in keys]))
        per_sequence[vid] = {"J&F-Mean": (sj + sf) / 2.0, "J-Mean": sj, "F-Mean": sf}
    if not per_object:
        raise EvalError(f"no object to score in {gt_root}: every scored ground-truth frame is empty"
                        + ("" if keep_first_last else
                           " (the first and last frames are not scored; see --keep-first-last)"))

    jm = float(np.mean([v["J-Mean"] for v in per_object.values()]))
    fm = float(np.mean([v["F-Mean"] for v in per_object.values()]))
    return {
        "protocol": "sav",
        "keep_first_last": bool(keep_first_last),
        "global": {"J&F-Mean": (jm + fm) / 2.0, "J-Mean": jm, "F-Mean": fm},
        "per_object": per_object,
        "per_sequence": per_sequence,
        "per_frame": per_frame,
        "n_objects": len(per_object),
        "n_frames": sum(len(t.frames) for t in tracks),
    }


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def format_sav_report(result: dict) -> str:
    """The tables printed by ``vos eval --protocol sav``: global, per object (``<vid>_<obj>``) and
    per-video means, as fractions with 6 decimals."""
    skip = "first and last frames kept" if result.get("keep_first_last") else \
        "first and last frames skipped"
    g = result["global"]
    return "\n".join([
        f"------------------- Global results (SA-V protocol, {skip}) -------------------",
        table(SAV_COLUMNS, [tuple(g[c] for c in SAV_COLUMNS)]),
        "",
        "---------- Per object results ----------",
        table(("Object", *SAV_COLUMNS),
               [(k, *(v[c] for c in SAV_COLUMNS)) for k, v in result["per_object"].items()]),
        "",
        "---------- Per video mean ----------",
        table(("Video", *SAV_COLUMNS),
               [(k, *(v[c] for c in SAV_COLUMNS)) for k, v in result["per_sequence"].items()]),
    ])


def write_sav_json(result: dict, path: str | os.PathLike) -> None:
    """Write ``{"protocol", "keep_first_last", "global", "per_object", "per_sequence"}`` of an
    :func:`evaluate_sav` result as JSON (full float precision), atomically.

    Raises:
        EvalError: the file cannot be written.
    """
    data = {k: result[k] for k in ("protocol", "keep_first_last", "global", "per_object",
                                   "per_sequence")}
    write_text(Path(path), json.dumps(data, indent=2) + "\n")


def davis_videos(davis_root: str | os.PathLike, subset: str = "val", year: str = "2017",
                 sequences: list[str] | None = None) -> tuple[Path, list[str]]:
    """The ground-truth folder and the videos of a DAVIS root for :func:`evaluate_sav`:
    ``ROOT/Annotations/480p`` and the sequences of ``ImageSets/<year>/<subset>.txt``
    (see :func:`vos.evaluation.davis2017.resolve_sequences`).

    Raises:
        EvalError: as :func:`vos.evaluation.davis2017.resolve_sequences`.
    """
    names = resolve_sequences(davis_root, subset, year, sequences)
    return Path(davis_root) / "Annotations" / "480p", names
