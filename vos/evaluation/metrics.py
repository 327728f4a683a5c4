"""DAVIS J&F metrics on numpy label maps, bit-identical to the official DAVIS 2017 evaluator.

The definitions are those of Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video
Object Segmentation" (CVPR 2016) and Pont-Tuset et al., "The 2017 DAVIS Challenge on Video Object
Segmentation" (arXiv:1704.00675), as implemented by the official ``davis2017-evaluation`` package
(github ``davisvideochallenge/davis2017-evaluation``, files ``davis2017/metrics.py``,
``davis2017/utils.py``, ``davis2017/davis.py``, ``davis2017/results.py`` and
``davis2017/evaluation.py``):

* **J** (region similarity): the Jaccard index (IoU) of the binary masks of one object in one frame;
  1 when both masks are empty. Official: ``metrics.db_eval_iou``.
* **F** (contour accuracy): the F-measure of the boundary precision and recall, where the boundaries
  are the one-pixel maps of ``metrics._seg2bmap`` and a boundary pixel matches when a boundary pixel
  of the other mask lies within a disk of radius ``ceil(0.008 * ||(H, W)||)`` (8 pixels at 480p).
  Official: ``metrics.db_eval_boundary`` / ``metrics.f_measure``.
* **Mean, Recall, Decay** of the per-frame values of one object: the mean, the fraction of frames
  above 0.5, and the mean of the first minus the mean of the last of 4 (overlapping) temporal bins.
  Official: ``utils.db_statistics``.
* **Semi-supervised protocol**: the objects are the ids ``1..N`` with ``N`` the largest id of the
  first annotated frame (void 255 read as background); the first and last frames are not scored;
  ground-truth 255 (void) pixels count as background (the official semi-supervised evaluation passes
  no void mask); result ids above ``N`` belong to no object (the official tool aborts on them
  instead) and objects missing from the results are scored against an empty mask.

Every value is computed with the same integer counts and the same float64 operations in the same
order as the official code, so the per-frame J and F and every statistic are equal bit for bit.
What differs is only the cost: J comes from pixel counts, and F is computed on the bounding box of the
two masks (the boundary maps are exactly zero outside it), with one dilation per boundary map there
instead of over the whole frame. The dilation is ``cv2.dilate`` with the footprint of
``skimage.morphology.disk`` (rebuilt by :func:`disk`, identical) when OpenCV is installed, as in the
official code; otherwise an exact decomposition of the disk into row-wise
``scipy.ndimage.maximum_filter1d`` runs gives the same binary map.

Array conventions: a *label map* is an integer array ``(H, W)`` (one frame) or ``(T, H, W)`` (a
sequence) whose values are object ids (0 is background); a *mask* is a boolean (or 0/1) array of the
same shapes. Per-object, per-frame results are float64 arrays ``(N, T)`` with values in ``[0, 1]``.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.ndimage import maximum_filter1d

__all__ = [
    "BOUND_TH",
    "VOID_ID",
    "bound_pixels",
    "disk",
    "seg2bmap",
    "region_similarity",
    "contour_accuracy",
    "db_eval_iou",
    "db_eval_boundary",
    "num_objects",
    "evaluate_frame",
    "evaluate_frames",
    "evaluate_semisupervised",
    "Statistics",
    "db_statistics",
]

#: Boundary tolerance of the F measure, as a fraction of the image diagonal (official ``bound_th``).
BOUND_TH = 0.008

#: Ground-truth value of void pixels; read as background by the semi-supervised protocol.
VOID_ID = 255

# OpenCV is optional: ``None`` until first use, then the module or ``False`` when it is missing.
_cv2 = None


def _get_cv2():
    global _cv2
    if _cv2 is None:
        try:
            import cv2  # noqa: PLC0415 - optional: without OpenCV, scipy dilates (same numbers)

            _cv2 = cv2
        except ImportError:  # pragma: no cover - depends on the environment
            _cv2 = False
    return _cv2


# --------------------------------------------------------------------------------------------------
# boundaries and the tolerance disk
# --------------------------------------------------------------------------------------------------


def bound_pixels(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Radius in pixels of the boundary tolerance disk of the F measure.

    Args:
        shape: ``(H, W)`` of the frame (only the first two entries are used).
        bound_th: tolerance; below 1 a fraction of the image diagonal, otherwise a radius in pixels
            (then it must be a whole number).

    Returns:
        ``ceil(bound_th * sqrt(H**2 + W**2))`` computed in float64 as the official ``f_measure``
        does (8 for 854x480 frames), or ``bound_th`` itself when it is >= 1.

    Raises:
        ValueError: ``bound_th`` is not positive, or is >= 1 and not a whole number.

    Source: ``davis2017/metrics.py``, ``f_measure`` (``bound_pix``).
    """
    if not bound_th > 0:
        raise ValueError(f"bound_th must be positive, got {bound_th!r}")
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"a bound_th >= 1 is a radius in pixels and must be whole, got {bound_th!r}")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(tuple(shape[:2]))))


def disk(radius: int) -> np.ndarray:
    """Disk footprint of the boundary tolerance, identical to ``skimage.morphology.disk(radius)``.

    Args:
        radius: radius in pixels, >= 0.

    Returns:
        ``uint8`` array ``(2r+1, 2r+1)``: 1 where ``x**2 + y**2 <= r**2`` (offsets from the centre).

    Source: ``skimage.morphology.disk`` as used by ``davis2017/metrics.py``, ``f_measure``.
    """
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    ax = np.arange(-r, r + 1)
    return ((ax[None, :] ** 2 + ax[:, None] ** 2) <= r * r).astype(np.uint8)


def _bmap_window(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``seg2bmap(mask)[y0:y1, x0:x1]`` computed from ``mask[y0:y1+1, x0:x1+1]`` only.

    The official boundary map marks a pixel when it differs from its east, south or south-east
    neighbour, and on the last row (column) it compares with the east (south) neighbour only, with the
    bottom-right pixel always 0. That is the same as comparing with all three neighbours of the mask
    extended by one replicated row at the bottom and one replicated column at the right.
    """
    h, w = mask.shape
    sub = mask[y0:y1 + 1, x0:x1 + 1]
    if y1 >= h or x1 >= w:
        sub = np.pad(sub, ((0, int(y1 >= h)), (0, int(x1 >= w))), mode="edge")
    c = sub[:-1, :-1]
    return (c ^ sub[:-1, 1:]) | (c ^ sub[1:, :-1]) | (c ^ sub[1:, 1:])


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (D. Martin's ``seg2bmap``, as in DAVIS).

    A pixel is on the boundary when its value differs from its east, south or south-east neighbour
    (boundaries are offset by half a pixel towards the origin); on the last row only the east
    neighbour is compared, on the last column only the south one, and the bottom-right pixel is 0.

    Args:
        seg: ``(H, W)`` mask, any dtype (non-zero is foreground).

    Returns:
        ``(H, W)`` bool boundary map.

    Raises:
        ValueError: ``seg`` is not two-dimensional or is empty.

    Source: ``davis2017/metrics.py``, ``_seg2bmap`` (without its unused resizing branch).
    """
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0:
        raise ValueError(f"seg2bmap needs a non-empty (H, W) mask, got shape {seg.shape}")
    m = seg.astype(bool, copy=False)
    h, w = m.shape
    return _bmap_window(m, 0, h, 0, w)


@lru_cache(maxsize=16)
def _disk_cached(radius: int) -> np.ndarray:
    d = disk(radius)
    d.flags.writeable = False
    return d


def _dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool map by ``disk(radius)``; pixels outside the map count as 0."""
    cv2 = _get_cv2()
    if cv2:
        return cv2.dilate(bmap.view(np.uint8), _disk_cached(radius)).view(bool)
    return _dilate_disk_scipy(bmap, radius)


def _dilate_disk_scipy(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Exact disk dilation with scipy.ndimage: the disk is the union of its rows, so the dilation is
    the OR over row offsets ``dy`` of a horizontal running maximum of half-width
    ``floor(sqrt(r**2 - dy**2))``, shifted by ``dy``."""
    h = bmap.shape[0]
    src = bmap.view(np.uint8)
    out = np.zeros(bmap.shape, dtype=bool)
    runs: dict[int, np.ndarray] = {}
    r2 = radius * radius
    for dy in range(-radius, radius + 1):
        if abs(dy) >= h:
            continue
        half = math.isqrt(r2 - dy * dy)
        run = runs.get(half)
        if run is None:
            run = maximum_filter1d(src, 2 * half + 1, axis=1, mode="constant", cval=0).view(bool)
            runs[half] = run
        if dy >= 0:
            out[:h - dy] |= run[dy:]
        else:
            out[-dy:] |= run[:h + dy]
    return out


# --------------------------------------------------------------------------------------------------
# J and F of one object in one frame
# --------------------------------------------------------------------------------------------------


def _j_from_counts(inter: int, union: int) -> float:
    # official: inters / union with numpy int64 counts (exact in float64), 1 when the union is empty
    return 1.0 if union == 0 else float(np.int64(inter) / np.int64(union))


def _f_from_counts(n_fg: int, n_gt: int, fg_match: int, gt_match: int) -> float:
    # official f_measure, same branches and the same float64 operations in the same order
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = fg_match / float(n_fg)
        recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _object_scores(gt: np.ndarray, pred: np.ndarray, radius: int) -> tuple[float, float]:
    """J and F of two bool ``(H, W)`` masks of one object.

    The pixel counts are taken over the rows the union spans and the boundaries over the bounding
    box of the union (grown by one pixel up and left): both are exactly zero elsewhere.
    """
    u = gt | pred
    rows = np.flatnonzero(u.any(axis=1))
    if rows.size == 0:
        return 1.0, 1.0  # both empty: J = 1; both boundary maps empty, precision = recall = 1
    ya, yb = int(rows[0]), int(rows[-1])
    g_band, p_band = gt[ya:yb + 1], pred[ya:yb + 1]
    inter = int(np.count_nonzero(g_band & p_band))
    union = int(np.count_nonzero(g_band)) + int(np.count_nonzero(p_band)) - inter
    j = _j_from_counts(inter, union)
    cols = np.flatnonzero(u[ya:yb + 1].any(axis=0))
    xa, xb = int(cols[0]), int(cols[-1])
    # boundary pixels lie in rows [ya-1, yb] and columns [xa-1, xb]
    y0, y1, x0, x1 = max(ya - 1, 0), yb + 1, max(xa - 1, 0), xb + 1
    gt_b = _bmap_window(gt, y0, y1, x0, x1)
    fg_b = _bmap_window(pred, y0, y1, x0, x1)
    n_gt = int(np.count_nonzero(gt_b))
    n_fg = int(np.count_nonzero(fg_b))
    if n_gt == 0 or n_fg == 0:
        return j, _f_from_counts(n_fg, n_gt, 0, 0)
    # every boundary pixel of both maps is inside the window, so the dilation restricted to it is
    # exact at the pixels where it is read
    gt_dil = _dilate_disk(gt_b, radius)
    fg_dil = _dilate_disk(fg_b, radius)
    fg_match = int(np.count_nonzero(fg_b & gt_dil))
    gt_match = int(np.count_nonzero(gt_b & fg_dil))
    return j, _f_from_counts(n_fg, n_gt, fg_match, gt_match)


def _as_masks(gt, pred, void, name: str):
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"{name}: annotation {gt.shape} and segmentation {pred.shape} shapes differ")
    if gt.ndim not in (2, 3) or gt.size == 0:
        raise ValueError(f"{name}: masks must be non-empty (H, W) or (T, H, W), got shape {gt.shape}")
    gt = gt.astype(bool, copy=False)
    pred = pred.astype(bool, copy=False)
    if void is not None:
        void = np.asarray(void)
        if void.shape != gt.shape:
            raise ValueError(f"{name}: void {void.shape} and annotation {gt.shape} shapes differ")
        keep = ~void.astype(bool, copy=False)
        gt = gt & keep
        pred = pred & keep
    return gt, pred


def region_similarity(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None):
    """J, the region similarity (Jaccard index, IoU) of binary masks.

    Args:
        gt: ground-truth mask ``(H, W)`` or ``(T, H, W)``; non-zero is the object.
        pred: predicted mask, same shape.
        void: optional mask of pixels to ignore, same shape (the official semi-supervised evaluation
            passes none).

    Returns:
        float in ``[0, 1]`` for one frame, or a float64 array ``(T,)``; 1 where both masks are
        empty (outside the void).

    Raises:
        ValueError: shapes differ or are not 2-D / 3-D.

    Source: ``davis2017/metrics.py``, ``db_eval_iou``.
    """
    g, p = _as_masks(gt, pred, void, "region_similarity")
    inter = np.count_nonzero(g & p, axis=(-2, -1))
    union = np.count_nonzero(g | p, axis=(-2, -1))
    if g.ndim == 2:
        return _j_from_counts(int(inter), int(union))
    return np.array([_j_from_counts(int(i), int(u)) for i, u in zip(inter, union)], dtype=np.float64)


def contour_accuracy(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None,
                     bound_th: float = BOUND_TH):
    """F, the contour accuracy (boundary F-measure) of binary masks.

    Precision is the fraction of predicted boundary pixels within ``bound_pixels(shape)`` of a
    ground-truth boundary pixel, recall the converse, F = 2PR / (P + R); F = 1 when both boundaries
    are empty and 0 when exactly one is.

    Args:
        gt: ground-truth mask ``(H, W)`` or ``(T, H, W)``; non-zero is the object.
        pred: predicted mask, same shape.
        void: optional mask of pixels removed from both masks before the boundaries are taken.
        bound_th: boundary tolerance, see :func:`bound_pixels`.

    Returns:
        float in ``[0, 1]`` for one frame, or a float64 array ``(T,)``.

    Raises:
        ValueError: shapes differ or are not 2-D / 3-D, or ``bound_th`` is invalid.

    Source: ``davis2017/metrics.py``, ``db_eval_boundary`` and ``f_measure``.
    """
    g, p = _as_masks(gt, pred, void, "contour_accuracy")
    radius = bound_pixels(g.shape[-2:], bound_th)
    if g.ndim == 2:
        return _object_scores(g, p, radius)[1]
    return np.array([_object_scores(g[t], p[t], radius)[1] for t in range(g.shape[0])],
                    dtype=np.float64)


#: Official name of :func:`region_similarity` (argument order ``annotation, segmentation``).
db_eval_iou = region_similarity

#: Official name of :func:`contour_accuracy` (argument order ``annotation, segmentation``).
db_eval_boundary = contour_accuracy


# --------------------------------------------------------------------------------------------------
# label maps: the semi-supervised protocol
# --------------------------------------------------------------------------------------------------


def num_objects(first_gt: np.ndarray) -> int:
    """Number of objects of a sequence: the largest id of its first annotated frame, void read as 0.

    Args:
        first_gt: ``(H, W)`` integer label map of the first annotated frame.

    Returns:
        ``N``; the objects are the ids ``1..N`` (an id missing from the first frame is still an
        object, with an empty mask there).

    Source: ``davis2017/davis.py``, ``DAVIS.get_all_masks`` (``num_objects``), after the void
    (255) pixels are set to 0.
    """
    a = np.asarray(first_gt)
    if a.size == 0:
        return 0
    m = int(a.max())
    if m == VOID_ID:
        a = a[a != VOID_ID]
        m = int(a.max()) if a.size else 0
    return max(m, 0)


def _check_label_pair(gt: np.ndarray, res: np.ndarray, ndim: int, name: str):
    gt = np.asarray(gt)
    res = np.asarray(res)
    if gt.ndim != ndim or gt.size == 0:
        raise ValueError(f"{name}: ground truth must be a non-empty {ndim}-D label map, got {gt.shape}")
    if res.shape != gt.shape:
        raise ValueError(f"{name}: result {res.shape} and ground truth {gt.shape} shapes differ")
    for what, a in (("ground truth", gt), ("result", res)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name}: {what} label map must have an integer dtype, got {a.dtype}")
    return gt, res


def evaluate_frame(gt: np.ndarray, res: np.ndarray, n_objects: int,
                   bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object in one frame.

    Args:
        gt: ``(H, W)`` integer ground-truth label map. Object ``k`` is ``gt == k`` for ``k`` in
            ``1..n_objects``; every other value (0, void 255, ids above ``n_objects``) is background.
        res: ``(H, W)`` integer result label map, same shape; object ``k`` is ``res == k``, ids
            above ``n_objects`` belong to no object.
        n_objects: ``N`` >= 0, see :func:`num_objects`.
        bound_th: boundary tolerance, see :func:`bound_pixels`.

    Returns:
        ``(J, F)``, two float64 arrays ``(N,)`` in ``[0, 1]``.

    Raises:
        ValueError: shapes differ, the maps are not 2-D integer arrays, or ``n_objects < 0``.

    Source: ``davis2017/evaluation.py``, ``DAVISEvaluation._evaluate_semisupervised`` for one frame.
    """
    gt, res = _check_label_pair(gt, res, 2, "evaluate_frame")
    if n_objects < 0:
        raise ValueError(f"evaluate_frame: n_objects must be >= 0, got {n_objects}")
    if n_objects >= VOID_ID:  # only then can an object id equal the void value
        gt = np.where(gt == VOID_ID, 0, gt)
    radius = bound_pixels(gt.shape, bound_th)
    return _evaluate_frame(gt, res, n_objects, radius)


def _evaluate_frame(gt: np.ndarray, res: np.ndarray, n: int, radius: int):
    j = np.empty(n, dtype=np.float64)
    f = np.empty(n, dtype=np.float64)
    for i in range(n):
        j[i], f[i] = _object_scores(gt == i + 1, res == i + 1, radius)
    return j, f


def evaluate_frames(gt: np.ndarray, res: np.ndarray, n_objects: int,
                    bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """J and F of every object in every given frame (no frame is skipped).

    Args:
        gt: ``(T, H, W)`` integer ground-truth label maps (see :func:`evaluate_frame`).
        res: ``(T, H, W)`` integer result label maps.
        n_objects: ``N`` >= 0, see :func:`num_objects`.
        bound_th: boundary tolerance, see :func:`bound_pixels`.

    Returns:
        ``(J, F)``, two float64 arrays ``(N, T)`` in ``[0, 1]``.

    Raises:
        ValueError: shapes differ, the maps are not 3-D integer arrays, or ``n_objects < 0``.

    Source: ``davis2017/evaluation.py``, ``DAVISEvaluation._evaluate_semisupervised``.
    """
    gt, res = _check_label_pair(gt, res, 3, "evaluate_frames")
    if n_objects < 0:
        raise ValueError(f"evaluate_frames: n_objects must be >= 0, got {n_objects}")
    radius = bound_pixels(gt.shape[1:], bound_th)
    j = np.empty((n_objects, gt.shape[0]), dtype=np.float64)
    f = np.empty_like(j)
    for t in range(gt.shape[0]):
        g = gt[t]
        if n_objects >= VOID_ID:
            g = np.where(g == VOID_ID, 0, g)
        j[:, t], f[:, t] = _evaluate_frame(g, res[t], n_objects, radius)
    return j, f


def evaluate_semisupervised(gt: np.ndarray, res: np.ndarray,
                            bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of one sequence under the DAVIS semi-supervised protocol.

    The objects are ``1..N`` with ``N = num_objects(gt[0])``; the first and the last frames are not
    scored; void is background; result ids above ``N`` belong to no object.

    Args:
        gt: ``(T, H, W)`` integer ground-truth label maps of all annotated frames, ``T >= 3``.
        res: ``(T, H, W)`` integer result label maps of the same frames (``res[0]`` and ``res[-1]``
            are not read).

    Returns:
        ``(J, F)``, two float64 arrays ``(N, T - 2)`` in ``[0, 1]``.

    Raises:
        ValueError: fewer than 3 frames, or as :func:`evaluate_frames`.

    Source: ``davis2017/evaluation.py``, ``DAVISEvaluation.evaluate`` (semi-supervised task).
    """
    gt, res = _check_label_pair(gt, res, 3, "evaluate_semisupervised")
    if gt.shape[0] < 3:
        raise ValueError(f"evaluate_semisupervised: needs at least 3 frames, got {gt.shape[0]}")
    return evaluate_frames(gt[1:-1], res[1:-1], num_objects(gt[0]), bound_th)


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------


class Statistics(NamedTuple):
    """Mean, recall and decay of one object's per-frame J or F."""

    mean: float
    recall: float
    decay: float


def db_statistics(per_frame_values: np.ndarray) -> Statistics:
    """Mean, Recall and Decay of the per-frame values of one object.

    * mean: ``nanmean`` of the values;
    * recall: fraction of frames with a value strictly above 0.5;
    * decay: the frames are cut into 4 bins at ``round(linspace(1, n, 5)) - 1`` (neighbouring bins
      share their boundary frame), and decay is the mean of the first bin minus the mean of the last.

    Args:
        per_frame_values: float array ``(n,)``, ``n >= 1``, values in ``[0, 1]`` (NaN ignored).

    Returns:
        :class:`Statistics` ``(mean, recall, decay)`` as Python floats; mean and recall in
        ``[0, 1]``, decay in ``[-1, 1]``.

    Raises:
        ValueError: ``per_frame_values`` is not 1-D or is empty.

    Source: ``davis2017/utils.py``, ``db_statistics``. The official code stores the bin indices as
    ``uint8``, which wraps for sequences of more than 256 scored frames; here they are int64, which is
    identical up to 256 frames (every DAVIS sequence) and correct beyond.
    """
    v = np.asarray(per_frame_values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"db_statistics needs a non-empty 1-D array, got shape {v.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices give NaN
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        n_bins = 4
        ids = (np.round(np.linspace(1, len(v), n_bins + 1) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i]:ids[i + 1] + 1] for i in range(n_bins)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return Statistics(float(mean), float(recall), float(decay))
