"""``vos eval``: score a results folder with the DAVIS 2017 protocol
(:func:`vos.evaluation.davis2017.evaluate_davis`) and print or write the tables."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from seggpt_model.errors import one_line
from vos.errors import EvalError
from vos.evaluation.davis2017 import EvalWarning, evaluate_davis, format_report, write_csvs, write_json


def main(args) -> int:
    """Run ``vos eval`` from parsed arguments (see ``vos.cli``); returns the exit code.

    Raises:
        EvalError: bad input (the CLI prints it as one line and exits with 2).
    """
    t0 = time.perf_counter()
    if args.json:
        parent = Path(args.json).resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalError(f"cannot create {parent}: {one_line(exc)}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvalWarning)
        try:
            result = evaluate_davis(args.davis_root, args.results, subset=args.subset,
                                    year=args.year, sequences=args.sequences, workers=args.workers)
        finally:
            for w in caught:
                if issubclass(w.category, EvalWarning):
                    print(f"vos eval: warning: {w.message}", file=sys.stderr)
                else:  # not ours: show it as Python would
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(format_report(result, args.subset))
    if args.json:
        write_json(result, args.json)
        print(f"\nJSON written to {args.json}")
    if args.csv_dir:
        g_path, s_path = write_csvs(result, args.csv_dir, args.subset)
        print(f"CSV written to {g_path} and {s_path}")
    print(f"\nEvaluated {result['n_objects']} object(s) over {result['n_frames']} frame(s) in "
          f"{time.perf_counter() - t0:.2f} s")
    return 0
