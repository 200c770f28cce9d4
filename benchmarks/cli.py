"""``crossroads bench``: the benchmark suite, or parts of it, with a JSON result, a PNG plot and
a comparison per run.

``crossroads bench [PART ...] [--quick] [--compare FILE] [--out DIR] [--json] [--no-plot]
[[--] ARGS]``; the parser is :func:`node.cli.crossroads.build_parser`'s (so that ``crossroads
--help`` works without this package's imports), this module runs it:

* each PART (:data:`SUITE`, in that order when none is named) is its program's ``main()``
  (``python -m benchmarks.<part>``) with ``--out``, then the quick profile's sizes
  (``--quick``: :data:`QUICK`, a whole suite in minutes), then ARGS (the options that are not
  the suite's, or anything after ``--``: they need a single PART, and with none they go to
  ``e2e``, as ``crossroads bench -- ARGS`` always did);
* the result file the part wrote (``<out>/<part>-<time>.json``) gets ``comparison`` (with
  ``--compare``: the file of the same program among those given) and ``plot``, and a PNG of
  the same name beside it (:func:`benchmarks.report.plot`);
* ``crossroads bench plot FILE ...`` re-plots result files.

Exit status: 0 when every part ran and its plot was written; 1 when a part failed (its
results are still written); 2 for a refused command line or ``--compare`` file (unreadable,
not a result file, or of a program not run), before anything runs; 3 when every part ran but
the plots could not be made (matplotlib missing: ``pip install 'crossroads[bench]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR
from benchmarks.report import (
    CompareError,
    PlotUnavailable,
    compare,
    comparison_lines,
    figures,
    load_result,
    plot,
)
from node import grpc_runtime
from pki.output import json_line

__all__ = ["PARTS", "QUICK", "SUITE", "run"]

#: The suite in the order it runs: the quick programs first.
SUITE = ("micro", "e2e", "mutations", "consult_relay", "consult", "consult_hub", "directory",
         "audit")
PARTS = frozenset(SUITE)
#: ``--quick``: sizes that make a part take seconds to a minute (smoke runs, not figures).
QUICK: dict[str, tuple[str, ...]] = {
    "micro": ("--repeat", "5", "--number", "2"),
    "e2e": ("--envelopes", "20000", "--warmup", "2000", "--relay-rounds", "2"),
    "mutations": ("--envelopes", "5000", "--warmup", "1000", "--citizens", "5000"),
    "consult_relay": ("--rates", "200", "--seconds", "3", "--warmup-seconds", "1"),
    "consult": ("--rates", "200", "--seconds", "3", "--warmup-seconds", "1", "--probe", "0",
                "--citizens", "1000"),
    "consult_hub": ("--questions", "300"),
    "directory": ("--integrations", "60000", "--citizens", "10000", "--institutions", "10",
                  "--first-sync-integrations", "20000", "--envelopes", "20000"),
    "audit": ("--records", "200000", "--citizens", "20000"),
}
USAGE, FAILED, NO_PLOT = 2, 1, 3


def _refuse(message: str) -> int:
    print(f"crossroads bench: {message}", file=sys.stderr)
    return USAGE


def _split(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """The leading part names, and the rest (a part's own arguments, after ``--``)."""
    parts = []
    for k, word in enumerate(words):
        if word not in PARTS:
            return parts, list(words[k:])
        parts.append(word)
    return parts, []


def _baselines(paths: Sequence[str], parts: Sequence[str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The ``--compare`` files by program; :class:`CompareError` for one that does not fit."""
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name in paths:
        path = Path(name)
        data = load_result(path)
        kind = data["benchmark"]
        if kind not in parts:
            raise CompareError(f"{path} is a result of {kind}, not of"
                               f" {' or '.join(parts)}")
        out[kind] = (path, data)
    return out


def _new_file(out: Path, part: str, before: set[Path]) -> Path | None:
    fresh = sorted(set(out.glob(f"{part}-*.json")) - before, key=lambda p: p.stat().st_mtime)
    return fresh[-1] if fresh else None


def _finish(path: Path, baseline: tuple[Path, dict[str, Any]] | None,
            no_plot: bool) -> tuple[dict[str, Any], bool]:
    """Comparison and plot of a part's result file (rewritten with both); whether the plot
    was made (or not asked for)."""
    results = load_result(path)
    plotted = True
    if baseline is not None:
        results["comparison"] = compare(results, baseline[1], baseline[0])
    if not no_plot:
        try:
            results["plot"] = str(plot(results, path.with_suffix(".png")))
        except PlotUnavailable as exc:
            print(f"crossroads bench: {exc}", file=sys.stderr)
            results["plot"] = None
            plotted = False
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, plotted


def _run_part(part: str, argv: list[str], out: Path) -> tuple[int, Path | None, float]:
    before = set(out.glob(f"{part}-*.json"))
    main = importlib.import_module(f"benchmarks.{part}").main
    grpc_runtime.hold_core()  # one gRPC core for every part and phase (node/grpc_runtime.py)
    started = time.monotonic()
    print(f"crossroads bench: {part} {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        code = int(main(argv) or 0)
    except SystemExit as exc:  # the part's own argument parser
        code = exc.code if isinstance(exc.code, int) else USAGE
    return code, _new_file(out, part, before), time.monotonic() - started


def _plot_files(names: Sequence[str]) -> int:
    if not names:
        return _refuse("plot: name the result files to plot")
    for name in names:
        try:
            results = load_result(Path(name))
            print(plot(results, Path(name).with_suffix(".png")))
        except CompareError as exc:
            return _refuse(str(exc))
        except PlotUnavailable as exc:
            print(f"crossroads bench: {exc}", file=sys.stderr)
            return NO_PLOT
    return 0


def run(args: argparse.Namespace) -> int:
    """``crossroads bench`` (the arguments of :func:`node.cli.crossroads.build_parser`)."""
    words = list(args.parts)
    if words[:1] == ["plot"]:
        return _plot_files(words[1:])
    parts, extra = _split(words)
    if extra and not extra[0].startswith("-"):
        return _refuse(f"unknown part {extra[0]!r}; the parts: {', '.join(SUITE)}, or plot")
    unknown = list(getattr(args, "unknown_args", ()))
    extra += unknown[1:] if unknown[:1] == ["--"] else unknown
    if extra and not parts:
        parts = ["e2e"]  # `crossroads bench -- ARGS`, as before the suite
    if extra and len(parts) > 1:
        return _refuse("arguments after -- go to one part: name a single part")
    parts = parts or list(SUITE)
    try:
        baselines = _baselines(args.compare or [], parts)
    except CompareError as exc:
        return _refuse(f"cannot compare: {exc}")
    out = Path(args.out) if args.out else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"parts": {}}
    status = 0
    # With --json, stdout carries only the report: the parts' own summaries go to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    for part in parts:
        argv = ["--out", str(out), *(QUICK[part] if args.quick else ()), *extra]
        with quiet:
            code, path, seconds = _run_part(part, argv, out)
        entry: dict[str, Any] = {"exit": code, "seconds": round(seconds, 1),
                                 "result": None if path is None else str(path)}
        report["parts"][part] = entry
        if code != 0:
            status = FAILED
        if path is None:
            if code == USAGE:  # the part refused its arguments (its parser said why)
                return USAGE
            print(f"crossroads bench: {part} wrote no result file (exit {code})", file=sys.stderr)
            status = FAILED
            continue
        results, plotted = _finish(path, baselines.get(part), args.no_plot)
        entry["plot"] = results.get("plot")
        entry["figures"] = {k: v["value"] for k, v in figures(results).items()}
        if "comparison" in results:
            entry["comparison"] = results["comparison"]
        if not plotted and status == 0:
            status = NO_PLOT
        if not args.json:
            print(f"crossroads bench: {part}: {path}" + (f", {results['plot']}"
                                                        if results.get("plot") else ""))
            if "comparison" in results:
                print("\n".join(comparison_lines(results["comparison"])))
    report["exit"] = status
    if args.json:
        print(json_line(report), flush=True)  # one line, as every --json (pki/output.py)
    return status
