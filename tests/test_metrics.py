"""Tests of :mod:`vos.evaluation.metrics`: hand-computed J, F, boundary maps and statistics, and bit-for-bit
agreement of the per-frame J and F with the independent ``vos-benchmark`` package (which reproduces
the official DAVIS 2017 numbers) on generated label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vos.evaluation import metrics as M

vb_evaluator = pytest.importorskip("vos_benchmark.evaluator")
vb_utils = pytest.importorskip("vos_benchmark.utils")


def vb_per_frame(gt_frames, res_frames, n_objects):
    """Per-frame J and F of objects 1..n from vos-benchmark's Evaluator, with the official DAVIS 2017
    semi-supervised reading of the ground truth (void 255 and ids above n are background).

    The objects are registered up front so that vos-benchmark scores them in every frame, as the
    official evaluator does (on its own it starts an object's list at its first appearance)."""
    ev = vb_evaluator.Evaluator()
    ev.objects_in_gt = set(range(1, n_objects + 1))
    for g, r in zip(gt_frames, res_frames):
        g = np.where((g == 255) | (g > n_objects), 0, g).astype(np.uint8)
        ev.feed_frame(np.asarray(r), g)
    j = np.array([ev.object_iou[k] for k in range(1, n_objects + 1)], dtype=np.float64)
    f = np.array([ev.boundary_f[k] for k in range(1, n_objects + 1)], dtype=np.float64)
    return j, f


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


# ------------------------------------------------------------------------------------------------
# boundary map, disk, tolerance
# ------------------------------------------------------------------------------------------------


def test_seg2bmap_hand_square():
    # 3x3 square at rows/cols 2..4 of an 8x8 frame: a pixel is on the boundary when it differs from
    # its east, south or south-east neighbour
    b = M.seg2bmap(square(8, 8, 2, 4, 2, 4))
    expected = {(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (3, 1), (4, 1),  # outside, offset to origin
                (2, 4), (3, 4), (4, 4), (4, 2), (4, 3)}                  # inside, last row / column
    assert b.dtype == bool and b.shape == (8, 8)
    assert set(zip(*np.nonzero(b))) == expected


def test_seg2bmap_frame_edges():
    # full frame: no boundary at all (last row / column compare with one neighbour only)
    assert not M.seg2bmap(np.ones((5, 7))).any()
    # object touching the bottom-right corner
    b = M.seg2bmap(square(5, 5, 3, 4, 3, 4))
    assert set(zip(*np.nonzero(b))) == {(2, 2), (2, 3), (2, 4), (3, 2), (4, 2)}
    with pytest.raises(ValueError):
        M.seg2bmap(np.ones((2, 2, 2)))


def test_seg2bmap_matches_official_random():
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (7, 13), (31, 17)]
    for h, w in shapes:
        for p in (0.0, 0.1, 0.5, 0.9, 1.0):
            s = rng.random((h, w)) < p
            assert np.array_equal(M.seg2bmap(s), vb_utils._seg2bmap(s)), (h, w, p)


def test_disk_matches_skimage():
    skm = pytest.importorskip("skimage.morphology")
    for r in range(0, 12):
        assert np.array_equal(M.disk(r), skm.disk(r)), r


def test_bound_pixels():
    assert M.bound_pixels((480, 854)) == 8     # ceil(0.008 * 979.6)
    assert M.bound_pixels((10, 10)) == 1
    assert M.bound_pixels((1080, 1920)) == 18  # ceil(0.008 * 2202.9)
    assert M.bound_pixels((480, 854), 3) == 3
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            M.bound_pixels((10, 10), bad)


def test_scipy_dilation_equals_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for _ in range(60):
        h, w = rng.integers(1, 40, 2)
        r = int(rng.integers(0, 10))
        b = rng.random((h, w)) < 0.06
        ref = cv2.dilate(b.view(np.uint8), M.disk(r)).view(bool)
        assert np.array_equal(M._dilate_disk_scipy(b, r), ref), (h, w, r)


# ------------------------------------------------------------------------------------------------
# J and F, hand-computed
# ------------------------------------------------------------------------------------------------


def test_region_similarity_hand():
    gt = square(6, 6, 0, 1, 0, 3)    # 8 pixels
    pred = square(6, 6, 1, 2, 0, 3)  # 8 pixels, 4 shared
    assert M.region_similarity(gt, pred) == 4 / 12
    assert M.region_similarity(gt, gt) == 1.0
    empty = np.zeros((6, 6), bool)
    assert M.region_similarity(empty, empty) == 1.0   # empty vs empty counts as 1
    assert M.region_similarity(gt, empty) == 0.0
    assert M.region_similarity(empty, pred) == 0.0
    seq = M.region_similarity(np.stack([gt, empty, gt]), np.stack([pred, empty, empty]))
    assert seq.dtype == np.float64 and seq.tolist() == [1 / 3, 1.0, 0.0]
    # void pixels are removed from both masks
    void = square(6, 6, 0, 0, 0, 3)
    assert M.region_similarity(gt, pred, void) == 4 / 8
    with pytest.raises(ValueError):
        M.region_similarity(gt, pred[:5])


def test_contour_accuracy_hand():
    # 10x10 frames: tolerance ceil(0.008 * 14.1) = 1 pixel, the disk is a 3x3 cross
    gt = square(10, 10, 2, 4, 2, 4)
    empty = np.zeros((10, 10), bool)
    assert M.contour_accuracy(gt, gt) == 1.0
    assert M.contour_accuracy(empty, empty) == 1.0   # no boundary on either side
    assert M.contour_accuracy(gt, empty) == 0.0      # precision 1, recall 0
    assert M.contour_accuracy(empty, gt) == 0.0      # precision 0, recall 1
    assert M.contour_accuracy(gt, square(10, 10, 7, 9, 7, 9)) == 0.0  # too far apart
    # shifted 3 columns right: 6 of 12 boundary pixels within 1 pixel each way -> P = R = 0.5
    assert M.contour_accuracy(gt, square(10, 10, 2, 4, 5, 7)) == 0.5
    # a single pixel at the centre: its 4 boundary pixels all match (P = 1), 8 of the 12 ground-truth
    # boundary pixels are within 1 pixel of them (R = 2/3): F = 2 * 1 * 2/3 / (5/3) = 0.8
    f = M.contour_accuracy(gt, square(10, 10, 3, 3, 3, 3))
    assert f == pytest.approx(0.8, abs=1e-15)
    assert f == 2 * 1.0 * (8 / 12) / (1.0 + 8 / 12)
    seq = M.contour_accuracy(np.stack([gt, gt]), np.stack([gt, empty]))
    assert seq.tolist() == [1.0, 0.0]


def test_contour_accuracy_uses_full_frame_tolerance():
    # 480x854 frame: 8-pixel tolerance, although the objects are tiny and far from the frame edges
    gt = square(480, 854, 100, 120, 300, 330)
    near = square(480, 854, 108, 128, 300, 330)   # 8 rows down: every boundary pixel within 8
    far = square(480, 854, 109, 129, 300, 330)    # 9 rows down: only the side edges match
    assert M.contour_accuracy(gt, near) == 1.0
    assert M.contour_accuracy(gt, far) < 1.0


# ------------------------------------------------------------------------------------------------
# statistics, hand-computed
# ------------------------------------------------------------------------------------------------


def test_statistics_hand():
    s = M.db_statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=float))
    # n = 8: bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last v[5:8]
    assert s == (0.5, 0.5, 1.0)
    s = M.db_statistics(np.array([0.2, 0.4, 0.6, 0.8, 1.0]))
    # n = 5: edges [0, 1, 2, 3, 4]; first bin (0.2, 0.4), last (0.8, 1.0); 0.5 is not above 0.5
    assert s.mean == pytest.approx(0.6, abs=1e-15)
    assert s.recall == 0.6
    assert s.decay == pytest.approx(0.3 - 0.9, abs=1e-15)
    assert M.db_statistics(np.array([0.5, 0.5, 0.5])).recall == 0.0
    assert M.db_statistics(np.array([0.7])) == (0.7, 1.0, 0.0)
    with pytest.raises(ValueError):
        M.db_statistics(np.array([]))


def test_statistics_long_sequence_no_wrap():
    # 300 scored frames: edges [0, 75, 150, 224, 299]; the official uint8 indices would wrap here
    v = np.r_[np.ones(150), np.zeros(150)]
    assert M.db_statistics(v) == (0.5, 0.5, 1.0)


def _decay_reference(v):
    n = len(v)
    edges = [math.floor(1 + q * (n - 1) / 4 + 1e-10 + 0.5) - 1 for q in range(5)]
    return float(np.mean(v[edges[0]:edges[1] + 1]) - np.mean(v[edges[3]:edges[4] + 1]))


def test_statistics_decay_random_lengths():
    rng = np.random.default_rng(2)
    for n in range(1, 120):
        v = rng.random(n)
        assert M.db_statistics(v).decay == pytest.approx(_decay_reference(v), abs=1e-12), n


# ------------------------------------------------------------------------------------------------
# label maps vs vos-benchmark
# ------------------------------------------------------------------------------------------------


def _random_objects(rng, h, w, n, t):
    """``t`` frames of ``n`` moving rectangles (some tiny, some on the frame edges, one vanishing)
    and the matching perturbed results."""
    gt = np.zeros((t, h, w), np.uint8)
    res = np.zeros((t, h, w), np.uint8)
    boxes = []
    for k in range(1, n + 1):
        bh, bw = (1, 1) if k == 3 else (int(rng.integers(1, h // 2 + 2)), int(rng.integers(1, w // 2 + 2)))
        boxes.append([int(rng.integers(0, h)), int(rng.integers(0, w)), bh, bw])
    boxes[-1][0], boxes[-1][1] = h - 2, w - 3   # touches the bottom edge
    for i in range(t):
        for k, (y, x, bh, bw) in enumerate(boxes, start=1):
            if k == 2 and i > t // 2:
                continue  # object 2 vanishes
            yy, xx = (y + 2 * i) % h, (x + 3 * i) % w
            gt[i, yy:yy + bh, xx:xx + bw] = k
            dy, dx = rng.integers(-3, 4, 2)
            if rng.random() < 0.85:
                res[i, max(yy + dy, 0):max(yy + dy + bh, 0), max(xx + dx, 0):max(xx + dx + bw, 0)] = k
        if i == t - 3:
            gt[i] = 0  # an empty ground-truth frame
    return gt, res


@pytest.mark.parametrize("h,w", [(37, 53), (120, 200), (480, 854)])
def test_evaluate_frames_matches_vos_benchmark(h, w):
    rng = np.random.default_rng(h * w)
    n, t = 5, (6 if h == 480 else 12)
    gt, res = _random_objects(rng, h, w, n, t)
    j, f = M.evaluate_frames(gt, res, n)
    jr, fr = vb_per_frame(gt, res, n)
    assert j.shape == f.shape == (n, t)
    np.testing.assert_array_equal(j, jr)   # bit-identical
    np.testing.assert_array_equal(f, fr)


def test_evaluate_frame_random_label_maps_match_vos_benchmark():
    rng = np.random.default_rng(3)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        n = int(rng.integers(1, 4))
        gt = rng.integers(0, n + 1, (h, w)).astype(np.uint8)
        res = rng.integers(0, n + 1, (h, w)).astype(np.uint8)
        if trial % 3 == 0:   # sparse noise instead of dense
            gt[rng.random((h, w)) < 0.8] = 0
            res[rng.random((h, w)) < 0.8] = 0
        j, f = M.evaluate_frame(gt, res, n)
        jr, fr = vb_per_frame([gt], [res], n)
        np.testing.assert_array_equal(j, jr[:, 0])
        np.testing.assert_array_equal(f, fr[:, 0])


def test_scipy_fallback_gives_same_numbers(monkeypatch):
    rng = np.random.default_rng(4)
    gt, res = _random_objects(rng, 120, 200, 4, 6)
    j_cv, f_cv = M.evaluate_frames(gt, res, 4)
    monkeypatch.setattr(M, "_cv2", False)
    j_sp, f_sp = M.evaluate_frames(gt, res, 4)
    np.testing.assert_array_equal(j_cv, j_sp)
    np.testing.assert_array_equal(f_cv, f_sp)


def test_semisupervised_protocol():
    rng = np.random.default_rng(5)
    gt, res = _random_objects(rng, 60, 90, 3, 10)
    gt[0][gt[0] == 2] = 0          # id 2 absent from the first frame: still an object (N = 3)
    gt[0, 0, :5] = 255             # void in the first frame: not an object
    gt[4, 10:20, 10:20] = 255      # void later: background
    gt[5, 30:40, 30:40] = 7        # an id above N later in the ground truth: background
    res[6, :3, :3] = 9             # result id above N: belongs to no object
    assert M.num_objects(gt[0]) == 3
    j, f = M.evaluate_semisupervised(gt, res)
    jr, fr = vb_per_frame(gt[1:-1], np.where(res > 3, 0, res)[1:-1], 3)
    assert j.shape == (3, 8)
    np.testing.assert_array_equal(j, jr)
    np.testing.assert_array_equal(f, fr)
    # void is background: predicting the void square as object 1 is a false positive
    g = np.zeros((3, 20, 20), np.uint8)
    g[:, 2:6, 2:6] = 1
    g[1, 10:14, 10:14] = 255
    r = g.copy()
    jj, _ = M.evaluate_semisupervised(g, np.where(r == 255, 1, r))
    assert jj[0, 0] == 16 / 32
    with pytest.raises(ValueError):
        M.evaluate_semisupervised(g[:2], r[:2])


def test_num_objects():
    assert M.num_objects(np.array([[0, 2], [1, 255]], np.uint8)) == 2
    assert M.num_objects(np.array([[0, 255]], np.uint8)) == 0
    assert M.num_objects(np.zeros((3, 3), np.uint8)) == 0
    big = np.array([[0, 300, 255]], np.uint16)   # 16-bit ids: 255 is still void
    assert M.num_objects(big) == 300


def test_evaluate_frame_bad_input():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError):
        M.evaluate_frame(a, a[:3], 1)
    with pytest.raises(ValueError):
        M.evaluate_frame(a, a.astype(np.float32), 1)
    with pytest.raises(ValueError):
        M.evaluate_frame(a, a, -1)
    j, f = M.evaluate_frame(a, a, 0)
    assert j.shape == f.shape == (0,)
