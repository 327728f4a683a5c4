"""``vos batch`` jobs without Ray: prompt kinds in manifests, the resume check, the result record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vos.batch.log import BatchLog, output_complete, read_batch_manifest
from vos.errors import UserError
from vos.datasets.job import Job
from vos.datasets.manifest import read_job_manifest
from vos.batch.worker import RUN_KEYS, VideoRecord, VideoWorker, failed_record


def _jsonl(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_prompt_kinds(tmp_path):
    jobs = read_job_manifest(_jsonl(
        tmp_path / "jobs.jsonl",
        {"video": "a.mp4", "masks": {"0": "m/a0.png", "12": "/abs/a12.png"}},
        {"video": "b.mp4", "first_mask": "b0.png", "masks": {"5": "b5.png"}},
        {"video": "c.mp4", "text": ["a red car", " the dog "]},
        {"video": "d.mp4", "classes": "car, person"},
        {"video": "e.mp4", "classes": ["car"], "name": "e2"}))
    a, b, c, d, e = jobs
    assert a.first_mask is None and a.masks == {0: str(tmp_path / "m" / "a0.png"), 12: "/abs/a12.png"}
    assert b.first_mask == str(tmp_path / "b0.png") and b.masks == {5: str(tmp_path / "b5.png")}
    assert c.text == ("a red car", "the dog") and c.masks is None and c.first_mask is None
    assert d.classes == ("car", "person") and (e.name, e.classes) == ("e2", ("car",))
    assert b.prompt() == {"first_mask": str(tmp_path / "b0.png"), "masks": {"5": str(tmp_path / "b5.png")}}
    assert c.prompt() == {"text": ["a red car", "the dog"]}
    # CSV: classes as one "a,b" string; a blank first_mask cell with classes is fine
    (tmp_path / "jobs.csv").write_text("video,first_mask,classes\nx.mp4,,cat,dog\ny.mp4,y.png,\n")
    x, y = read_job_manifest(tmp_path / "jobs.csv")
    assert x.classes == ("cat",) and x.first_mask is None     # extra cells past the header: ignored
    assert y.first_mask == str(tmp_path / "y.png") and y.classes is None
    (tmp_path / "c2.csv").write_text('video,classes\nx.mp4,"cat,dog"\n')
    assert read_job_manifest(tmp_path / "c2.csv")[0].classes == ("cat", "dog")


@pytest.mark.parametrize("row, needle", [
    ({"video": "a.mp4"}, "missing 'first_mask' (or another prompt"),
    ({"video": "a.mp4", "first_mask": "m.png", "text": ["car"]}, "give one prompt kind, got first_mask, text"),
    ({"video": "a.mp4", "text": ["car"], "classes": ["car"]}, "give one prompt kind"),
    ({"video": "a.mp4", "first_mask": "m.png", "masks": {"0": "n.png"}}, "both give frame 0"),
    ({"video": "a.mp4", "masks": {"x": "n.png"}}, "'masks' key 'x' is not a frame index"),
    ({"video": "a.mp4", "masks": {"1": "n.png", "01": "o.png"}}, "gives frame 1 twice"),
    ({"video": "a.mp4", "masks": ["n.png"]}, "'masks' must be a non-empty object"),
    ({"video": "a.mp4", "masks": {}}, "'masks' must be a non-empty object"),
    ({"video": "a.mp4", "masks": {"3": 7}}, "'masks[3]' must be a path string"),
    ({"video": "a.mp4", "text": "a car"}, "'text' must be a list of strings"),
    ({"video": "a.mp4", "text": ["car", ""]}, "'text' must hold non-empty strings"),
    ({"video": "a.mp4", "classes": [1]}, "'classes' must be a list of strings or an \"a,b\" string"),
    ({"video": "a.mp4", "classes": "car,,dog"}, "must hold non-empty strings"),
])
def test_bad_prompts_name_file_and_line(tmp_path, row, needle):
    path = _jsonl(tmp_path / "jobs.jsonl", {"video": "ok.mp4", "first_mask": "ok.png"}, row)
    with pytest.raises(UserError) as info:
        read_job_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: ") and needle in message and "\n" not in message, message


def test_csv_needs_a_prompt_column(tmp_path):
    (tmp_path / "j.csv").write_text("video,text\na.mp4,car\n")
    with pytest.raises(UserError, match=r"j.csv: CSV header .* missing first_mask"):
        read_job_manifest(tmp_path / "j.csv")
    (tmp_path / "k.csv").write_text("video,classes\na.mp4,\n")
    with pytest.raises(UserError, match=r"k.csv:2: missing 'first_mask'"):
        read_job_manifest(tmp_path / "k.csv")


def _finished(out: Path, job: Job, frames: int = 2) -> dict:
    folder = out / job.name
    folder.mkdir(parents=True)
    for i in range(frames):
        (folder / f"{i:05d}.png").write_bytes(b"png")
    settings = {"checkpoint": "ck", "context": 2, "per_object": False}
    (folder / "manifest.json").write_text(json.dumps({
        "video": job.video, "frames": frames, "settings": settings,
        "frame_list": [{"index": i, "file": f"{i:05d}.png"} for i in range(frames)]}))
    return {"name": job.name, "status": "ok", "frames": frames, **job.prompt()}


def test_resume_compares_the_prompt(tmp_path):
    settings = {"checkpoint": "ck", "context": 2, "per_object": False}
    job = Job("v", str(tmp_path / "v.mp4"), str(tmp_path / "m.png"), masks={7: str(tmp_path / "m7.png")})
    out = tmp_path / "out"
    entry = _finished(out, job)
    # the entry goes through the log file and back (masks keys become strings in JSON)
    log = BatchLog(out / "batch_manifest.jsonl", [entry])
    log.close()
    entry = read_batch_manifest(out / "batch_manifest.jsonl")["v"]
    assert output_complete(job, entry, out, settings)
    assert not output_complete(job, entry, out, {**settings, "context": 3})
    for changed in (Job("v", job.video, job.first_mask),                                  # masks dropped
                    Job("v", job.video, job.first_mask, masks={8: str(tmp_path / "m7.png")}),
                    Job("v", job.video, str(tmp_path / "other.png"), masks=job.masks),
                    Job("v", job.video, None, text=("car",))):
        assert not output_complete(changed, entry, out, settings), changed
    text_job = Job("t", str(tmp_path / "t.mp4"), None, text=("a car",))
    entry = _finished(out, text_job)
    assert output_complete(text_job, entry, out, settings)
    assert not output_complete(Job("t", text_job.video, None, text=("a dog",)), entry, out, settings)
    assert not output_complete(Job("t", text_job.video, None, classes=("a car",)), entry, out, settings)
    # an entry of the previous format (first_mask only) still matches its job
    old = Job("o", str(tmp_path / "o.mp4"), str(tmp_path / "o.png"))
    entry = _finished(out, old)
    assert entry.keys() == {"name", "status", "frames", "first_mask"}
    assert output_complete(old, entry, out, settings)
    # a missing file of the frame list: not complete
    (out / "o" / "00001.png").unlink()
    assert not output_complete(old, entry, out, settings)
    # dataset-layout prompts (stems, object filter, frames to write) are compared too
    yt = Job("y", str(tmp_path / "y"), None, stem_masks={"00005": "a.png"}, mask_objects={"00005": (2,)},
             write_stems=("00005", "00010"), backward=False)
    entry = _finished(out, yt)
    log = BatchLog(out / "batch_manifest.jsonl", [entry])
    log.close()
    entry = read_batch_manifest(out / "batch_manifest.jsonl")["y"]
    assert output_complete(yt, entry, out, settings)
    for changed in (Job("y", yt.video, None, stem_masks=yt.stem_masks, mask_objects={"00005": (3,)},
                        write_stems=yt.write_stems, backward=False),
                    Job("y", yt.video, None, stem_masks=yt.stem_masks, mask_objects=yt.mask_objects,
                        write_stems=("00005",), backward=False),
                    Job("y", yt.video, None, stem_masks=yt.stem_masks, mask_objects=yt.mask_objects,
                        write_stems=yt.write_stems)):
        assert not output_complete(changed, entry, out, settings), changed


def test_failed_record_is_one_schema(tmp_path):
    job = {"name": "a", "video": "/v.mp4", "first_mask": None, "masks": {3: "/m3.png"}, "output": "/o"}
    rec = failed_record(job, "worker lost 1 time(s)", "WorkerLost")
    assert rec["masks"] == {"3": "/m3.png"} and rec["first_mask"] is None
    assert rec["status"] == "failed" and rec["error_type"] == "WorkerLost" and rec["user_error"] is False
    assert "text" not in rec and "manifest" not in rec            # unset optional prompt fields
    base = set(VideoRecord(name="x", video="y").to_dict())
    assert base == {"name", "video", "first_mask", "output", "status", "frames", "model_fps",
                    "end_to_end_fps", "wall_s", "task_s", "attempts", "error", "error_type",
                    "user_error", "warnings", "pid", "hostname", "node_id", "finished_at"}
    assert set(rec) == base | {"masks"}


def test_worker_passes_only_set_run_options(tmp_path, monkeypatch):
    """``run_video`` gets each run option of the job as a keyword, and only those that are set."""
    import vos.batch.worker
    from vos.engine.video import RunResult

    calls = []

    def fake_run_video(video, **kwargs):
        calls.append((video, kwargs))
        return RunResult(output_dir=tmp_path / kwargs["name"], frames=3, model_fps=1.0,
                         end_to_end_fps=1.0, manifest={"frames": 3})

    monkeypatch.setattr(vos.batch.worker, "run_video", fake_run_video)
    stage = object()
    worker = VideoWorker("ck", "cpu", stage=stage)
    rec = worker.process({"name": "a", "video": "/v.mp4", "text": ["a car"], "output": str(tmp_path),
                          "first_mask": None, "context": 2, "overlay": None})
    assert rec["status"] == "ok" and rec["text"] == ["a car"] and rec["frames"] == 3
    video, kwargs = calls[-1]
    prompt, proposer = kwargs.pop("prompt"), kwargs.pop("proposer")
    assert video == "/v.mp4" and kwargs == {"output": str(tmp_path), "name": "a", "checkpoint": "ck",
                                            "quiet": True, "stage": stage, "context": 2}
    assert prompt.texts == ("a car",) and prompt.kind == "text" and prompt.threshold is None
    assert proposer is worker._proposer()                 # loaded once per worker
    worker.process({"name": "b", "video": "/v.mp4", "output": str(tmp_path), "first_mask": "/m.png",
                    "masks": {4: "/m4.png"}, "per_object": False})
    assert {k: v for k, v in calls[-1][1].items() if k in RUN_KEYS} == {
        "first_mask": "/m.png", "masks": {4: "/m4.png"}, "per_object": False}
    rec = worker.process({"name": "c", "video": "/v.mp4", "output": str(tmp_path)})
    assert rec["status"] == "failed" and "first_mask|masks|text|classes" in rec["error"]
    assert len(calls) == 2
