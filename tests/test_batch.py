"""The Ray tests: ``vos batch`` and ``vos run --address`` on a local Ray cluster (CPU, tiny model).

One ``ray.init(num_cpus=2)`` serves the module (``ray_local``); ``vos batch`` run in this process
reuses that connection, a ``vos batch`` subprocess joins it with ``--address``. The multi-node test
runs last on its own two-node ``ray.cluster_utils.Cluster``. Every output is compared byte for byte
with ``vos run``'s (:func:`vos.engine.video.run_video` on the same inputs, one torch thread like an actor).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._media import encode_mp4
from tests.conftest import REPO, SHARED_DATA
from vos.batch.log import BATCH_MANIFEST, read_batch_manifest
from vos.batch.runner import BatchOptions, run_batch
from vos.datasets.discover import discover_jobs
from vos.datasets.manifest import read_job_manifest
from vos.cli import main as vos_main
from vos.labels import davis_palette
from vos.errors import UserError

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a local Ray cluster per module, ~2 minutes on 2 cores

CONTEXT = 1
CAR = SHARED_DATA / "davis_sample"
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


# ----------------------------------------------------------------------------------------------
# data

def _frames(n: int, seed: int, size=(128, 96)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` RGB frames of a textured background with two moving squares, and their label maps."""
    w, h = size
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frames, labels = [], []
    for t in range(n):
        rgb = np.roll(background, t, axis=1).copy()
        lab = np.zeros((h, w), np.uint8)
        x, y = 10 + 4 * t, 20 + t
        rgb[y:y + 24, x:x + 24] = (230, 40, 40)
        lab[y:y + 24, x:x + 24] = 1
        rgb[60:84, 90 - 3 * t:114 - 3 * t] = (40, 40, 230)
        lab[60:84, 90 - 3 * t:114 - 3 * t] = 2
        frames.append(rgb)
        labels.append(lab)
    return frames, labels


def _save_label(path: Path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels, mode="P")
    im.putpalette(davis_palette().tobytes())
    im.save(path)


def _add_sequence(root: Path, name: str, n: int, seed: int) -> None:
    frames, labels = _frames(n, seed)
    (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
    (root / "Annotations" / "480p" / name).mkdir(parents=True)
    for i, (rgb, lab) in enumerate(zip(frames, labels)):
        Image.fromarray(rgb).save(root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg", quality=95)
        _save_label(root / "Annotations" / "480p" / name / f"{i:05d}.png", lab)


def _davis_root(root: Path, seqs: dict[str, tuple[int, int]], car: bool = False) -> Path:
    for name, (n, seed) in seqs.items():
        _add_sequence(root, name, n, seed)
    names = list(seqs)
    if car:
        for kind in ("JPEGImages", "Annotations"):
            (root / kind / "480p" / "car-shadow").symlink_to(CAR / kind / "480p" / "car-shadow")
        names.insert(0, "car-shadow")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    base = tmp_path_factory.mktemp("batch_data")
    davis = _davis_root(base / "davis", {"gen-a": (8, 1), "gen-b": (5, 2)}, car=True)
    small = _davis_root(base / "small", {"s1": (10, 3), "s2": (4, 4), "s3": (4, 5)})
    clips = base / "clips"
    clips.mkdir()
    encode_mp4(davis / "JPEGImages" / "480p" / "gen-a", clips / "clip-a.mp4")
    encode_mp4(davis / "JPEGImages" / "480p" / "gen-b", clips / "clip-b.mp4")
    return {"davis": davis, "small": small, "clips": clips, "base": base}


@pytest.fixture(scope="module")
def reference(data, tiny_hf_dir, tmp_path_factory):
    """``vos run`` outputs of every input, computed on demand (one torch thread, as in an actor)."""
    import torch

    from vos.engine.video import run_video

    out = tmp_path_factory.mktemp("reference")
    done: dict[str, Path] = {}

    def get(name: str, video: Path, mask: Path) -> Path:
        if name not in done:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                done[name] = run_video(video, mask, output=out, name=name, checkpoint=str(tiny_hf_dir),
                                       device="cpu", context=CONTEXT).output_dir
            finally:
                torch.set_num_threads(threads)
        return done[name]

    def davis(root: Path, seq: str) -> Path:
        return get(seq, root / "JPEGImages" / "480p" / seq, root / "Annotations" / "480p" / seq / "00000.png")

    get.davis = davis
    return get


def _assert_same(got: Path, ref: Path) -> None:
    """Same files; PNGs byte-identical; the manifests agree on everything but timings and paths."""
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.glob("*.png"):
        assert (got / p.name).read_bytes() == p.read_bytes(), f"{got.name}/{p.name} differs"
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (got, ref))
    for key in ("frames", "width", "height", "fps", "objects", "frame_list"):
        assert a[key] == b[key], key
    assert {k: v for k, v in a["settings"].items() if k != "checkpoint"} == \
        {k: v for k, v in b["settings"].items() if k != "checkpoint"}


def _manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / BATCH_MANIFEST).read_text().splitlines()]


def _assert_clean(out: Path) -> None:
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


# ----------------------------------------------------------------------------------------------
# Ray

@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


def _batch(*argv) -> int:
    return vos_main(["batch", *map(str, argv)])


# ----------------------------------------------------------------------------------------------
# sources (no Ray)

def test_davis_root_discovery(data, tmp_path):
    jobs, kind = discover_jobs(data["davis"])
    assert kind == "davis" and [j.name for j in jobs] == ["car-shadow", "gen-a", "gen-b"]
    car = jobs[0]
    assert car.video == str(data["davis"].resolve() / "JPEGImages" / "480p" / "car-shadow")
    assert car.first_mask.endswith("Annotations/480p/car-shadow/00000.png")
    # without ImageSets: every annotation folder, sorted
    root = _davis_root(tmp_path / "d", {"b": (1, 0), "a": (1, 0)})
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    assert [j.name for j in discover_jobs(root)[0]] == ["a", "b"]
    with pytest.raises(UserError, match="no dataset layout recognised"):
        discover_jobs(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        discover_jobs(tmp_path / "nope")


def test_job_manifests_and_their_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"video": "v/one.mp4", "first_mask": "m1.png"}\n\n'
                                      '{"video": "/abs/two", "first_mask": "m2.png", "name": "x"}\n')
    jobs = read_job_manifest(tmp_path / "a.jsonl")
    assert [(j.name, j.video) for j in jobs] == [("one", str(tmp_path / "v" / "one.mp4")), ("x", "/abs/two")]
    (tmp_path / "a.csv").write_text("\ufeffname,video,first_mask,extra\n,v/one.mp4,m.png,1\n\n"
                                    "two,v/2.mkv,m.png,\n")
    assert [j.name for j in read_job_manifest(tmp_path / "a.csv")] == ["one", "two"]

    def bad(name: str, text: str, needle: str):
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=needle) as info:
            read_job_manifest(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)

    bad("b1.jsonl", '{"video": "a.mp4", "first_mask": "m.png"}\n{"video": "b.mp4"\n',
        r"b1.jsonl:2: not valid JSON")
    bad("b2.jsonl", '{"video": "a.mp4"}\n', r":1: missing 'first_mask'")
    bad("b3.jsonl", '["a.mp4", "m.png"]\n', "expected a JSON object")
    bad("b4.jsonl", '{"video": 3, "first_mask": "m.png"}\n', "must be a path string")
    bad("b5.jsonl", "\n\n", "lists no video")
    bad("b6.jsonl", '{"video": "d/a.mp4", "first_mask": "m"}\n{"video": "e/a.mkv", "first_mask": "m"}\n',
        r"b6.jsonl:2: output name 'a' is already used by .*b6.jsonl:1")
    bad("b7.jsonl", '{"video": "a.mp4", "first_mask": "m", "name": "../up"}\n', "cannot be an output folder")
    bad("b8.csv", "video,mask\na.mp4,m.png\n", "missing first_mask")
    bad("b9.csv", "video,first_mask\na.mp4,\n", r"b9.csv:2: missing 'first_mask'")
    bad("b10.txt", "a.mp4 m.png\n", "unknown manifest type")


@pytest.mark.parametrize("argv, needle", [
    (["--num-actors", "0"], "--num-actors must be at least 1"),
    (["--max-retries", "-1"], "--max-retries must be at least 0"),
    (["--cpus-per-actor", "-1"], "--cpus-per-actor must not be negative"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--dtype", "int8"], "unknown dtype 'int8'"),
    (["--context", "0"], "--context"),
])
def test_bad_options_fail_before_ray_starts(data, tmp_path, capsys, argv, needle):
    assert _batch(data["davis"], "--output", tmp_path / "out", "--quiet", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_worker_runs_without_ray(data, tiny_hf_dir, reference, tmp_path):
    from vos.batch.worker import VideoWorker

    worker = VideoWorker(str(tiny_hf_dir), "cpu", num_threads=1)
    seq = data["davis"] / "JPEGImages" / "480p" / "gen-b"
    mask = data["davis"] / "Annotations" / "480p" / "gen-b" / "00000.png"
    rec = worker.process({"name": "gen-b", "video": str(seq), "first_mask": str(mask),
                          "output": str(tmp_path), "context": CONTEXT})
    assert rec["status"] == "ok" and rec["frames"] == 5 and rec["error"] is None and rec["model_fps"] > 0
    _assert_same(tmp_path / "gen-b", reference.davis(data["davis"], "gen-b"))
    rec = worker.process({"name": "x", "video": str(seq), "first_mask": str(tmp_path / "nope.png"),
                          "output": str(tmp_path), "context": CONTEXT})
    assert rec["status"] == "failed" and rec["user_error"] and "nope.png" in rec["error"]
    assert not (tmp_path / "x").exists()
    # warnings raised while processing (here a resized mask) come back in the record
    half = np.array(Image.open(mask))[::2, ::2]
    _save_label(tmp_path / "half.png", half)
    rec = worker.process({"name": "half", "video": str(seq), "first_mask": str(tmp_path / "half.png"),
                          "output": str(tmp_path), "context": CONTEXT})
    assert rec["status"] == "ok" and any(w.startswith("MaskWarning: ") for w in rec["warnings"])
    deferred = VideoWorker(str(tmp_path / "missing"), "cpu", defer_init_errors=True)
    assert "missing" in deferred.ready()["error"]
    with pytest.raises(UserError, match="unknown device"):
        VideoWorker(str(tiny_hf_dir), "tpu")


# ----------------------------------------------------------------------------------------------
# batches

def test_davis_batch_equals_vos_run(ray_local, data, tiny_hf_dir, reference, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _batch(data["davis"], "--output", out, "--checkpoint", tiny_hf_dir, "--context", CONTEXT,
                "--num-actors", 2, "--eval")
    assert rc == 0
    captured = capsys.readouterr()
    assert "3 videos: 3 ok, 0 failed, 0 skipped" in captured.out and "J&F-Mean" in captured.out
    assert (out / "eval_results.json").is_file()
    for seq in ("car-shadow", "gen-a", "gen-b"):
        _assert_same(out / seq, reference.davis(data["davis"], seq))
    lines = _manifest_lines(out)
    assert [r["name"] for r in lines] == ["car-shadow", "gen-a", "gen-b"]
    for r in lines:
        assert r["status"] == "ok" and r["attempts"] == 1 and r["error"] is None
        assert r["frames"] == {"car-shadow": 40, "gen-a": 8, "gen-b": 5}[r["name"]]
        assert r["model_fps"] > 0 and r["wall_s"] > 0 and r["task_s"] >= r["wall_s"]
    assert len({r["pid"] for r in lines}) == 2            # both actors worked
    _assert_clean(out)


def test_bad_videos_among_good_ones(ray_local, data, tiny_hf_dir, reference, tmp_path, capsys):
    clips, davis = data["clips"], data["davis"]
    (tmp_path / "notes.mp4").write_text("not a video")
    mask_a = davis / "Annotations" / "480p" / "gen-a" / "00000.png"
    mask_b = davis / "Annotations" / "480p" / "gen-b" / "00000.png"
    rows = [{"video": str(clips / "clip-a.mp4"), "first_mask": str(mask_a)},
            {"video": "notes.mp4", "first_mask": str(mask_a)},
            {"video": str(clips / "clip-b.mp4"), "first_mask": str(mask_b)},
            {"video": str(clips / "clip-b.mp4"), "first_mask": "nope.png", "name": "no-mask"}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    rc = _batch(tmp_path / "jobs.jsonl", "--output", out, "--checkpoint", tiny_hf_dir,
                "--context", CONTEXT, "--num-actors", 2, "--quiet")
    assert rc == 1
    err = capsys.readouterr().err
    assert "failed: notes:" in err and "notes.mp4" in err and "failed: no-mask:" in err
    recs = {r["name"]: r for r in _manifest_lines(out)}
    assert list(recs) == ["clip-a", "notes", "clip-b", "no-mask"]
    assert recs["notes"]["status"] == recs["no-mask"]["status"] == "failed"
    assert recs["notes"]["user_error"] and "notes.mp4" in recs["notes"]["error"]
    assert "nope.png" in recs["no-mask"]["error"] and recs["no-mask"]["attempts"] == 1
    _assert_same(out / "clip-a", reference("clip-a", clips / "clip-a.mp4", mask_a))
    _assert_same(out / "clip-b", reference("clip-b", clips / "clip-b.mp4", mask_b))
    assert sorted(p.name for p in out.iterdir()) == [BATCH_MANIFEST, "clip-a", "clip-b"]
    # a checkpoint the actors cannot load stops the job with one line and exit code 2
    rc = _batch(tmp_path / "jobs.jsonl", "--output", tmp_path / "o2", "--checkpoint",
                tmp_path / "nope.safetensors", "--quiet")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope.safetensors" in err[0], err
    # --eval needs a DAVIS root
    assert _batch(tmp_path / "jobs.jsonl", "--eval", "--quiet") == 2
    assert "--eval needs" in capsys.readouterr().err


def test_actor_killed_mid_video_is_retried(ray_local, data, tiny_hf_dir, reference, tmp_path):
    jobs, _ = discover_jobs(data["davis"])
    jobs = [j for j in jobs if j.name != "car-shadow"]
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_mid_video(job, actor, attempt):
        if job["name"] != "gen-a" or attempt != 1:
            return

        def watch():                              # kill once the first PNG is in the temp folder
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tmp = list(Path(job["output"]).glob(".gen-a.tmp-*"))
                if tmp and list(tmp[0].glob("0*.png")):
                    ray_local.kill(actor)
                    killed.append(len(list(tmp[0].glob("0*.png"))))
                    return
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()

    options = BatchOptions(output=out, checkpoint=str(tiny_hf_dir), context=CONTEXT, num_actors=2)
    result = run_batch(jobs, options, on_submit=kill_mid_video)
    assert killed and killed[0] < 8
    recs = {r["name"]: r for r in result.records}
    assert recs["gen-a"]["status"] == "ok" and recs["gen-a"]["attempts"] == 2
    assert recs["gen-b"]["attempts"] == 1 and not result.failed
    assert [r["name"] for r in _manifest_lines(out)] == ["gen-a", "gen-b"]    # nothing twice
    for seq in ("gen-a", "gen-b"):
        _assert_same(out / seq, reference.davis(data["davis"], seq))
    _assert_clean(out)
    # an actor that dies on every attempt: the video fails after 1 + max_retries attempts
    def kill_always(job, actor, attempt):
        if job["name"] == "gen-b":
            ray_local.kill(actor)

    options = BatchOptions(output=tmp_path / "o2", checkpoint=str(tiny_hf_dir), context=CONTEXT,
                           num_actors=1, max_retries=1)
    result = run_batch(jobs, options, on_submit=kill_always)
    recs = {r["name"]: r for r in result.records}
    assert recs["gen-a"]["status"] == "ok" and recs["gen-b"]["status"] == "failed"
    assert recs["gen-b"]["attempts"] == 2 and "worker lost 2 time(s)" in recs["gen-b"]["error"]


def test_killed_job_resumes(ray_local, data, tiny_hf_dir, reference, tmp_path):
    """A ``vos batch`` subprocess joins the cluster and is SIGKILLed while its second video runs;
    a second run with ``--resume`` (embedded local cluster) finishes the rest. The second video's
    first mask is a FIFO until the kill, so the job is held inside that video however fast the
    first one ran."""
    root = tmp_path / "small"
    shutil.copytree(data["small"], root)
    held = root / "Annotations" / "480p" / "s2" / "00000.png"
    mask_bytes = held.read_bytes()
    held.unlink()
    os.mkfifo(held)                         # opening it for reading blocks: s2 cannot finish
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    common = [sys.executable, "-m", "vos.cli", "batch", str(root), "--output", str(out),
              "--checkpoint", str(tiny_hf_dir), "--context", str(CONTEXT), "--num-actors", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([*common, "--address", address], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not read_batch_manifest(out / BATCH_MANIFEST) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()  # still inside s2
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    first = read_batch_manifest(out / BATCH_MANIFEST)
    assert list(first) == ["s1"] and first["s1"]["status"] == "ok"
    s1_files = {p.name: p.stat().st_mtime_ns for p in (out / "s1").iterdir()}
    held.unlink()
    held.write_bytes(mask_bytes)

    resumed = subprocess.run([*common, "--resume"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = _manifest_lines(out)
    assert [r["name"] for r in lines] == ["s1", "s2", "s3"]                  # nothing twice
    assert lines[0] == first["s1"]                                           # s1 was not redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "s1").iterdir()} == s1_files
    for seq in ("s1", "s2", "s3"):
        _assert_same(out / seq, reference.davis(data["small"], seq))
    _assert_clean(out)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from ``/proc``): the local cluster's GCS, raylet, workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sigterm_stops_batch_and_its_cluster(data, tiny_hf_dir, reference, tmp_path):
    """``vos batch`` (its own local cluster) gets SIGTERM while car-shadow is half written: one line,
    exit 143, no process of its cluster left, no temporary folder, the finished video logged; then
    ``--resume`` completes with outputs identical to ``vos run``'s."""
    root = _davis_root(tmp_path / "davis", {"s3": (4, 5)}, car=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("s3\ncar-shadow\n")
    out = tmp_path / "out"
    common = [sys.executable, "-m", "vos.cli", "batch", str(root), "--output", str(out),
              "--checkpoint", str(tiny_hf_dir), "--context", str(CONTEXT), "--num-actors", "1", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(common, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "car-shadow never started"
            tmp = list(out.glob(".car-shadow.tmp-*")) if out.is_dir() else []
            if tmp and list(tmp[0].glob("0*.png")) and "s3" in read_batch_manifest(out / BATCH_MANIFEST):
                break
            time.sleep(0.02)
        family = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    err = err.decode(errors="replace")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "vos batch: terminated", err
    assert "SIGTERM received" not in err and "Traceback" not in err, err
    assert family, "no cluster processes seen"
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in family if _alive(p)], "processes of the local cluster left"
    _assert_clean(out)
    first = read_batch_manifest(out / BATCH_MANIFEST)
    assert list(first) == ["s3"] and first["s3"]["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == [BATCH_MANIFEST, "s3"]

    resumed = subprocess.run([*common, "--resume"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    lines = _manifest_lines(out)
    assert [r["name"] for r in lines] == ["s3", "car-shadow"] and lines[0] == first["s3"]
    _assert_same(out / "s3", reference.davis(data["small"], "s3"))
    _assert_same(out / "car-shadow", reference.davis(data["davis"], "car-shadow"))
    _assert_clean(out)


def test_run_address_uses_a_cluster_actor(ray_local, data, tiny_hf_dir, reference, tmp_path, capsys):
    clip, mask = data["clips"] / "clip-b.mp4", data["davis"] / "Annotations" / "480p" / "gen-b" / "00000.png"
    address = ray_local.get_runtime_context().gcs_address
    rc = vos_main(["run", str(clip), "--first-mask", str(mask), "--checkpoint", str(tiny_hf_dir),
                   "--output", str(tmp_path), "--context", str(CONTEXT), "--address", address])
    assert rc == 0
    assert capsys.readouterr().out.strip().startswith("5 frames, model ")
    _assert_same(tmp_path / "clip-b", reference("clip-b", clip, mask))
    rc = vos_main(["run", str(clip), "--first-mask", str(tmp_path / "nope.png"), "--checkpoint",
                   str(tiny_hf_dir), "--output", str(tmp_path / "o"), "--address", address, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope.png" in err[0]


def test_two_node_cluster(data, tiny_hf_dir, reference, tmp_path, ray_local):
    """Runs last: replaces the module's cluster with a two-node ``Cluster`` (1 CPU per node)."""
    from ray.cluster_utils import Cluster

    ray_local.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 100 * 1024 * 1024})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        ray_local.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        rc = _batch(data["small"], "--output", out, "--checkpoint", tiny_hf_dir, "--context", CONTEXT,
                    "--num-actors", 2, "--address", cluster.address, "--quiet")
        assert rc == 0
        lines = _manifest_lines(out)
        assert [r["status"] for r in lines] == ["ok"] * 3
        # one actor per node (1 CPU each); s1 is long enough for the second actor to start
        assert len({r["node_id"] for r in lines}) == 2
        for seq in ("s1", "s2", "s3"):
            _assert_same(out / seq, reference.davis(data["small"], seq))
    finally:
        ray_local.shutdown()
        cluster.shutdown()
