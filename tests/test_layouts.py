"""Dataset layouts (issue 19): readers, detection, the engine's per-layout runs and submissions.

Every tree is built in ``tmp_path`` from the real car-shadow frames (``tests/_layouts.py``). Each
layout's job, run by the batch worker (``vos.worker.VideoWorker.process``, what a Ray actor runs),
is compared file for file with ``vos run`` (``run_video`` with ``--first-mask`` / ``--mask K:FILE``
only) on the same frames and masks. A tiny random SegGPT (query size 448x224) keeps runs cheap.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import _layouts as L
from vos.batch.runner import BatchOptions, _job_dict
from vos.batch.worker import VideoWorker
from vos.cli import main as vos_main
from vos.datasets.layouts import LAYOUTS, detect_layout, read_layout
from vos.datasets.submission import write_submission
from vos.engine.video import run_video
from vos.errors import UserError
from vos.evaluation.sav import evaluate_sav

CONTEXT = 2


@pytest.fixture(scope="module")
def worker(small_hf_dir):
    return VideoWorker(str(small_hf_dir), "cpu", num_threads=1)


def _vos_run(worker, video: Path, out: Path, name: str, first_mask=None, masks=None) -> Path:
    """``vos run VIDEO [--first-mask F] [--mask K:FILE ...]`` on the worker's loaded model."""
    return run_video(video, first_mask, masks=masks, output=out, name=name, stage=worker.stage,
                     context=CONTEXT, quiet=True).output_dir


def _run_job(worker, job, out: Path) -> dict:
    record = worker.process(_job_dict(job, out, BatchOptions(context=CONTEXT)))
    return record


def _pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _ids(path: Path) -> set[int]:
    return set(np.unique(np.asarray(Image.open(path))).tolist())


# ----------------------------------------------------------------------------------------------
# detection and readers (folder listings and meta files only)

def _davis_root(root: Path) -> Path:
    L.write_frames(root / "JPEGImages" / "480p" / "car", ["00000", "00001"], [0, 1])
    L.save_png(root / "Annotations" / "480p" / "car" / "00000.png", L.labels(0, left=1))
    return root


def test_detection_by_what_the_root_holds(tmp_path, shared_data):
    yt = L.youtube_vos_tree(tmp_path / "yt")["split"]
    roots = {"davis": _davis_root(tmp_path / "davis"), "youtube-vos": yt,
             "mose": L.mose_tree(tmp_path / "mose"), "sa-v": L.sav_tree(tmp_path / "sav")["root"],
             "lvos": L.lvos_tree(tmp_path / "lvos")["root"]}
    assert sorted(roots) == sorted(LAYOUTS)
    for name, root in roots.items():
        assert detect_layout(root) == name
        jobs, layout = read_layout(root)
        assert layout == name and jobs
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        detect_layout(tmp_path / "empty")
    msg = str(e.value)
    assert "\n" not in msg and "no dataset layout" in msg
    for marker in ("Annotations/480p", "meta.json", "_meta.json", "JPEGImages_24fps", "Annotations_6fps"):
        assert marker in msg
    # ambiguous: a YouTube-VOS split that also holds SA-V folders; --layout settles it
    (yt / "JPEGImages_24fps").mkdir()
    (yt / "Annotations_6fps").mkdir()
    with pytest.raises(UserError, match="ambiguous.*sa-v and youtube-vos|ambiguous.*youtube-vos"):
        detect_layout(yt)
    assert read_layout(yt, "youtube-vos")[1] == "youtube-vos"
    with pytest.raises(UserError, match="unknown layout"):
        read_layout(yt, "kitti")
    with pytest.raises(UserError, match="--all-frames applies"):
        read_layout(roots["mose"], all_frames=tmp_path)


def test_youtube_vos_reader(tmp_path, shared_data):
    t = L.youtube_vos_tree(tmp_path)
    split = t["split"].resolve()
    jobs, _ = read_layout(t["split"])
    late, nofirst = jobs
    assert (late.name, nofirst.name) == ("late", "nofirst")
    assert late.video == str(split / "JPEGImages" / "late")
    assert late.stem_masks == {"00000": str(split / "Annotations" / "late" / "00000.png"),
                               "00004": str(split / "Annotations" / "late" / "00004.png")}
    assert late.mask_objects == {"00000": (2,), "00004": (5,)}
    assert late.write_stems == tuple(t["sparse"]) and late.backward is False
    assert nofirst.stem_masks == {"00002": str(split / "Annotations" / "nofirst" / "00002.png")}
    assert nofirst.write_stems == tuple(t["sparse"][1:])
    dense, _ = read_layout(t["split"], all_frames=t["all"])
    assert dense[0].video == str(t["all"].resolve() / "late") and dense[0].write_stems == late.write_stems


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ('{"vids": {}}', "no 'videos' object"),
    ('{"videos": {"v": {"objects": {"1": {"frames": []}}}}}', "non-empty 'frames'"),
    ('{"videos": {"v": {"objects": {"0": {"frames": ["00000"]}}}}}', "not an integer in 1..254"),
    ('{"videos": {"v": {}}}', "no 'objects'"),
])
def test_bad_meta_json_is_one_line(tmp_path, shared_data, text, needle):
    t = L.youtube_vos_tree(tmp_path)
    (t["split"] / "meta.json").write_text(text)
    with pytest.raises(UserError) as e:
        read_layout(t["split"])
    assert needle in str(e.value) and "meta.json" in str(e.value) and "\n" not in str(e.value)


def test_lvos_sav_mose_readers(tmp_path, shared_data):
    lv = L.lvos_tree(tmp_path / "lvos")
    (job,), _ = read_layout(lv["root"])
    ann = lv["root"].resolve() / "Annotations" / "lv1"
    assert job.stem_masks == {"00000001": str(ann / "00000001.png"), "00000003": str(ann / "00000003.png")}
    assert job.mask_objects == {"00000001": (1,), "00000003": (4,)}
    assert job.write_stems is None and job.backward is False
    sv = L.sav_tree(tmp_path / "sav")
    (job,), _ = read_layout(sv["root"])
    objs = sv["root"].resolve() / "Annotations_6fps" / sv["vid"]
    assert job.object_masks == {0: str(objs / "000" / "00000.png"), 1: str(objs / "001" / "00000.png")}
    assert job.write_stems == tuple(sv["annotated"]) and job.where.endswith("sav_val.txt:1")
    (job,), _ = read_layout(L.mose_tree(tmp_path / "mose"))
    assert job.stem_masks == {"00000": str((tmp_path / "mose").resolve() / "Annotations" / "car" / "00000.png")}
    assert job.backward is True and job.write_stems is None and job.mask_objects is None


def test_readers_open_no_image(tmp_path, shared_data, monkeypatch):
    """Discovery reads meta files and listings only: with image opening broken, every reader works."""
    roots = [L.youtube_vos_tree(tmp_path / "yt")["split"], L.mose_tree(tmp_path / "mose"),
             L.sav_tree(tmp_path / "sav")["root"], L.lvos_tree(tmp_path / "lvos")["root"]]

    def no_open(*a, **k):
        raise AssertionError("an image was opened during discovery")

    monkeypatch.setattr(Image, "open", no_open)
    for root in roots:
        assert read_layout(root)[0]


def test_batch_cli_errors_before_ray_starts(tmp_path, shared_data, capsys):
    """Unknown root, a manifest with --layout or --submission: one line, exit 2, nothing written."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "j.jsonl").write_text('{"video": "a.mp4", "first_mask": "m.png"}\n')
    t = L.youtube_vos_tree(tmp_path / "yt")
    (t["split"] / "meta.json").write_text("[1, 2")
    cases = [([str(tmp_path / "empty")], "no dataset layout recognised"),
             ([str(tmp_path / "j.jsonl"), "--layout", "mose"], "need a dataset root"),
             ([str(tmp_path / "j.jsonl"), "--submission", str(tmp_path / "s.zip")], "needs a dataset root"),
             ([str(t["split"])], "meta.json: not valid JSON")]
    for argv, needle in cases:
        assert vos_main(["batch", *argv, "--output", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.zip").exists()


# ----------------------------------------------------------------------------------------------
# the engine, per layout, against vos run

def test_youtube_vos_late_objects_equal_vos_run(worker, tmp_path, shared_data):
    t = L.youtube_vos_tree(tmp_path / "data")
    jobs, _ = read_layout(t["split"])
    out = tmp_path / "out"
    for job in jobs:
        rec = _run_job(worker, job, out)
        assert rec["status"] == "ok", rec["error"]
    ann = t["split"] / "Annotations"
    # late: vos run with --mask 0:00000.png --mask 2:00004.png (00004 is the 3rd sparse frame)
    ref = _vos_run(worker, t["split"] / "JPEGImages" / "late", tmp_path / "ref", "late",
                   masks={0: ann / "late" / "00000.png", 2: ann / "late" / "00004.png"})
    got = _pngs(out / "late")
    assert sorted(got) == [f"{s}.png" for s in t["sparse"]]
    assert got == _pngs(ref)
    assert 5 in _ids(out / "late" / "00004.png") and _ids(out / "late" / "00000.png") == {0, 2}
    # nofirst: no annotation on the first frame; nothing written before it, the rest as vos run
    ref = _vos_run(worker, t["split"] / "JPEGImages" / "nofirst", tmp_path / "ref", "nofirst",
                   masks={1: ann / "nofirst" / "00002.png"})
    got, want = _pngs(out / "nofirst"), _pngs(ref)
    assert sorted(got) == [f"{s}.png" for s in t["sparse"][1:]] and "00000.png" in want
    assert got == {k: v for k, v in want.items() if k in got}
    manifest = json.loads((out / "late" / "manifest.json").read_text())
    assert [r["file"] for r in manifest["frame_list"]] == [f"{s}.png" for s in t["sparse"]]


def test_youtube_vos_all_frames_writes_the_sparse_ones(worker, tmp_path, shared_data):
    t = L.youtube_vos_tree(tmp_path / "data")
    (job, _), _ = read_layout(t["split"], all_frames=t["all"])
    out = tmp_path / "out"
    rec = _run_job(worker, job, out)
    assert rec["status"] == "ok", rec["error"]
    ann = t["split"] / "Annotations" / "late"
    ref = _vos_run(worker, t["all"] / "late", tmp_path / "ref", "late",
                   masks={0: ann / "00000.png", 4: ann / "00004.png"})
    want = _pngs(ref)
    assert len(want) == len(t["dense"])
    got = _pngs(out / "late")
    assert sorted(got) == [f"{s}.png" for s in t["sparse"]]
    assert got == {k: want[k] for k in got}
    # the dense run differs from the sparse one (propagation saw the frames in between)
    sparse = _vos_run(worker, t["split"] / "JPEGImages" / "late", tmp_path / "ref2", "late",
                      masks={0: ann / "00000.png", 2: ann / "00004.png"})
    assert _pngs(sparse) != got


def test_lvos_takes_only_first_appearances(worker, tmp_path, shared_data):
    lv = L.lvos_tree(tmp_path / "data")
    (job,), _ = read_layout(lv["root"])
    out = tmp_path / "out"
    rec = _run_job(worker, job, out)
    assert rec["status"] == "ok", rec["error"]
    # vos run with first-appearance masks cut out of the dense ground truth by hand
    cut0 = L.save_png(tmp_path / "cut" / "a.png", L.labels(0, left=1))
    cut2 = L.save_png(tmp_path / "cut" / "b.png", L.labels(2, right=4))
    ref = _vos_run(worker, lv["root"] / "JPEGImages" / "lv1", tmp_path / "ref", "lv1",
                   masks={0: cut0, 2: cut2})
    got = _pngs(out / "lv1")
    assert sorted(got) == [f"{s}.png" for s in lv["stems"]] and got == _pngs(ref)


def test_sav_objects_tracked_on_their_own(worker, tmp_path, shared_data):
    sv = L.sav_tree(tmp_path / "data")
    (job,), _ = read_layout(sv["root"])
    out = tmp_path / "out"
    rec = _run_job(worker, job, out)
    assert rec["status"] == "ok", rec["error"]
    video = sv["root"] / "JPEGImages_24fps" / sv["vid"]
    got = _pngs(out / sv["vid"])
    assert sorted(got) == [f"{o}/{s}.png" for o in ("000", "001") for s in sv["annotated"]]
    for obj in ("000", "001"):
        ref = _vos_run(worker, video, tmp_path / "ref", obj,
                       first_mask=sv["root"] / "Annotations_6fps" / sv["vid"] / obj / "00000.png")
        want = _pngs(ref)
        assert len(want) == len(sv["stems"])
        for s in sv["annotated"]:
            assert got[f"{obj}/{s}.png"] == want[f"{s}.png"]
            assert _ids(out / sv["vid"] / obj / f"{s}.png") <= {0, 1}
    # the objects overlap in the prompts: the right half is object 1 in both folders
    first = [np.asarray(Image.open(out / sv["vid"] / o / "00000.png")) for o in ("000", "001")]
    assert ((first[0] == 1) & (first[1] == 1)).any()
    manifest = json.loads((out / sv["vid"] / "manifest.json").read_text())
    assert manifest["frames"] == len(got) and manifest["objects"] == [0, 1]
    # the results folder is what the SA-V protocol reads (its manifests are not frames)
    gt = sv["root"] / "Annotations_6fps"
    scores = evaluate_sav(gt, out, workers=1)
    assert sorted(scores["per_object"]) == [f"{sv['vid']}_000", f"{sv['vid']}_001"]
    assert evaluate_sav(gt, gt, workers=1)["global"]["J&F-Mean"] == 1.0


def test_mose_equals_vos_run_first_mask(worker, tmp_path, shared_data):
    root = L.mose_tree(tmp_path / "data")
    (job,), _ = read_layout(root)
    out = tmp_path / "out"
    assert _run_job(worker, job, out)["status"] == "ok"
    ref = _vos_run(worker, root / "JPEGImages" / "car", tmp_path / "ref", "car",
                   first_mask=root / "Annotations" / "car" / "00000.png")
    assert _pngs(out / "car") == _pngs(ref) and len(_pngs(ref)) == 4


def test_vos_run_names_results_by_frame_stem(worker, tmp_path, shared_data):
    """Any frame folder: ``STEM.png`` per input frame (DAVIS ``00000.jpg`` keeps ``00000.png``)."""
    folder = tmp_path / "frames"
    L.write_frames(folder, ["f_2", "f_10", "f_33"], [0, 1, 2])
    mask = L.save_png(tmp_path / "m.png", L.labels(0, left=1))
    out = _vos_run(worker, folder, tmp_path / "out", "x", first_mask=mask)
    assert sorted(p.name for p in out.glob("*.png")) == ["f_10.png", "f_2.png", "f_33.png"]
    frames = json.loads((out / "manifest.json").read_text())["frame_list"]
    assert [r["file"] for r in frames] == ["f_2.png", "f_10.png", "f_33.png"]


# ----------------------------------------------------------------------------------------------
# bad input: one line naming the file, the video fails alone, nothing written

def _fails(worker, job, out: Path, *needles: str) -> None:
    rec = _run_job(worker, job, out)
    assert rec["status"] == "failed" and rec["user_error"], rec
    assert "\n" not in rec["error"] and all(n in rec["error"] for n in needles), rec["error"]
    assert not (out / job.name).exists() and not list(out.glob(f".{job.name}*"))


def test_bad_videos_fail_alone(worker, tmp_path, shared_data):
    t = L.youtube_vos_tree(tmp_path / "yt")
    meta = json.loads((t["split"] / "meta.json").read_text())
    meta["videos"]["late"]["objects"]["5"]["frames"].append("00008")     # no such frame
    meta["videos"]["nofirst"]["objects"]["3"] = {"frames": ["00002"]}    # no pixel of 3 there
    (t["split"] / "meta.json").write_text(json.dumps(meta))
    late, nofirst = read_layout(t["split"])[0]
    out = tmp_path / "out"
    _fails(worker, late, out, "late", "no frame 00008")
    _fails(worker, nofirst, out, "00002.png", "object 3")
    # a mask whose size differs from its frames
    L.save_png(t["split"] / "Annotations" / "nofirst" / "00002.png", np.ones((20, 20), np.uint8))
    del meta["videos"]["nofirst"]["objects"]["3"]
    (t["split"] / "meta.json").write_text(json.dumps(meta))
    _fails(worker, read_layout(t["split"])[0][1], out, "00002.png", "mask is 20x20")
    # SA-V: a non-binary object mask, and an object with no first-frame mask
    sv = L.sav_tree(tmp_path / "sav")
    objs = sv["root"] / "Annotations_6fps" / sv["vid"]
    L.save_png(objs / "001" / "00000.png", L.labels(0, left=1, right=2))
    (job,), _ = read_layout(sv["root"])
    _fails(worker, job, out, "001/00000.png", "not a binary mask")
    (objs / "001" / "00000.png").unlink()
    (job,), _ = read_layout(sv["root"])
    _fails(worker, job, out, "00000.png", "no mask on the first annotated frame")


# ----------------------------------------------------------------------------------------------
# submissions

def test_submission_zips(tmp_path):
    out = tmp_path / "out"
    for name in ("a", "b"):
        (out / name).mkdir(parents=True)
        (out / name / "manifest.json").write_text("{}")
        for s in ("00000", "00005"):
            (out / name / f"{s}.png").write_bytes(f"{name}{s}".encode())
    (out / "b" / "001").mkdir()
    (out / "b" / "001" / "00000.png").write_bytes(b"obj")
    z = write_submission(out, ["a", "b"], "youtube-vos", tmp_path / "sub" / "yt.zip")
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert names == ["Annotations/a/00000.png", "Annotations/a/00005.png", "Annotations/b/00000.png",
                         "Annotations/b/00005.png", "Annotations/b/001/00000.png"]
        assert zf.read("Annotations/b/00005.png") == b"b00005"
    with zipfile.ZipFile(write_submission(out, ["a"], "mose", tmp_path / "m.zip")) as zf:
        assert zf.namelist() == ["a/00000.png", "a/00005.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zip", "out", "sub"]   # no temp left
    with pytest.raises(UserError, match="1 of 2 videos have no finished result"):
        write_submission(out, ["a", "missing"], "lvos", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


# ----------------------------------------------------------------------------------------------
# end to end on Ray: vos batch over a split, the submission zip

@pytest.mark.slow
@pytest.mark.ray
def test_batch_over_splits_equals_vos_run(worker, tmp_path, shared_data, small_hf_dir, capsys):
    """``vos batch`` (a local Ray cluster, one CPU actor) on a YouTube-VOS split with
    ``--all-frames`` and on an SA-V split: every output equals ``vos run``'s, the YouTube-VOS
    submission zip holds ``Annotations/VID/STEM.png`` of the sparse frames, ``--resume`` skips all."""
    import logging
    import os

    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    t = L.youtube_vos_tree(tmp_path / "yt")
    sv = L.sav_tree(tmp_path / "sav")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=100 * 1024 * 1024)
    try:
        out, zip_path = tmp_path / "out", tmp_path / "yt.zip"
        common = ["--checkpoint", str(small_hf_dir), "--context", str(CONTEXT), "--num-actors", "1",
                  "--device", "cpu"]
        assert vos_main(["batch", str(t["split"]), "--all-frames", str(t["all"]), "--output", str(out),
                         "--submission", str(zip_path), *common]) == 0
        assert vos_main(["batch", str(sv["root"]), "--layout", "sa-v", "--output", str(tmp_path / "sv"),
                         *common]) == 0
        assert vos_main(["batch", str(t["split"]), "--all-frames", str(t["all"]), "--output", str(out),
                         "--resume", *common]) == 0
        assert "2 skipped (resume)" in capsys.readouterr().out
    finally:
        ray.shutdown()
    ann = t["split"] / "Annotations"
    refs = {"late": _vos_run(worker, t["all"] / "late", tmp_path / "ref", "late",
                             masks={0: ann / "late" / "00000.png", 4: ann / "late" / "00004.png"}),
            "nofirst": _vos_run(worker, t["all"] / "nofirst", tmp_path / "ref", "nofirst",
                                masks={2: ann / "nofirst" / "00002.png"})}
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        for vid, ref in refs.items():
            got = _pngs(out / vid)
            assert got == {k: v for k, v in _pngs(ref).items() if k in got}
            assert sorted(got) == [f"{s}.png" for s in t["sparse"] if vid == "late" or s != "00000"]
            for k, data in got.items():
                assert zf.read(f"Annotations/{vid}/{k}") == data
    assert len(names) == 7 and all(n.startswith("Annotations/") for n in names)
    video = sv["root"] / "JPEGImages_24fps" / sv["vid"]
    got = _pngs(tmp_path / "sv" / sv["vid"])
    for obj in ("000", "001"):
        want = _pngs(_vos_run(worker, video, tmp_path / "ref", obj,
                              first_mask=sv["root"] / "Annotations_6fps" / sv["vid"] / obj / "00000.png"))
        assert {k: v for k, v in got.items() if k.startswith(obj)} == \
            {f"{obj}/{s}.png": want[f"{s}.png"] for s in sv["annotated"]}
