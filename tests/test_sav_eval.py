"""Tests of the SA-V / vos-benchmark J&F protocol: :func:`vos.evaluation.sav.evaluate_sav` and
``vos eval --protocol sav``.

References:

* DAVIS-style folders (``GT/<vid>/<stem>.png`` id maps): the ``vos-benchmark`` package itself,
  ``vos_benchmark.benchmark.benchmark`` (global means and per-object means);
* SA-V per-object folders (``GT/<vid>/<obj>/<stem>.png``): SAM 2's ``VideoEvaluator`` around
  ``vos-benchmark``'s ``Evaluator``, rebuilt below from ``sav_dataset/utils/sav_benchmark.py``
  (per object folder: sorted frames, first and last skipped, both masks read as ``> 0``, one
  ``Evaluator`` per object, global = mean over all objects) -- the ``Evaluator`` doing the scoring
  is the package's;
* hand-computed cases on which the SA-V and the DAVIS 2017 protocols differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from tests.conftest import SHARED_DATA
from vos import cli
from vos.errors import EvalError
from vos.evaluation.common import EvalWarning
from vos.evaluation.davis2017 import evaluate_davis
from vos.evaluation.sav import evaluate_sav

vb_bench = pytest.importorskip("vos_benchmark.benchmark")
vb_evaluator = pytest.importorskip("vos_benchmark.evaluator")

CAR_GT = SHARED_DATA / "davis_sample" / "Annotations" / "480p" / "car-shadow"
needs_car = pytest.mark.skipif(not CAR_GT.is_dir(), reason=f"DAVIS sample data not found in {CAR_GT}")

TOL = 1e-6


# ------------------------------------------------------------------------------------------------
# writing trees
# ------------------------------------------------------------------------------------------------


def palette() -> list[int]:
    rng = np.random.default_rng(0)
    return [0, 0, 0] + [int(v) for v in rng.integers(0, 256, 255 * 3)]


PALETTE = palette()


def write_ids(path: Path, arr: np.ndarray) -> None:
    """A palette PNG whose indices are the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    im.putpalette(PALETTE)
    im.save(path)


def write_mask(path: Path, mask: np.ndarray, fg: int = 255) -> None:
    """A grayscale PNG, 0 and ``fg``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, fg, 0).astype(np.uint8), mode="L").save(path)


def stem(i: int) -> str:
    return f"{5 * i:05d}"   # YouTube-VOS / SA-V 6 fps stems step by 5


def write_id_video(folder: Path, frames, skip=()) -> None:
    for i, a in enumerate(frames):
        if i not in skip:
            write_ids(folder / f"{stem(i)}.png", a)


def write_sav_video(folder: Path, objects: dict[str, np.ndarray], fg: int = 255) -> None:
    for obj, masks in objects.items():
        for i, m in enumerate(masks):
            write_mask(folder / obj / f"{stem(i)}.png", m, fg)


def blob(h, w, cy, cx, ry, rx, rng) -> np.ndarray:
    """An ellipse with a ragged edge."""
    yy, xx = np.mgrid[:h, :w]
    r = ((yy - cy) / max(ry, 1)) ** 2 + ((xx - cx) / max(rx, 1)) ** 2
    noise = ndi.gaussian_filter(rng.standard_normal((h, w)), 2) * 0.6
    return (r + noise) < 1


def perturb(m: np.ndarray, rng) -> np.ndarray:
    kind = rng.integers(0, 5)
    if kind == 0:
        return ndi.binary_erosion(m, iterations=2)
    if kind == 1:
        return ndi.binary_dilation(m, iterations=3)
    if kind == 2:
        return np.roll(m, tuple(int(v) for v in rng.integers(-5, 6, 2)), axis=(0, 1))
    if kind == 3:
        return np.zeros_like(m) if rng.random() < 0.5 else m
    return m


def gen_id_video(h, w, t, seed, objects, void=False, spurious=None, early=None):
    """DAVIS-style ground truth and results.

    ``objects``: ``{id: (first, last)}`` frames where the object is in the ground truth (a tuple of
    ranges for one that vanishes and comes back); ``void``: a 255 band in the ground truth of some
    frames; ``spurious``: an id that only the results hold; ``early``: ``{id: k}`` predicted ``k``
    frames before its ground truth starts."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((t, h, w), np.uint8)
    res = np.zeros((t, h, w), np.uint8)
    for n, (k, spans) in enumerate(objects.items()):
        if isinstance(spans[0], int):
            spans = (spans,)
        cy0, cx0 = rng.uniform(0.25, 0.75) * h, (n + 0.5) * w / len(objects)
        for i in range(t):
            cy, cx = cy0 + 1.5 * i, cx0 + rng.uniform(-2, 2)
            m = blob(h, w, cy, cx, h / 6, w / (3 * len(objects)), rng)
            on = any(a <= i <= b for a, b in spans)
            if on:
                gt[i][m] = k
            pre = early and k in early and spans[0][0] - early[k] <= i < spans[0][0]
            if on or pre:
                p = perturb(m, rng)
                res[i][p & (res[i] == 0)] = k
    if void:
        for i in range(1, t, 2):
            gt[i, h // 2:h // 2 + 3, :] = 255
    if spurious:
        res[t // 2, :6, :6] = spurious
    return gt, res


def gen_sav_video(h, w, t, seed, objects):
    """SA-V ground truth and results: ``objects`` ``{folder: (first, n_frames)}``; objects overlap."""
    rng = np.random.default_rng(seed)
    gts, ress = {}, {}
    for name, (first, n) in objects.items():
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        g = np.zeros((n, h, w), bool)
        for i in range(first, n):
            g[i] = blob(h, w, cy + i, cx - i, h / 4, w / 4, rng)
        gts[name] = g
        ress[name] = np.stack([perturb(m, rng) if m.any() else m for m in g])
    return gts, ress


# ------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------


def vb_reference(gt_root: Path, res_root: Path, keep_first_last: bool):
    """vos-benchmark on a root of DAVIS-style videos: ``(global (J&F, J, F), {vid_id: (J, F)})`` as
    fractions."""
    jf, j, f, objs = vb_bench.benchmark([str(gt_root)], [str(res_root)], strict=True,
                                        num_processes=1, verbose=False,
                                        skip_first_and_last=not keep_first_last)
    per = {f"{vid}_{k}": (iou[k] / 100, bf[k] / 100)
           for vid, (iou, bf) in objs[0].items() for k in iou}
    os.unlink(res_root / "results.csv")   # vos-benchmark writes it into the results folder
    return (jf[0] / 100, j[0] / 100, f[0] / 100), per


def sam2_sav_reference(gt_root: Path, res_root: Path, keep_first_last: bool):
    """SAM 2's ``VideoEvaluator`` for SA-V folders (``sav_benchmark.py``), with vos-benchmark's
    ``Evaluator``: ``(global (J&F, J, F), {vid_obj: (J, F)})`` as fractions."""
    per = {}
    for vid in sorted(os.listdir(gt_root)):
        for obj in sorted(os.listdir(gt_root / vid)):
            frames = sorted(os.listdir(gt_root / vid / obj))
            if not keep_first_last:
                frames = frames[1:-1]
            ev = vb_evaluator.Evaluator(name=vid)
            for fr in frames:
                g = np.array(Image.open(gt_root / vid / obj / fr))
                p = np.array(Image.open(res_root / vid / obj / fr))
                assert len(np.unique(g)) <= 2 and len(np.unique(p)) <= 2
                ev.feed_frame(mask=p > 0, gt=g > 0)
            iou, bf = ev.conclude()
            assert len(iou) == 1
            (k,) = iou
            per[f"{vid}_{obj}"] = (iou[k] / 100, bf[k] / 100)
    j = np.mean([v[0] for v in per.values()])
    f = np.mean([v[1] for v in per.values()])
    return ((j + f) / 2, j, f), per


def check(result, ref):
    (g_jf, g_j, g_f), per = ref
    assert sorted(result["per_object"]) == sorted(per)
    for key, (j, f) in per.items():
        row = result["per_object"][key]
        assert row["J-Mean"] == pytest.approx(j, abs=TOL), key
        assert row["F-Mean"] == pytest.approx(f, abs=TOL), key
        assert row["J&F-Mean"] == pytest.approx((j + f) / 2, abs=TOL), key
    g = result["global"]
    assert g["J&F-Mean"] == pytest.approx(g_jf, abs=TOL)
    assert g["J-Mean"] == pytest.approx(g_j, abs=TOL)
    assert g["F-Mean"] == pytest.approx(g_f, abs=TOL)
    assert 0.0 < g["J-Mean"] < 1.0 and 0.0 < g["F-Mean"] < 1.0   # not a trivial case


class _Silence:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", EvalWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# ------------------------------------------------------------------------------------------------
# generated cases against vos-benchmark / SAM 2
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def id_tree(tmp_path_factory):
    """DAVIS-style videos with non-contiguous ids, late, vanishing and returning objects, 255 in the
    ground truth, ids only in the results, objects predicted before they appear, an empty result
    frame and videos of different sizes."""
    base = tmp_path_factory.mktemp("ids")
    gt_root, res_root = base / "GT", base / "R"
    videos = {
        "vid-a": gen_id_video(60, 90, 9, 1, {1: (0, 8), 3: (0, 8), 7: (3, 8)}, void=True,
                              spurious=9, early={7: 2}),
        "vid-b": gen_id_video(48, 64, 7, 2, {2: ((0, 2), (5, 6)), 5: (1, 4)}, spurious=255),
        "vid-c": gen_id_video(70, 50, 12, 3, {1: (0, 11), 2: (0, 0), 4: (6, 11)}, early={4: 1}),
    }
    videos["vid-c"][1][5] = 0   # an empty result frame
    for vid, (gt, res) in videos.items():
        write_id_video(gt_root / vid, gt)
        write_id_video(res_root / vid, res)
    return gt_root, res_root


@pytest.mark.parametrize("keep", [False, True])
def test_id_folders_match_vos_benchmark(id_tree, keep):
    gt_root, res_root = id_tree
    ref = vb_reference(gt_root, res_root, keep)
    result = evaluate_sav(gt_root, res_root, keep_first_last=keep, workers=1)
    check(result, ref)
    assert result["protocol"] == "sav" and result["keep_first_last"] is keep
    # the cases the generator was asked for are really there
    objs = set(result["per_object"])
    assert {"vid-a_1", "vid-a_3", "vid-a_7", "vid-a_255", "vid-b_2", "vid-b_5", "vid-c_1",
            "vid-c_4"} <= objs
    assert "vid-a_9" not in objs                # only in the results
    assert ("vid-c_2" in objs) == keep          # only in the first frame
    # vid-a's object 7 is predicted 2 frames before its ground truth: scored from there
    pf = result["per_frame"]["vid-a_7"]
    assert pf["frames"][0] == stem(1) and len(pf["J"]) == len(pf["frames"])


def test_id_folders_workers_and_video_order(id_tree):
    gt_root, res_root = id_tree
    one = evaluate_sav(gt_root, res_root, workers=1)
    assert evaluate_sav(gt_root, res_root, workers=2) == one   # not even the last bit changes
    assert list(one["per_sequence"]) == ["vid-a", "vid-b", "vid-c"]
    sub = evaluate_sav(gt_root, res_root, videos=["vid-c", "vid-a"], workers=1)
    assert list(sub["per_sequence"]) == ["vid-c", "vid-a"]
    assert sub["per_object"]["vid-a_3"] == one["per_object"]["vid-a_3"]
    for vid, row in one["per_sequence"].items():
        keys = [k for k in one["per_object"] if k.rsplit("_", 1)[0] == vid]
        assert row["J-Mean"] == pytest.approx(np.mean([one["per_object"][k]["J-Mean"] for k in keys]),
                                              abs=1e-12)


def test_frames_in_file_name_order(tmp_path):
    # the reference sorts file names: "a-1.png" < "a-2.png" < "a-3.png" < "a.png" ('-' < '.'), while
    # the stems sort "a" first; the first and last frames skipped must be those of the file order
    gt, res = gen_id_video(40, 60, 5, 11, {1: (0, 4), 2: (0, 4)})
    names = ["a-1", "a-2", "a", "a-3", "b"]
    for name, g, r in zip(names, gt, res):
        write_ids(tmp_path / "GT" / "v" / f"{name}.png", g)
        write_ids(tmp_path / "R" / "v" / f"{name}.png", r)
    result = evaluate_sav(tmp_path / "GT", tmp_path / "R", workers=1)
    assert result["per_frame"]["v_1"]["frames"] == ["a-2", "a-3", "a"]
    check(result, vb_reference(tmp_path / "GT", tmp_path / "R", False))


@pytest.fixture(scope="module")
def sav_tree(tmp_path_factory):
    """SA-V per-object folders: overlapping objects, objects that start late, non-contiguous object
    folders, object folders of different lengths, 0/255 ground truth and 0/1 results."""
    base = tmp_path_factory.mktemp("sav")
    gt_root, res_root = base / "GT", base / "R"
    videos = {
        "sav_000001": gen_sav_video(64, 96, 8, 1, {"000": (0, 8), "001": (0, 8), "003": (4, 8)}),
        "sav_000002": gen_sav_video(50, 40, 6, 2, {"000": (0, 6), "002": (2, 5)}),
    }
    for vid, (gts, ress) in videos.items():
        write_sav_video(gt_root / vid, gts, fg=255)
        write_sav_video(res_root / vid, ress, fg=1)
    return gt_root, res_root, videos


@pytest.mark.parametrize("keep", [False, True])
def test_sav_folders_match_sam2_evaluator(sav_tree, keep):
    gt_root, res_root, videos = sav_tree
    result = evaluate_sav(gt_root, res_root, keep_first_last=keep, workers=2)
    check(result, sam2_sav_reference(gt_root, res_root, keep))
    assert list(result["per_object"]) == ["sav_000001_000", "sav_000001_001", "sav_000001_003",
                                          "sav_000002_000", "sav_000002_002"]
    # the objects overlap in the ground truth
    gts = videos["sav_000001"][0]
    assert (gts["000"] & gts["001"]).any()
    # an object that starts late is scored from its first frame
    assert result["per_frame"]["sav_000001_003"]["frames"][0] == stem(4)


@needs_car
def test_real_frames_sav_layout(tmp_path):
    """car-shadow's real masks (854x480) as one SA-V object, plus its mirror image overlapping it."""
    files = sorted(CAR_GT.glob("*.png"))[:10]
    car = np.stack([np.array(Image.open(p)) == 1 for p in files])
    rng = np.random.default_rng(5)
    gts = {"000": car, "001": car[:, :, ::-1] | np.roll(car, 40, axis=2)}
    ress = {k: np.stack([perturb(m, rng) for m in v]) for k, v in gts.items()}
    write_sav_video(tmp_path / "GT" / "car", gts)
    write_sav_video(tmp_path / "R" / "car", ress)
    result = evaluate_sav(tmp_path / "GT", tmp_path / "R", workers=1)
    check(result, sam2_sav_reference(tmp_path / "GT", tmp_path / "R", False))


def test_mixed_root_and_video_without_objects(tmp_path):
    # one GT root with an SA-V video, an id-map video and an id-map video whose scored frames are
    # empty: each video is read by what its folder holds; the empty one is left out with a warning
    gts, ress = gen_sav_video(40, 50, 5, 12, {"000": (0, 5), "001": (1, 5)})
    gt, res = gen_id_video(40, 50, 5, 13, {2: (0, 4), 4: (2, 4)})
    for root, sav_masks, ids in ((tmp_path / "GT", gts, gt), (tmp_path / "R", ress, res)):
        write_sav_video(root / "s", sav_masks)
        write_id_video(root / "i", ids)
        write_id_video(root / "z", np.zeros((3, 40, 50), np.uint8))
    with pytest.warns(EvalWarning, match="video z: no object"):
        both = evaluate_sav(tmp_path / "GT", tmp_path / "R", workers=2)
    assert list(both["per_sequence"]) == ["i", "s"]
    assert list(both["per_object"]) == ["i_2", "i_4", "s_000", "s_001"]
    ref_ids = vb_reference_videos(tmp_path / "GT", tmp_path / "R", ["i"])
    for key, (j, f) in ref_ids.items():
        assert both["per_object"][key]["J-Mean"] == pytest.approx(j, abs=TOL)
        assert both["per_object"][key]["F-Mean"] == pytest.approx(f, abs=TOL)
    alone = evaluate_sav(tmp_path / "GT", tmp_path / "R", videos=["s"], workers=1)
    for key, row in alone["per_object"].items():
        assert both["per_object"][key] == row
    assert both["global"]["J-Mean"] == pytest.approx(
        np.mean([r["J-Mean"] for r in both["per_object"].values()]), abs=1e-15)


def vb_reference_videos(gt_root: Path, res_root: Path, videos):
    """vos-benchmark's ``VideoEvaluator`` on some videos: ``{vid_id: (J, F)}`` as fractions."""
    ev = vb_bench.VideoEvaluator(str(gt_root), str(res_root))
    out = {}
    for vid in videos:
        _, iou, bf = ev(vid)
        out.update({f"{vid}_{k}": (iou[k] / 100, bf[k] / 100) for k in iou})
    return out


def test_no_fork_after_opencv(sav_tree):
    """A process that has loaded OpenCV (whose thread pool a forked child cannot use: it hung in
    ``cv2.setNumThreads``) starts its workers with forkserver; a clean one forks. Run in fresh
    interpreters, as this one has torch loaded (forkserver anyway)."""
    gt_root, res_root, _ = sav_tree
    script = (
        "import sys, numpy as np\n"
        "from vos.evaluation.common import mp_context\n"
        "from vos.evaluation.sav import evaluate_sav\n"
        "first = mp_context().get_start_method()\n"
        "import cv2\n"
        "cv2.dilate(np.ones((480, 854), np.uint8), np.ones((17, 17), np.uint8))\n"
        "r = evaluate_sav(sys.argv[1], sys.argv[2], workers=2)\n"
        "print(first, mp_context().get_start_method(), r['n_objects'])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(gt_root), str(res_root)],
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fork", "forkserver", "5"]


# ------------------------------------------------------------------------------------------------
# hand-computed: where the SA-V and the DAVIS 2017 protocols differ
# ------------------------------------------------------------------------------------------------


def square(h=20, w=20, y=4, x=4, s=8) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y:y + s, x:x + s] = True
    return m


def davis_root(tmp_path: Path, gt: np.ndarray, res: np.ndarray) -> tuple[Path, Path, Path]:
    root = tmp_path / "DAVIS"
    ann = root / "Annotations" / "480p"
    write_id_video(ann / "v", gt)
    write_id_video(tmp_path / "R" / "v", res)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("v\n")
    return root, ann, tmp_path / "R"


def test_hand_non_contiguous_ids(tmp_path):
    # ids 1 and 3 in all 5 frames; 1 predicted exactly, 3 never
    gt = np.zeros((5, 20, 20), np.uint8)
    gt[:, square(y=1, x=1, s=6)] = 1
    gt[:, square(y=10, x=10, s=6)] = 3
    res = np.where(gt == 1, 1, 0).astype(np.uint8)
    root, ann, r = davis_root(tmp_path, gt, res)
    sav = evaluate_sav(ann, r, workers=1)
    # SA-V: objects 1 (J = F = 1) and 3 (J = F = 0) -> 1/2
    assert sav["per_object"] == {"v_1": {"J&F-Mean": 1.0, "J-Mean": 1.0, "F-Mean": 1.0},
                                 "v_3": {"J&F-Mean": 0.0, "J-Mean": 0.0, "F-Mean": 0.0}}
    assert sav["global"] == {"J&F-Mean": 0.5, "J-Mean": 0.5, "F-Mean": 0.5}
    # DAVIS: objects 1..3, the missing id 2 is an object with empty masks (J = F = 1) -> 2/3
    davis = evaluate_davis(root, r, workers=1)
    assert list(davis["per_object"]) == ["v_1", "v_2", "v_3"]
    assert davis["global"]["J-Mean"] == pytest.approx(2 / 3, abs=1e-15)


def test_hand_object_appears_late_and_predicted_early(tmp_path):
    # 6 frames, scored 1..4. Object 1 everywhere, predicted exactly. Object 2 in the ground truth
    # from frame 3, predicted exactly from frame 3 and wrongly (nothing in the ground truth) on frame 2
    gt = np.zeros((6, 20, 20), np.uint8)
    gt[:, square(y=0, x=0, s=5)] = 1
    gt[3:, square(y=10, x=10, s=6)] = 2
    res = gt.copy()
    res[2][square(y=10, x=10, s=6)] = 2
    root, ann, r = davis_root(tmp_path, gt, res)
    sav = evaluate_sav(ann, r, workers=1)
    # object 2 counted from frame 2 (first seen, in the result): J = F = 0 there, 1 on frames 3, 4
    assert sav["per_frame"]["v_2"] == {"frames": [stem(2), stem(3), stem(4)], "J": [0.0, 1.0, 1.0],
                                       "F": [0.0, 1.0, 1.0]}
    assert sav["per_object"]["v_2"]["J-Mean"] == pytest.approx(2 / 3, abs=1e-15)
    assert sav["global"]["J-Mean"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    # DAVIS: N = 1 (the first frame's largest id): object 2 is not scored at all
    with pytest.warns(EvalWarning, match="result ids 2 are not objects"):
        davis = evaluate_davis(root, r, workers=1)
    assert list(davis["per_object"]) == ["v_1"] and davis["global"]["J-Mean"] == 1.0
    # with the first and last frames kept, object 2 still starts on frame 2 and frame 5 counts
    kept = evaluate_sav(ann, r, keep_first_last=True, workers=1)
    assert kept["per_frame"]["v_2"]["J"] == [0.0, 1.0, 1.0, 1.0]
    assert kept["per_frame"]["v_1"]["frames"] == [stem(i) for i in range(6)]


def test_hand_255_in_ground_truth(tmp_path):
    # object 1 predicted exactly; a 255 region in the ground truth of every frame, not predicted
    gt = np.zeros((5, 20, 20), np.uint8)
    gt[:, square(y=0, x=0, s=5)] = 1
    gt[:, square(y=12, x=12, s=4)] = 255
    res = np.where(gt == 1, 1, 0).astype(np.uint8)
    root, ann, r = davis_root(tmp_path, gt, res)
    # SA-V / vos-benchmark: 255 is an object like any other -> (1 + 0) / 2
    sav = evaluate_sav(ann, r, workers=1)
    assert list(sav["per_object"]) == ["v_1", "v_255"]
    assert sav["global"]["J&F-Mean"] == 0.5
    # DAVIS: 255 is void, read as background -> 1
    assert evaluate_davis(root, r, workers=1)["global"]["J&F-Mean"] == 1.0
    # predicting the 255 region as id 255 makes it perfect under SA-V
    write_id_video(r / "v", gt)
    assert evaluate_sav(ann, r, workers=1)["global"]["J&F-Mean"] == 1.0


def test_hand_partial_overlap_j(tmp_path):
    # SA-V object: 8x8 ground truth, the result its top half -> J = 32 / 64 on each scored frame;
    # a second object that vanishes after frame 1 (empty masks both sides: J = F = 1 there)
    g = square(s=8)
    p = g.copy()
    p[8:] = False
    gts = {"000": np.stack([g] * 5), "001": np.stack([g, g, g & False, g & False, g & False])}
    ress = {"000": np.stack([p] * 5), "001": gts["001"].copy()}
    write_sav_video(tmp_path / "GT" / "v", gts)
    write_sav_video(tmp_path / "R" / "v", ress)
    res = evaluate_sav(tmp_path / "GT", tmp_path / "R", workers=1)
    assert res["per_frame"]["v_000"]["J"] == [0.5, 0.5, 0.5]
    assert res["per_frame"]["v_001"] == {"frames": [stem(1), stem(2), stem(3)], "J": [1.0] * 3,
                                         "F": [1.0] * 3}
    assert res["global"]["J-Mean"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-15)


def test_object_empty_in_scored_frames_warns(tmp_path):
    # an SA-V object visible only in the first frame (the prompt): not counted, with a warning
    g = square()
    gts = {"000": np.stack([g] * 4), "001": np.stack([g] + [g & False] * 3)}
    write_sav_video(tmp_path / "GT" / "v", gts)
    write_sav_video(tmp_path / "R" / "v", gts)
    with pytest.warns(EvalWarning, match="object 001: empty in all 2 scored"):
        res = evaluate_sav(tmp_path / "GT", tmp_path / "R", workers=1)
    assert list(res["per_object"]) == ["v_000"]
    # kept first frame: counted
    assert list(evaluate_sav(tmp_path / "GT", tmp_path / "R", keep_first_last=True,
                             workers=1)["per_object"]) == ["v_000", "v_001"]


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------


def run_cli(argv, capsys):
    rc = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_sav_json(sav_tree, tmp_path):
    gt_root, res_root, _ = sav_tree
    out = tmp_path / "out" / "scores.json"
    proc = subprocess.run([sys.executable, "-m", "vos.cli", "eval", "--protocol", "sav", "--gt-root",
                           str(gt_root), "--results", str(res_root), "--json", str(out)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    ref = evaluate_sav(gt_root, res_root, workers=1)
    assert data["protocol"] == "sav"
    assert set(data["global"]) == {"J&F-Mean", "J-Mean", "F-Mean"}
    assert data["global"] == ref["global"] and data["per_object"] == ref["per_object"]
    assert "sav_000001_003" in proc.stdout and "J&F-Mean" in proc.stdout
    assert not list(out.parent.glob("*.tmp*"))


def test_cli_protocol_choice_and_davis_root(tmp_path, capsys):
    gt = np.zeros((5, 20, 20), np.uint8)
    gt[:, square(y=1, x=1, s=6)] = 1
    gt[:, square(y=10, x=10, s=6)] = 3
    res = np.where(gt == 1, 1, 0).astype(np.uint8)
    root, ann, r = davis_root(tmp_path, gt, res)
    # a DAVIS root defaults to the DAVIS protocol; --protocol sav on it reads Annotations/480p
    rc, out, _ = run_cli(["--davis-root", root, "--results", r, "--json", tmp_path / "d.json"], capsys)
    assert rc == 0 and "J-Recall" in out
    assert json.loads((tmp_path / "d.json").read_text())["global"]["J-Mean"] == pytest.approx(2 / 3)
    rc, out, _ = run_cli(["--protocol", "sav", "--davis-root", root, "--results", r, "--json",
                          tmp_path / "s.json"], capsys)
    assert rc == 0 and "J-Recall" not in out
    assert json.loads((tmp_path / "s.json").read_text())["global"]["J-Mean"] == 0.5
    # --gt-root alone means the SA-V protocol
    rc, out, _ = run_cli(["--gt-root", ann, "--results", r, "--json", tmp_path / "g.json"], capsys)
    assert rc == 0
    assert json.loads((tmp_path / "g.json").read_text())["global"]["J-Mean"] == 0.5


def test_help_documents_protocol(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    for flag in ("--protocol", "davis2017", "sav", "--gt-root", "--keep-first-last"):
        assert flag in out


# ------------------------------------------------------------------------------------------------
# bad input: one line naming the file, exit code 2
# ------------------------------------------------------------------------------------------------


def expect_error(capsys, argv, *fragments):
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vos eval: error: "), err
    for frag in fragments:
        assert str(frag) in lines[0], (frag, lines[0])
    return lines[0]


@pytest.fixture
def small_sav(tmp_path):
    gts, ress = gen_sav_video(30, 40, 5, 7, {"000": (0, 5), "001": (0, 5)})
    write_sav_video(tmp_path / "GT" / "v", gts)
    write_sav_video(tmp_path / "R" / "v", ress, fg=1)
    return tmp_path / "GT", tmp_path / "R"


def test_error_missing_folders(small_sav, tmp_path, capsys):
    gt, r = small_sav
    expect_error(capsys, ["--protocol", "sav", "--gt-root", tmp_path / "nope", "--results", r],
                 "ground truth folder not found", tmp_path / "nope")
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", tmp_path / "nores"],
                 "results folder not found", tmp_path / "nores")
    (tmp_path / "split" / "Annotations_6fps").mkdir(parents=True)
    (tmp_path / "split" / "JPEGImages_24fps").mkdir()
    expect_error(capsys, ["--protocol", "sav", "--gt-root", tmp_path / "split", "--results", r],
                 "Annotations_6fps")


def test_error_missing_results_video_and_frame(small_sav, capsys):
    gt, r = small_sav
    (r / "v" / "001" / f"{stem(2)}.png").unlink()
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r],
                 "video v object 001", f"{stem(2)}.png", r / "v" / "001", "missing")
    os.rename(r / "v", r / "w")
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r],
                 "no folder for video", "v")


def test_error_missing_results_object_folder(small_sav, capsys):
    import shutil

    gt, r = small_sav
    shutil.rmtree(r / "v" / "001")
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r],
                 "object 001", r / "v" / "001")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_error_size_mismatch(small_sav, capsys, workers):
    gt, r = small_sav
    bad = r / "v" / "001" / f"{stem(3)}.png"
    write_mask(bad, np.zeros((30, 41), bool), 1)
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r, "--workers", workers],
                 bad, "41x30", "40x30")


def test_error_non_binary_sav_png(small_sav, capsys):
    gt, r = small_sav
    bad = r / "v" / "000" / f"{stem(1)}.png"
    a = np.zeros((30, 40), np.uint8)
    a[:5, :5], a[10:15, 10:15] = 1, 2
    Image.fromarray(a, mode="L").save(bad)
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r], bad, "binary",
                 "0, 1, 2")
    bad_gt = gt / "v" / "000" / f"{stem(1)}.png"   # read before the bad result of that frame
    a[a == 0] = 7
    write_ids(bad_gt, a)
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r], bad_gt, "binary")


def test_error_rgb_and_mixed_folders(small_sav, capsys):
    gt, r = small_sav
    rgb = r / "v" / "000" / f"{stem(1)}.png"
    Image.new("RGB", (40, 30)).save(rgb)
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r], rgb, "RGB")
    write_mask(gt / "v" / f"{stem(0)}.png", np.zeros((30, 40), bool))
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r],
                 gt / "v", "both PNGs and sub-folders")


def test_error_option_mismatch(small_sav, tmp_path, capsys):
    gt, r = small_sav
    expect_error(capsys, ["--protocol", "davis2017", "--gt-root", gt, "--results", r], "--davis-root")
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--results", r, "--csv-dir",
                          tmp_path / "csv"], "--csv-dir")
    expect_error(capsys, ["--davis-root", gt, "--results", r, "--keep-first-last"],
                 "--keep-first-last")
    expect_error(capsys, ["--gt-root", gt, "--results", r, "--set", "train"], "--set")
    expect_error(capsys, ["--results", r], "--davis-root", "--gt-root")
    expect_error(capsys, ["--protocol", "sav", "--gt-root", gt, "--davis-root", gt, "--results", r],
                 "--davis-root", "--gt-root")


def test_library_errors(small_sav, tmp_path):
    gt, r = small_sav
    with pytest.raises(EvalError, match="workers"):
        evaluate_sav(gt, r, workers=0)
    with pytest.raises(EvalError, match="bogus"):
        evaluate_sav(gt, r, videos=["bogus"])
    empty = tmp_path / "E"
    write_sav_video(empty / "v", {"000": np.zeros((3, 10, 10), bool)})
    with pytest.raises(EvalError, match="no object to score"), _Silence():
        evaluate_sav(empty, empty, workers=1)
