"""``vos eval``: choose the protocol from the options (DAVIS 2017,
:func:`vos.evaluation.davis2017.evaluate_davis`, or SA-V, :func:`vos.evaluation.sav.evaluate_sav`),
run it, print the tables and write the JSON / CSV files."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from seggpt_model.errors import one_line
from vos.errors import EvalError
from vos.evaluation import davis2017, sav
from vos.evaluation.common import EvalWarning

__all__ = ["resolve_protocol", "main"]


def resolve_protocol(args) -> str:
    """The protocol of a ``vos eval`` command line: ``--protocol``, else ``davis2017`` with
    ``--davis-root`` and ``sav`` with ``--gt-root``.

    Raises:
        EvalError: no ground truth given, both ``--davis-root`` and ``--gt-root``, or options of
            the other protocol (``--gt-root``/``--keep-first-last`` with davis2017, ``--csv-dir``
            with sav).
    """
    if args.davis_root is None and args.gt_root is None:
        raise EvalError("give the ground truth: --davis-root ROOT (a DAVIS root) or --gt-root GT "
                        "(a folder of video folders, --protocol sav)")
    if args.davis_root is not None and args.gt_root is not None:
        raise EvalError("give either --davis-root or --gt-root, not both")
    protocol = args.protocol or ("davis2017" if args.davis_root is not None else "sav")
    if protocol == "davis2017":
        if args.gt_root is not None:
            raise EvalError("--protocol davis2017 reads a DAVIS root: give --davis-root ROOT "
                            "(--gt-root is for --protocol sav)")
        if args.keep_first_last:
            raise EvalError("--keep-first-last is for --protocol sav: the DAVIS 2017 protocol "
                            "never scores the first and last frames")
    else:
        if args.csv_dir is not None:
            raise EvalError("--csv-dir writes the official DAVIS CSV files: only with "
                            "--protocol davis2017 (use --json with --protocol sav)")
        if args.gt_root is not None and (args.subset is not None or args.year is not None):
            raise EvalError("--set and --year select a DAVIS image set list: only with --davis-root")
    return protocol


def _evaluate(args, protocol: str) -> tuple[dict, str]:
    subset, year = args.subset or "val", args.year or "2017"
    if protocol == "davis2017":
        result = davis2017.evaluate_davis(args.davis_root, args.results, subset=subset, year=year,
                                         sequences=args.sequences, workers=args.workers)
        return result, davis2017.format_report(result, subset)
    if args.davis_root is not None:
        gt_root, videos = sav.davis_videos(args.davis_root, subset, year, args.sequences)
    else:
        gt_root, videos = Path(args.gt_root), args.sequences
    result = sav.evaluate_sav(gt_root, args.results, keep_first_last=args.keep_first_last,
                                   videos=videos, workers=args.workers)
    return result, sav.format_sav_report(result)


def main(args) -> int:
    """Run ``vos eval`` from parsed arguments (see ``vos.cli``); returns the exit code.

    Raises:
        EvalError: bad input (the CLI prints it as one line and exits with 2).
    """
    t0 = time.perf_counter()
    protocol = resolve_protocol(args)
    if args.json:
        parent = Path(args.json).resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalError(f"cannot create {parent}: {one_line(exc)}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvalWarning)
        try:
            result, report = _evaluate(args, protocol)
        finally:
            for w in caught:
                if issubclass(w.category, EvalWarning):
                    print(f"vos eval: warning: {w.message}", file=sys.stderr)
                else:  # not ours: show it as Python would
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(report)
    if args.json:
        if protocol == "davis2017":
            davis2017.write_json(result, args.json)
        else:
            sav.write_sav_json(result, args.json)
        print(f"\nJSON written to {args.json}")
    if args.csv_dir:
        g_path, s_path = davis2017.write_csvs(result, args.csv_dir, args.subset or "val")
        print(f"CSV written to {g_path} and {s_path}")
    print(f"\nEvaluated {result['n_objects']} object(s) over {result['n_frames']} frame(s) in "
          f"{time.perf_counter() - t0:.2f} s")
    return 0
