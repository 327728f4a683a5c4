"""End-to-end tests of ``vos eval`` / :func:`vos.evaluation.davis2017.evaluate_davis`.

The reference is the independent ``vos-benchmark`` package (test extra), which reproduces the
official DAVIS 2017 numbers: on the real ``car-shadow`` sequence (ground truth and perturbed results)
and on generated multi-object sequences, every object's J-Mean and F-Mean must agree to 1e-9 and
every per-frame J and F must be equal bit for bit. Then every kind of bad input.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
from vos.evaluation.davis2017 import EvalWarning, evaluate_davis

vb_bench = pytest.importorskip("vos_benchmark.benchmark")
vb_evaluator = pytest.importorskip("vos_benchmark.evaluator")

DATA = SHARED_DATA
DAVIS = DATA / "davis_sample"
CAR_GT = DAVIS / "Annotations" / "480p" / "car-shadow"

needs_car = pytest.mark.skipif(not CAR_GT.is_dir(), reason=f"DAVIS sample data not found in {DAVIS}")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


PALETTE = voc_palette()


def write_label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    im.putpalette(PALETTE)   # L -> P, indices kept
    im.save(path)


def read_label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def car_gt() -> list[np.ndarray]:
    return [read_label(p) for p in sorted(CAR_GT.glob("*.png"))]


def write_sequence(folder: Path, frames, skip=()):
    for i, a in enumerate(frames):
        if i not in skip:
            write_label(folder / f"{i:05d}.png", a)


def make_root(root: Path, seqs: dict[str, np.ndarray], image_set=True) -> Path:
    for name, gt in seqs.items():
        write_sequence(root / "Annotations" / "480p" / name, gt)
    if image_set:
        (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
    return root


def vb_video(gt_root: Path, res_root: Path, name: str):
    """vos-benchmark's per-object J-Mean and F-Mean of one sequence, as fractions."""
    _, iou, bf = vb_bench.VideoEvaluator(str(gt_root), str(res_root))(name)
    return {k: v / 100 for k, v in iou.items()}, {k: v / 100 for k, v in bf.items()}


def vb_per_frame(gt_dir: Path, res_dir: Path, n_objects: int):
    """vos-benchmark's per-frame J and F of objects 1..n on frames 1..T-2 (objects registered up
    front so that every frame is scored, as the official evaluator does)."""
    ev = vb_evaluator.Evaluator()
    ev.objects_in_gt = set(range(1, n_objects + 1))
    for p in sorted(gt_dir.glob("*.png"))[1:-1]:
        g = read_label(p)
        g = np.where((g == 255) | (g > n_objects), 0, g)
        ev.feed_frame(read_label(res_dir / p.name), g)
    return ({k: np.array(ev.object_iou[k]) for k in range(1, n_objects + 1)},
            {k: np.array(ev.boundary_f[k]) for k in range(1, n_objects + 1)})


def recall_ref(v):
    return float(np.mean(np.asarray(v) > 0.5))


def decay_ref(v):
    v = np.asarray(v)
    n = len(v)
    e = [math.floor(1 + q * (n - 1) / 4 + 1e-10 + 0.5) - 1 for q in range(5)]
    return float(np.mean(v[e[0]:e[1] + 1]) - np.mean(v[e[3]:e[4] + 1]))


def run_cli(argv, capsys):
    rc = cli.main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def check_against_vos_benchmark(result, gt_root: Path, res_root: Path, names, n_objects):
    """Per-object means to 1e-9 and per-frame values bit for bit; global numbers from them."""
    all_j, all_f = [], []
    for name in names:
        j_mean, f_mean = vb_video(gt_root, res_root, name)
        j_frames, f_frames = vb_per_frame(gt_root / name, res_root / name, n_objects[name])
        assert sorted(j_mean) == list(range(1, n_objects[name] + 1))
        for k in range(1, n_objects[name] + 1):
            key = f"{name}_{k}"
            po = result["per_object"][key]
            assert po["J-Mean"] == pytest.approx(j_mean[k], abs=1e-9), key
            assert po["F-Mean"] == pytest.approx(f_mean[k], abs=1e-9), key
            assert result["per_frame"][key]["J"] == j_frames[k].tolist(), key
            assert result["per_frame"][key]["F"] == f_frames[k].tolist(), key
            assert po["J-Recall"] == pytest.approx(recall_ref(j_frames[k]), abs=1e-12)
            assert po["F-Recall"] == pytest.approx(recall_ref(f_frames[k]), abs=1e-12)
            assert po["J-Decay"] == pytest.approx(decay_ref(j_frames[k]), abs=1e-12)
            assert po["F-Decay"] == pytest.approx(decay_ref(f_frames[k]), abs=1e-12)
            all_j.append(j_frames[k])
            all_f.append(f_frames[k])
    g = result["global"]
    jm = np.mean([v.mean() for v in all_j])
    fm = np.mean([v.mean() for v in all_f])
    assert g["J-Mean"] == pytest.approx(jm, abs=1e-9)
    assert g["F-Mean"] == pytest.approx(fm, abs=1e-9)
    assert g["J&F-Mean"] == pytest.approx((jm + fm) / 2, abs=1e-9)
    assert g["J-Recall"] == pytest.approx(np.mean([recall_ref(v) for v in all_j]), abs=1e-9)
    assert g["F-Recall"] == pytest.approx(np.mean([recall_ref(v) for v in all_f]), abs=1e-9)
    assert g["J-Decay"] == pytest.approx(np.mean([decay_ref(v) for v in all_j]), abs=1e-9)
    assert g["F-Decay"] == pytest.approx(np.mean([decay_ref(v) for v in all_f]), abs=1e-9)


# ------------------------------------------------------------------------------------------------
# car-shadow: real ground truth, perturbed results
# ------------------------------------------------------------------------------------------------


def _perturb(kind: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for i, g in enumerate(frames):
        m = g == 1
        if kind == "gt":
            r = m
        elif kind == "eroded":
            r = ndi.binary_erosion(m, iterations=4)
        elif kind == "dilated":
            r = ndi.binary_dilation(m, iterations=6)
        elif kind == "shifted":
            r = np.zeros_like(m)
            r[9:, :-14] = m[:-9, 14:]
        elif kind == "emptied":
            r = np.zeros_like(m)
        elif kind == "random":
            r = rng.random(m.shape) < 0.3
        elif kind == "mixed":   # empty, exact, eroded and shifted frames in turn
            r = [np.zeros_like(m), m, ndi.binary_erosion(m, iterations=2), np.roll(m, 20, axis=1)][i % 4]
        else:
            raise AssertionError(kind)
        out.append(r.astype(np.uint8))
    return out


@needs_car
@pytest.mark.parametrize("kind", ["gt", "eroded", "dilated", "shifted", "emptied", "random", "mixed"])
def test_car_shadow_matches_vos_benchmark(kind, tmp_path):
    res_root = tmp_path / "res"
    write_sequence(res_root / "car-shadow", _perturb(kind, car_gt()))
    with pytest.warns(EvalWarning, match="ImageSets"):
        result = evaluate_davis(DAVIS, res_root, workers=2 if kind in ("gt", "random") else 1)
    assert list(result["per_object"]) == ["car-shadow_1"]
    check_against_vos_benchmark(result, DAVIS / "Annotations" / "480p", res_root,
                                ["car-shadow"], {"car-shadow": 1})
    if kind == "gt":
        assert result["global"] == {"J&F-Mean": 1.0, "J-Mean": 1.0, "J-Recall": 1.0, "J-Decay": 0.0,
                                    "F-Mean": 1.0, "F-Recall": 1.0, "F-Decay": 0.0}
    if kind == "emptied":
        assert result["global"]["J-Mean"] == 0.0 and result["global"]["F-Mean"] == 0.0


@needs_car
def test_cli_car_shadow_outputs(tmp_path, capsys):
    res_root = tmp_path / "res"
    write_sequence(res_root / "car-shadow", _perturb("eroded", car_gt()))
    # a stale official CSV in the results folder must be neither read nor trusted
    stale = res_root / "global_results-val.csv"
    stale.write_text("J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
                     "0.111,0.111,0.111,0.111,0.111,0.111,0.111\n")
    js = tmp_path / "out" / "res.json"
    rc, out, err = run_cli(["--davis-root", DAVIS, "--results", res_root, "--json", js,
                            "--csv-dir", res_root, "--workers", "2"], capsys)
    assert rc == 0, err
    assert "warning" in err and "ImageSets" in err and len(err.strip().splitlines()) == 1
    assert "Global results for val" in out and "car-shadow_1" in out and "J&F-Mean" in out
    data = json.loads(js.read_text())
    assert set(data) == {"global", "per_object", "per_sequence"}
    assert list(data["global"]) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
                                    "F-Recall", "F-Decay"]
    j_mean, f_mean = vb_video(DAVIS / "Annotations" / "480p", res_root, "car-shadow")
    assert data["per_object"]["car-shadow_1"]["J-Mean"] == pytest.approx(j_mean[1], abs=1e-9)
    assert data["per_object"]["car-shadow_1"]["F-Mean"] == pytest.approx(f_mean[1], abs=1e-9)
    assert data["per_sequence"]["car-shadow"]["J-Mean"] == data["per_object"]["car-shadow_1"]["J-Mean"]
    g = data["global"]
    assert g["J&F-Mean"] == (g["J-Mean"] + g["F-Mean"]) / 2
    # official CSV files, overwritten with the recomputed numbers
    lines = stale.read_text().splitlines()
    assert lines[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert lines[1] == ",".join(f"{g[c]:.3f}" for c in lines[0].split(","))
    seq_lines = (res_root / "per-sequence_results-val.csv").read_text().splitlines()
    po = data["per_object"]["car-shadow_1"]
    assert seq_lines == ["Sequence,J-Mean,F-Mean", f"car-shadow_1,{po['J-Mean']:.3f},{po['F-Mean']:.3f}"]
    assert not [p for p in res_root.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in js.parent.iterdir() if p.name.endswith(".tmp")]


@needs_car
def test_console_script(tmp_path):
    res_root = tmp_path / "res"
    write_sequence(res_root / "car-shadow", _perturb("shifted", car_gt()))
    exe = shutil.which("vos")
    cmd = [exe] if exe else [sys.executable, "-m", "vos.cli"]
    p = subprocess.run([*cmd, "eval", "--davis-root", str(DAVIS), "--results", str(res_root)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "J&F-Mean" in p.stdout and "car-shadow_1" in p.stdout
    p = subprocess.run([*cmd, "eval", "--davis-root", str(DAVIS), "--results", str(tmp_path / "no")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("vos eval: error: results folder not found")
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------------
# generated multi-object sequences
# ------------------------------------------------------------------------------------------------


def gen_sequence(h, w, t, n, seed, vanish=(), tiny=(), empty_frames=(), edge=()):
    """``n`` non-overlapping objects in their own column bands, moving down; the results are the
    objects shifted, eroded or dropped at random."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((t, h, w), np.uint8)
    res = np.zeros((t, h, w), np.uint8)
    band = w // n
    for k in range(1, n + 1):
        x0 = (k - 1) * band
        bw = 1 if k in tiny else max(1, band - 2)
        bh = 1 if k in tiny else max(1, h // 3)
        for i in range(t):
            if k in vanish and i > t // 2:
                continue
            if i in empty_frames:
                continue
            y = h - bh if k in edge else (2 * i) % max(1, h - bh)
            gt[i, y:y + bh, x0:x0 + bw] = k
            if rng.random() < 0.15:
                continue  # missed
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
            ys, xs = max(y + dy, 0), max(x0 + dx, 0)
            res[i, ys:max(y + dy + bh, 0), xs:max(x0 + dx + bw, 0)] = k
    return gt, res


def test_generated_multi_object_matches_vos_benchmark(tmp_path):
    a_gt, a_res = gen_sequence(120, 200, 14, 4, 1, vanish={2}, tiny={3}, empty_frames={9}, edge={4})
    b_gt, b_res = gen_sequence(480, 854, 6, 2, 2)
    b_res[b_res == 2] = 0          # object 2 never predicted: fewer ids than objects
    c_gt, c_res = gen_sequence(37, 53, 9, 3, 3, tiny={1}, edge={3})
    c_res[4] = 0                    # an empty result frame
    root = make_root(tmp_path / "davis", {"seq-a": a_gt, "seq-b": b_gt, "seq-c": c_gt})
    res_root = tmp_path / "res"
    for name, res in (("seq-a", a_res), ("seq-b", b_res), ("seq-c", c_res)):
        write_sequence(res_root / name, res)
    result = evaluate_davis(root, res_root, workers=2)
    assert list(result["per_object"]) == ["seq-a_1", "seq-a_2", "seq-a_3", "seq-a_4", "seq-b_1",
                                          "seq-b_2", "seq-c_1", "seq-c_2", "seq-c_3"]
    check_against_vos_benchmark(result, root / "Annotations" / "480p", res_root,
                                ["seq-a", "seq-b", "seq-c"], {"seq-a": 4, "seq-b": 2, "seq-c": 3})
    assert result["per_object"]["seq-b_2"]["J-Mean"] == 0.0
    for name in ("seq-a", "seq-b", "seq-c"):
        objs = [v for k, v in result["per_object"].items() if k.rsplit("_", 1)[0] == name]
        ps = result["per_sequence"][name]
        assert ps["J-Mean"] == pytest.approx(np.mean([o["J-Mean"] for o in objs]), abs=1e-12)
        assert ps["F-Mean"] == pytest.approx(np.mean([o["F-Mean"] for o in objs]), abs=1e-12)
    # the number of workers changes nothing, not even the last bit
    assert evaluate_davis(root, res_root, workers=1) == result
    # --sequences restricts the set, in the given order
    sub = evaluate_davis(root, res_root, sequences=["seq-c", "seq-a"], workers=1)
    assert list(sub["per_sequence"]) == ["seq-c", "seq-a"]
    assert sub["per_object"]["seq-a_2"] == result["per_object"]["seq-a_2"]


def test_official_semantics_void_first_frame_and_extra_ids(tmp_path, capsys):
    gt, res = gen_sequence(60, 90, 8, 3, 4)
    gt[0][gt[0] == 2] = 0               # id 2 absent from the first frame: still object 2 (N = 3)
    gt[:, 0, :] = 255                   # void row in every frame: background for the protocol
    gt[3, 40:45, 10:20] = 6             # a ground-truth id above N: background
    res_extra = res.copy()
    res_extra[2, 50:55, 50:55] = 5      # result ids above N: ignored with a warning
    res_extra[5, :2, :2] = 255
    root = make_root(tmp_path / "davis", {"s": gt})
    write_sequence(tmp_path / "res" / "s", res_extra)
    write_sequence(tmp_path / "clean" / "s", np.where(res_extra > 3, 0, res_extra))
    rc, out, err = run_cli(["--davis-root", root, "--results", tmp_path / "res",
                            "--json", tmp_path / "a.json"], capsys)
    assert rc == 0
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and "sequence s" in warn[0] and "5, 255" in warn[0] and "00002.png" in warn[0]
    clean = evaluate_davis(root, tmp_path / "clean", workers=1)
    assert json.loads((tmp_path / "a.json").read_text())["per_object"] == clean["per_object"]
    # against vos-benchmark, with the official reading of the ground truth (void and ids > N are 0)
    official_gt = np.where((gt == 255) | (gt > 3), 0, gt)
    ref_root = make_root(tmp_path / "ref", {"s": official_gt})
    check_against_vos_benchmark(clean, ref_root / "Annotations" / "480p", tmp_path / "clean", ["s"],
                                {"s": 3})


def test_image_set_selects_sequences_and_first_last_frames_are_not_read(tmp_path):
    gt, res = gen_sequence(40, 60, 6, 2, 5)
    root = make_root(tmp_path / "davis", {"in-set": gt})
    write_sequence(root / "Annotations" / "480p" / "not-in-set", gt)      # ignored: not listed
    write_sequence(tmp_path / "res" / "in-set", res, skip={0, 5})         # first / last not needed
    write_sequence(tmp_path / "res" / "extra-folder", res)               # ignored
    with _no_warnings():
        result = evaluate_davis(root, tmp_path / "res")
    assert list(result["per_sequence"]) == ["in-set"]
    assert result["per_frame"]["in-set_1"]["frames"] == ["00001", "00002", "00003", "00004"]


class _no_warnings:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", EvalWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# ------------------------------------------------------------------------------------------------
# bad input: one clear error line, exit code 2, no trace
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    gt, res = gen_sequence(40, 60, 6, 2, 6)
    root = make_root(tmp_path / "davis", {"seq": gt})
    write_sequence(tmp_path / "res" / "seq", res)
    return root, tmp_path / "res"


def expect_error(capsys, argv, *fragments):
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2, (out, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("vos eval: error: "), err
    for frag in fragments:
        assert frag in line, (frag, line)
    assert "Traceback" not in err
    return line


def test_error_missing_roots(small, tmp_path, capsys):
    root, res = small
    expect_error(capsys, ["--davis-root", tmp_path / "nope", "--results", res], "DAVIS root not found")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, ["--davis-root", tmp_path / "empty", "--results", res], "Annotations/480p")
    expect_error(capsys, ["--davis-root", root, "--results", tmp_path / "nores"],
                 "results folder not found")


def test_error_missing_sequence_folder(small, capsys):
    root, res = small
    shutil.rmtree(res / "seq")
    expect_error(capsys, ["--davis-root", root, "--results", res], "no folder for sequence", "seq")


def test_error_missing_frames(small, capsys):
    root, res = small
    (res / "seq" / "00002.png").unlink()
    (res / "seq" / "00003.png").unlink()
    expect_error(capsys, ["--davis-root", root, "--results", res],
                 "sequence seq", "00002.png", "00003.png", "missing")


def test_error_wrong_size(tmp_path, capsys):
    gt, r = gen_sequence(40, 60, 20, 2, 10)   # 18 scored frames: 2 tasks with 2 workers
    root = make_root(tmp_path / "davis", {"seq": gt})
    res = tmp_path / "res"
    write_sequence(res / "seq", r)
    write_label(res / "seq" / "00015.png", np.zeros((40, 61), np.uint8))
    for workers in ("1", "2"):   # in this process, and raised in a worker process
        expect_error(capsys, ["--davis-root", root, "--results", res, "--workers", workers],
                     "sequence seq", "00015.png", "61x40", "60x40")
    # of several bad frames, the first in frame order is reported, whatever the workers
    write_label(res / "seq" / "00017.png", np.zeros((41, 60), np.uint8))
    write_label(res / "seq" / "00004.png", np.zeros((40, 59), np.uint8))
    for workers in ("1", "2"):
        expect_error(capsys, ["--davis-root", root, "--results", res, "--workers", workers],
                     "00004.png", "59x40")


def test_error_rgb_result(small, capsys):
    root, res = small
    Image.new("RGB", (60, 40), (128, 0, 0)).save(res / "seq" / "00004.png")
    expect_error(capsys, ["--davis-root", root, "--results", res], "sequence seq", "00004.png", "RGB")
    Image.new("RGBA", (60, 40)).save(res / "seq" / "00004.png")
    expect_error(capsys, ["--davis-root", root, "--results", res], "00004.png", "RGBA")


def test_error_corrupt_png(small, capsys):
    root, res = small
    (res / "seq" / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    expect_error(capsys, ["--davis-root", root, "--results", res], "sequence seq", "00001.png",
                 "cannot read")


def test_error_sequences_and_workers(small, capsys):
    root, res = small
    expect_error(capsys, ["--davis-root", root, "--results", res, "--sequences", "seq", "bogus"],
                 "bogus", "ImageSets/2017/val.txt")
    expect_error(capsys, ["--davis-root", root, "--results", res, "--workers", "0"], "--workers")


def test_error_bad_ground_truth(tmp_path, capsys):
    gt = np.zeros((5, 20, 30), np.uint8)
    gt[:, 5:10, 5:10] = 255     # DAVIS 2016-style 0/255 masks
    root = make_root(tmp_path / "d16", {"s": gt})
    write_sequence(tmp_path / "res" / "s", (gt > 0).astype(np.uint8))
    expect_error(capsys, ["--davis-root", root, "--results", tmp_path / "res"],
                 "sequence s", "255", "void")
    root2 = make_root(tmp_path / "short", {"s": np.ones((2, 20, 30), np.uint8)})
    expect_error(capsys, ["--davis-root", root2, "--results", tmp_path / "res"],
                 "sequence s", "2 annotated frame")
    root3 = make_root(tmp_path / "rgb", {"s": np.ones((3, 20, 30), np.uint8)})
    Image.new("RGB", (30, 20)).save(root3 / "Annotations" / "480p" / "s" / "00000.png")
    expect_error(capsys, ["--davis-root", root3, "--results", tmp_path / "res"], "ground truth", "RGB")


def test_library_raises_eval_error(small, tmp_path):
    root, res = small
    with pytest.raises(EvalError, match="results folder not found"):
        evaluate_davis(root, tmp_path / "missing")
    with pytest.raises(EvalError, match="workers"):
        evaluate_davis(root, res, workers=-1)


def test_unwritable_json(small, tmp_path, capsys):
    root, res = small
    blocker = tmp_path / "file"
    blocker.write_text("x")
    expect_error(capsys, ["--davis-root", root, "--results", res, "--json", blocker / "out.json"],
                 "cannot create")
    assert os.path.isfile(blocker)


def test_year_selects_image_set(tmp_path):
    gt, res = gen_sequence(40, 60, 5, 2, 8)
    root = make_root(tmp_path / "davis", {"a": gt, "b": gt})   # ImageSets/2017/val.txt: a, b
    (root / "ImageSets" / "2016").mkdir()
    (root / "ImageSets" / "2016" / "val.txt").write_text("b\n")
    for name in ("a", "b"):
        write_sequence(tmp_path / "res" / name, res)
    assert list(evaluate_davis(root, tmp_path / "res", year="2016")["per_sequence"]) == ["b"]
    assert list(evaluate_davis(root, tmp_path / "res", year="2017")["per_sequence"]) == ["a", "b"]
    with pytest.warns(EvalWarning, match="train.txt not found"):
        assert list(evaluate_davis(root, tmp_path / "res", subset="train")["per_sequence"]) == ["a", "b"]


def test_threads_in_parent_use_forkserver(tmp_path):
    # with another thread alive the pool must not fork this process; numbers are unchanged
    import threading

    from vos.evaluation.common import split_chunks
    from vos.evaluation.davis2017 import _plan

    gt, r = gen_sequence(40, 60, 20, 2, 9)
    root = make_root(tmp_path / "davis", {"s": gt})
    res = tmp_path / "res"
    write_sequence(res / "s", r)
    assert len(split_chunks(_plan(root, res, ["s"], "val"), 2)) == 2   # really runs a pool
    ref = evaluate_davis(root, res, workers=1)
    stop = threading.Event()
    th = threading.Thread(target=stop.wait, daemon=True)
    th.start()
    try:
        from vos.evaluation.common import mp_context
        assert mp_context().get_start_method() == "forkserver"
        assert evaluate_davis(root, res, workers=2) == ref
    finally:
        stop.set()
        th.join()
