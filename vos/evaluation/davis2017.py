"""The DAVIS 2017 protocol (``vos eval``): J&F of the semi-supervised task, identical to the
official evaluator.

Reads only the ground truth of ``ROOT/Annotations/480p/<sequence>/*.png`` (no JPEGImages) and one
folder of PNG label maps per sequence under the results folder, scores them with the official DAVIS
2017 semi-supervised protocol (:mod:`vos.evaluation.metrics`: J region similarity, F contour accuracy, first and
last frames not scored, statistics averaged over objects) and reports the official global table, the
per-object table and a per-sequence mean, optionally as JSON and as the official CSV files.

Differences from ``davis2017-evaluation`` that change no number:

* results are always recomputed (the official script silently reuses old CSVs found in the results
  folder) and nothing is written into the results folder unless asked;
* bad input is reported as one error naming the sequence and frame (missing sequence folder or
  frame, size mismatch, RGB or unreadable PNG) instead of a trace or a silent exit;
* result ids above the number of objects are ignored with a warning (the official tool exits);
  they belong to no object, so every score is what the official code computes for the other ids;
* work runs in parallel over sequences and over chunks of frames (``--workers``), because every
  frame's J and F are independent; the statistics are then computed in the parent, in the official
  order, so the result does not depend on the number of workers.

Library use::

    from vos.evaluation.davis2017 import evaluate_davis
    res = evaluate_davis("DAVIS", "results/my_method", subset="val")
    res["global"]["J&F-Mean"], res["per_object"]["bike-packing_1"]["J-Mean"]
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seggpt_model.errors import one_line
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

__all__ = [
    "EvalWarning",
    "GLOBAL_COLUMNS",
    "resolve_sequences",
    "evaluate_davis",
    "format_report",
    "write_json",
    "write_csvs",
]

#: Columns of the official global table / ``global_results-<set>.csv``, in order.
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")

#: Columns of the official per-object table / ``per-sequence_results-<set>.csv``.
PER_OBJECT_COLUMNS = ("Sequence", "J-Mean", "F-Mean")

#: The evaluation needs the first (object count) and at least one scored frame between the first and
#: the last, which are not scored.
_MIN_FRAMES = 3


@dataclass(frozen=True)
class _Sequence:
    name: str
    gt_dir: str
    res_dir: str
    frames: tuple[str, ...]  # stems of the scored frames: all annotated frames but the first and last
    n_objects: int


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def _image_sets_file(davis_root: Path, subset: str, year: str) -> Path:
    return davis_root / "ImageSets" / str(year) / f"{subset}.txt"


def resolve_sequences(davis_root: str | os.PathLike, subset: str = "val", year: str = "2017",
                      sequences: list[str] | None = None) -> list[str]:
    """Names of the sequences to evaluate, in the order of the image set list.

    Args:
        davis_root: DAVIS root folder (``Annotations/480p`` must exist).
        subset: ``val``, ``train`` or ``test-dev``.
        year: ``2017`` or ``2016``: the list read is ``ImageSets/<year>/<subset>.txt``. When that
            file is missing every folder of ``Annotations/480p`` is used (sorted) and an
            :class:`EvalWarning` says so.
        sequences: optional restriction (kept in the given order, duplicates dropped).

    Returns:
        Non-empty list of sequence names.

    Raises:
        EvalError: missing root or ``Annotations/480p``, empty list, or names in ``sequences`` that
            are not in the set.
    """
    root = Path(davis_root)
    if not root.is_dir():
        raise EvalError(f"DAVIS root not found: {root}")
    ann = root / "Annotations" / "480p"
    if not ann.is_dir():
        raise EvalError(f"DAVIS root {root} has no Annotations/480p folder (the ground truth)")
    list_file = _image_sets_file(root, subset, year)
    if list_file.is_file():
        try:
            lines = list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalError(f"cannot read {list_file}: {exc}") from None
        names = [ln.strip() for ln in lines if ln.strip()]
        where = f"ImageSets/{year}/{subset}.txt"
        if not names:
            raise EvalError(f"{list_file} lists no sequence")
    else:
        names = sorted(p.name for p in ann.iterdir() if p.is_dir() and not p.name.startswith("."))
        where = "Annotations/480p"
        if not names:
            raise EvalError(f"{ann} has no sequence folders")
        warnings.warn(f"{list_file} not found: evaluating all {len(names)} sequence(s) of {ann}",
                      EvalWarning, stacklevel=2)
    if isinstance(sequences, str):
        sequences = [sequences]
    if sequences:
        wanted = list(dict.fromkeys(sequences))
        known = set(names)
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise EvalError(f"--sequences not in {where}: {', '.join(unknown)}")
        names = wanted
    return names


def _plan(davis_root: Path, results_dir: Path, names: list[str], subset: str) -> list[_Sequence]:
    """Check the ground truth, then the results folder layout, and build the work list."""
    ann = davis_root / "Annotations" / "480p"
    gt_info = []
    for name in names:
        gt_dir = ann / name
        if not gt_dir.is_dir():
            raise EvalError(f"sequence {name}: ground truth folder not found: {gt_dir}")
        stems = png_stems(str(gt_dir))
        if len(stems) < _MIN_FRAMES:
            hint = (" (the test-dev ground truth is not public: only its first frames are)"
                    if subset == "test-dev" else "")
            raise EvalError(
                f"sequence {name}: {len(stems)} annotated frame(s) in {gt_dir}; the semi-supervised "
                f"protocol needs at least {_MIN_FRAMES} (the first and last are not scored){hint}")
        first = read_label_map(str(gt_dir / f"{stems[0]}.png"), f"sequence {name}: ground truth")
        n_obj = metrics.num_objects(first)
        if n_obj == 0:
            if np.any(first == metrics.VOID_ID):
                raise EvalError(
                    f"sequence {name}: the first annotated frame {stems[0]}.png has no object id, only "
                    f"0 and 255 (void); DAVIS 2016-style binary masks must be converted to ids "
                    f"(255 -> 1) to be evaluated with the DAVIS 2017 protocol")
            raise EvalError(f"sequence {name}: the first annotated frame {stems[0]}.png has no object")
        gt_info.append((name, gt_dir, stems, n_obj))

    if not results_dir.is_dir():
        raise EvalError(f"results folder not found: {results_dir}")
    missing_seq = [n for n in names if not (results_dir / n).is_dir()]
    if missing_seq:
        more = f" (and {len(missing_seq) - 10} more)" if len(missing_seq) > 10 else ""
        raise EvalError(f"results folder {results_dir} has no folder for sequence(s): "
                        f"{', '.join(missing_seq[:10])}{more}")
    plans = []
    for name, gt_dir, stems, n_obj in gt_info:
        scored = stems[1:-1]  # the first and last frames are not scored, nor read
        res_dir = results_dir / name
        have = set(png_stems(str(res_dir)))
        missing = [s for s in scored if s not in have]
        if missing:
            shown = ", ".join(f"{s}.png" for s in missing[:5])
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise EvalError(f"sequence {name}: {len(missing)} result frame(s) missing in {res_dir}: "
                            f"{shown}{more}")
        plans.append(_Sequence(name, str(gt_dir), str(res_dir), tuple(scored), n_obj))
    return plans


# --------------------------------------------------------------------------------------------------
# evaluation (runs in the worker processes)
# --------------------------------------------------------------------------------------------------


def _eval_chunk(seq: _Sequence, start: int, stop: int):
    """J and F of every object in frames ``seq.frames[start:stop]``.

    Returns ``(J (N, n), F (N, n), extra)`` with ``extra`` a list of ``(frame, ids)`` for the frames
    whose result has ids outside ``0..N``.
    """
    n = seq.n_objects
    frames = seq.frames[start:stop]
    j = np.empty((n, len(frames)), dtype=np.float64)
    f = np.empty_like(j)
    extra: list[tuple[str, list[int]]] = []
    radius = None
    for i, stem in enumerate(frames):
        gt = read_label_map(os.path.join(seq.gt_dir, f"{stem}.png"),
                             f"sequence {seq.name}: ground truth")
        res = read_label_map(os.path.join(seq.res_dir, f"{stem}.png"),
                              f"sequence {seq.name}: result")
        if res.shape != gt.shape:
            raise EvalError(
                f"sequence {seq.name}: result {stem}.png is {res.shape[1]}x{res.shape[0]} but the "
                f"ground truth is {gt.shape[1]}x{gt.shape[0]} ({os.path.join(seq.res_dir, stem)}.png)")
        if res.size and (int(res.max()) > n or int(res.min()) < 0):
            bad = res[(res > n) | (res < 0)]
            extra.append((stem, [int(v) for v in np.unique(bad)]))
        if n >= metrics.VOID_ID:
            gt = np.where(gt == metrics.VOID_ID, 0, gt)
        if radius is None or radius[0] != gt.shape:
            radius = (gt.shape, metrics.bound_pixels(gt.shape))
        j[:, i], f[:, i] = metrics._evaluate_frame(gt, res, n, radius[1])
    return j, f, extra


def _run(plans: list[_Sequence], workers: int):
    """``_eval_chunk`` over all frames of all sequences (:func:`vos.evaluation.common.map_chunks`):
    ``{name: (J (N, T), F (N, T), extra)}``."""
    merged = {}
    for name, outs in map_chunks(_eval_chunk, plans, workers).items():
        j = np.concatenate([o[0] for o in outs], axis=1)
        f = np.concatenate([o[1] for o in outs], axis=1)
        merged[name] = (j, f, [e for o in outs for e in o[2]])
    return merged


def evaluate_davis(davis_root: str | os.PathLike, results_dir: str | os.PathLike,
                   subset: str = "val", year: str = "2017", sequences: list[str] | None = None,
                   workers: int | None = None) -> dict:
    """Evaluate a results folder against DAVIS ground truth (semi-supervised J&F protocol).

    Args:
        davis_root: DAVIS root; only ``Annotations/480p/<seq>/*.png`` and the optional
            ``ImageSets/<year>/<subset>.txt`` are read.
        results_dir: folder with one sub-folder per sequence holding a single-channel PNG of object
            ids per annotated frame, named like the ground truth (``00000.png`` ...). Only the frames
            scored (all but the first and last annotated ones) are read.
        subset: ``val``, ``train`` or ``test-dev``.
        year: ``2017`` or ``2016`` (which image set list is read).
        sequences: evaluate only these sequences (they must be in the set).
        workers: worker processes (default: all cores); 1 evaluates in this process.

    Returns:
        dict with

        * ``"global"``: ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
          "F-Decay"}``, floats in ``[0, 1]`` (decays in ``[-1, 1]``), averaged over all objects;
        * ``"per_object"``: ``{"<seq>_<id>": {same keys}}`` in sequence then id order;
        * ``"per_sequence"``: ``{"<seq>": {"J&F-Mean", "J-Mean", "F-Mean"}}``, means over the
          sequence's objects;
        * ``"per_frame"``: ``{"<seq>_<id>": {"frames": [stems], "J": [...], "F": [...]}}``;
        * ``"n_objects"``, ``"n_frames"``: totals (objects, scored frames).

    Raises:
        EvalError: bad input (missing folders or frames, sizes that differ, RGB or unreadable PNGs,
            ground truth without objects or with fewer than 3 frames, ``workers < 1``).

    Warns:
        EvalWarning: missing image set list; result ids above the number of objects (ignored).
    """
    if workers is None:
        workers = default_workers()
    if int(workers) < 1:
        raise EvalError(f"--workers must be at least 1, got {workers}")
    if subset not in ("val", "train", "test-dev"):
        raise EvalError(f"unknown set {subset!r}: expected val, train or test-dev")
    if str(year) not in ("2017", "2016"):
        raise EvalError(f"unknown year {year!r}: expected 2017 or 2016")
    root = Path(davis_root)
    names = resolve_sequences(root, subset, str(year), sequences)
    plans = _plan(root, Path(results_dir), names, subset)
    merged = _run(plans, int(workers))

    j_stats, f_stats = [], []
    per_object: dict[str, dict[str, float]] = {}
    per_frame: dict[str, dict] = {}
    per_sequence: dict[str, dict[str, float]] = {}
    for p in plans:
        j, f, extra = merged[p.name]
        if extra:
            ids = sorted({v for _, vs in extra for v in vs})
            warnings.warn(
                f"sequence {p.name}: result ids {', '.join(map(str, ids))} are not objects of the "
                f"ground truth (ids 1..{p.n_objects}) in {len(extra)} frame(s), first "
                f"{extra[0][0]}.png; they are scored as background (the official evaluator aborts)",
                EvalWarning, stacklevel=2)
        seq_j, seq_f = [], []
        for i in range(p.n_objects):
            js = metrics.db_statistics(j[i])
            fs = metrics.db_statistics(f[i])
            j_stats.append(js)
            f_stats.append(fs)
            seq_j.append(js.mean)
            seq_f.append(fs.mean)
            key = f"{p.name}_{i + 1}"
            per_object[key] = {
                "J&F-Mean": (js.mean + fs.mean) / 2.0,
                "J-Mean": js.mean, "J-Recall": js.recall, "J-Decay": js.decay,
                "F-Mean": fs.mean, "F-Recall": fs.recall, "F-Decay": fs.decay,
            }
            per_frame[key] = {"frames": list(p.frames), "J": j[i].tolist(), "F": f[i].tolist()}
        sj, sf = float(np.mean(seq_j)), float(np.mean(seq_f))
        per_sequence[p.name] = {"J&F-Mean": (sj + sf) / 2.0, "J-Mean": sj, "F-Mean": sf}

    # the official global table: np.mean over the per-object lists, J&F = (mean J + mean F) / 2
    jm = np.mean([s.mean for s in j_stats])
    fm = np.mean([s.mean for s in f_stats])
    glob = {
        "J&F-Mean": float((jm + fm) / 2.0),
        "J-Mean": float(jm),
        "J-Recall": float(np.mean([s.recall for s in j_stats])),
        "J-Decay": float(np.mean([s.decay for s in j_stats])),
        "F-Mean": float(fm),
        "F-Recall": float(np.mean([s.recall for s in f_stats])),
        "F-Decay": float(np.mean([s.decay for s in f_stats])),
    }
    return {
        "global": glob,
        "per_object": per_object,
        "per_sequence": per_sequence,
        "per_frame": per_frame,
        "n_objects": len(j_stats),
        "n_frames": sum(len(p.frames) for p in plans),
    }


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------


def format_report(result: dict, subset: str = "val") -> str:
    """The tables printed by ``vos eval``: global (official columns), per object (official
    ``<seq>_<id>`` rows with J-Mean and F-Mean) and per-sequence means."""
    g = result["global"]
    out = [f"--------------------------- Global results for {subset} ---------------------------",
           table(GLOBAL_COLUMNS, [tuple(g[c] for c in GLOBAL_COLUMNS)]),
           "",
           f"---------- Per object results for {subset} ----------",
           table(PER_OBJECT_COLUMNS,
                  [(k, v["J-Mean"], v["F-Mean"]) for k, v in result["per_object"].items()]),
           "",
           f"---------- Per sequence mean for {subset} ----------",
           table(("Sequence", "J&F-Mean", "J-Mean", "F-Mean"),
                  [(k, v["J&F-Mean"], v["J-Mean"], v["F-Mean"])
                   for k, v in result["per_sequence"].items()])]
    return "\n".join(out)


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Write ``{"global", "per_object", "per_sequence"}`` of ``result`` as JSON (full float
    precision), atomically (temporary file, then ``os.replace``).

    Raises:
        EvalError: the file cannot be written.
    """
    path = Path(path)
    data = {k: result[k] for k in ("global", "per_object", "per_sequence")}
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_csvs(result: dict, csv_dir: str | os.PathLike, subset: str = "val") -> tuple[Path, Path]:
    """Write the official ``global_results-<set>.csv`` (columns :data:`GLOBAL_COLUMNS`) and
    ``per-sequence_results-<set>.csv`` (``Sequence,J-Mean,F-Mean``, one row per object) with the
    official ``%.3f`` format, atomically.

    Returns:
        The two paths.

    Raises:
        EvalError: the folder or files cannot be written.
    """
    d = Path(csv_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalError(f"cannot create {d}: {one_line(exc)}") from None
    g_path = d / f"global_results-{subset}.csv"
    s_path = d / f"per-sequence_results-{subset}.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(GLOBAL_COLUMNS)
    w.writerow([f"{result['global'][c]:.3f}" for c in GLOBAL_COLUMNS])
    write_text(g_path, buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_OBJECT_COLUMNS)
    for k, v in result["per_object"].items():
        w.writerow([k, f"{v['J-Mean']:.3f}", f"{v['F-Mean']:.3f}"])
    write_text(s_path, buf.getvalue())
    return g_path, s_path


