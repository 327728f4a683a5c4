"""``vos batch``: many videos on a Ray cluster (:func:`vos.batch.runner.run_batch`), then
optionally ``vos eval`` on a DAVIS root's results and a submission zip
(:func:`vos.datasets.submission.write_submission`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from seggpt_model.files import remove_stale_temps
from vos.batch.cluster import ray_session
from vos.batch.pool import DEFAULT_MAX_RETRIES
from vos.batch.runner import BatchOptions, check_options, run_batch
from vos.commands.options import resolve_options
from vos.datasets.discover import discover_jobs
from vos.datasets.submission import write_submission
from vos.errors import UserError
from vos.evaluation import davis2017

#: ``vos batch`` options a ``--config`` file may set besides those of ``vos run``.
BATCH_DEFAULTS: dict[str, Any] = {"num_actors": None, "gpus_per_actor": None, "cpus_per_actor": None,
                                  "max_retries": DEFAULT_MAX_RETRIES}


def _run_eval(davis_root: str, output: Path, names: list[str], quiet: bool) -> None:
    """``vos eval`` on the finished sequences; the report to stdout, all scores to
    ``OUTPUT/eval_results.json``."""
    if not names:
        print("vos batch: warning: no finished sequence to evaluate", file=sys.stderr)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = davis2017.evaluate_davis(davis_root, output, sequences=names)
        finally:
            for w in caught:
                print(f"vos batch: warning: {w.message}", file=sys.stderr)
    print(davis2017.format_report(result))
    path = output / "eval_results.json"
    davis2017.write_json(result, path)
    if not quiet:
        print(f"\nJ&F scores written to {path}")


def main(args) -> int:
    """``vos batch`` entry point (see :func:`vos.cli.build_parser`).

    Returns:
        0 when every video finished, 1 when any failed (see ``batch_manifest.jsonl``).
    """
    opts = resolve_options(args, BATCH_DEFAULTS)
    jobs, kind = discover_jobs(args.source, getattr(args, "layout", None), getattr(args, "all_frames", None))
    if getattr(args, "eval", False) and kind != "davis":
        raise UserError("--eval needs SOURCE to be a DAVIS root (ground truth in Annotations/480p); "
                        "score other layouts with vos eval --protocol sav")
    submission = getattr(args, "submission", None)
    if submission is not None and kind == "manifest":
        raise UserError(f"{submission}: --submission needs a dataset root (a layout), not a manifest")
    options = BatchOptions(
        output=opts["output"], checkpoint=opts["checkpoint"], device=opts["device"],
        dtype=opts["dtype"], context=opts["context"], per_object=bool(opts["per_object"]),
        attn=opts["attn"], compile=bool(opts["compile"]),
        num_actors=opts["num_actors"], gpus_per_actor=opts["gpus_per_actor"],
        cpus_per_actor=opts["cpus_per_actor"], max_retries=opts["max_retries"],
        resume=bool(args.resume), quiet=bool(opts["quiet"]))
    check_options(options)
    output = Path(options.output).resolve()
    try:
        with ray_session(args.address):
            result = run_batch(jobs, options)
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the cluster is down now, so are its writers
        for job in jobs:
            remove_stale_temps(output, job.name, any_owner=True)
        raise
    for r in result.records:
        if r.get("status") != "ok":
            print(f"vos batch: failed: {r['name']}: {r.get('error')}", file=sys.stderr)
    if not options.quiet:
        wall = max(result.wall_s, 1e-9)
        print(f"{len(result.records)} videos: {len(result.ok)} ok, {len(result.failed)} failed, "
              f"{result.skipped} skipped (resume); ran {result.ran} videos, {result.frames_run} "
              f"frames in {wall:.1f} s ({result.ran / wall:.2f} videos/s, "
              f"{result.frames_run / wall:.2f} frames/s) -> {result.manifest_path}")
    if getattr(args, "eval", False):
        _run_eval(args.source, output, [r["name"] for r in result.records if r.get("status") == "ok"],
                  options.quiet)
    if submission is not None:
        if result.failed:
            print(f"vos batch: no submission written: {len(result.failed)} videos failed (run them "
                  f"again with --resume)", file=sys.stderr)
        else:
            path = write_submission(output, [job.name for job in jobs], kind, submission)
            if not options.quiet:
                print(f"submission ({kind}) -> {path}")
    return 1 if result.failed else 0
