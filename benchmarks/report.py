"""What ``crossroads bench`` makes of a result file: its figures, a comparison with an older
file of the same program, and a PNG plot.

* :func:`figures`: the headline numbers of a result file, by name, each with the direction
  that is better. Found by key, the same way for every program: rates (``*_per_s``, the
  relay ``ratio``: higher is better), latency percentiles (``p50``, ``p90``, ``p99`` under a
  ``*_ms`` entry or audit's ``queries``, ``*_ms_p50``: lower), CPU per unit of work
  (``cpu_us_per_*``, micro's ``us_per_envelope_median``: lower), memory (``*_mib``) and sync
  times: lower. When the file has a ``summary`` (medians over repeats), only the summary
  counts. A list's items are named by their ``tier``, offered rate or ``concurrency``.
* :func:`compare`: old, new and new/old per figure both files have (:class:`CompareError`
  for a file that is not a result of the same program).
* :func:`plot`: throughput over time and latency by percentile, one line per ``series``
  entry the run recorded (:mod:`benchmarks.progress`), as a PNG beside the JSON. It needs
  matplotlib (``pip install 'crossroads[bench]'``); :class:`PlotUnavailable` says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["EXTRA", "CompareError", "PlotUnavailable", "compare", "comparison_lines", "figures",
           "load_result", "plot", "series_lines"]

#: The extra that brings the plotting library.
EXTRA = "crossroads[bench]"

#: Sub-trees that are no figures: the run's frame, per-second detail, breakdowns.
_SKIP = frozenset({
    "machine", "parameters", "command", "code", "series", "checks", "comparison", "backlog",
    "backlog_envelopes", "where_ms", "send_lag_ms", "service_ms", "service_ms_p50_by_status",
    "p99_ms_by_second", "submit_call_ms", "ok_latency_ms", "repeats", "postgresql", "tier",
    "memory_bytes", "log", "verify", "directory", "node_sync",
})
_HIGHER = re.compile(r"^(?!offered).*_per_s$|^ratio$")
#: Lower is better for a key, or for every number under a key (a figure per process).
_LOWER = re.compile(r"^(cpu_|tier_)?us_per_(envelope|delivery|question)(_median)?$|_ms_p\d+$"
                    r"|_mib(_\w+)?$|^(load|first_sync)_s$|^node_sync_s_first_run$")
_PERCENTILE = re.compile(r"^p(50|90|99)$")


class CompareError(ValueError):
    """A file that cannot be compared with this run (unreadable, or another program's)."""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed: the plot needs the ``bench`` extra."""


def load_result(path: Path) -> dict[str, Any]:
    """A result file's JSON, or :class:`CompareError` saying why it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path} is not a readable result file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmark"), str):
        raise CompareError(f"{path} is not a benchmark result file (no \"benchmark\" field)")
    return data


def _item_name(item: Any, index: int) -> str:
    if isinstance(item, Mapping):
        for key, fmt in (("tier", "{}"), ("offered_per_s", "{:g}/s"), ("concurrency", "x{}"),
                         ("name", "{}")):
            if item.get(key) is not None:
                return fmt.format(item[key])
    return f"#{index + 1}"


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key not in _SKIP:
                yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for k, item in enumerate(node):
            yield from _walk(item, (*path, _item_name(item, k)))
    else:
        yield path, node


def _direction(path: tuple[str, ...]) -> str | None:
    key, parent = path[-1], (path[-2] if len(path) > 1 else "")
    if _HIGHER.search(key):
        return "higher"
    if _LOWER.search(key) or _LOWER.search(parent):
        return "lower"
    if _PERCENTILE.match(key) and (parent.endswith("_ms") or "queries" in path):
        return "lower"  # latency in ms (audit: its query times)
    return None


def figures(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"value", "better"}}``: the figures of a result file (see the module)."""
    root: Any = results.get("summary") or results
    out: dict[str, dict[str, Any]] = {}
    for path, value in _walk(root, ()):
        better = _direction(path)
        if better and isinstance(value, int | float) and not isinstance(value, bool):
            out[".".join(path)] = {"value": value, "better": better}
    return out


def compare(new: Mapping[str, Any], old: Mapping[str, Any], old_path: Path) -> dict[str, Any]:
    """The comparison stored in the new result: per figure in both, old, new, new/old."""
    if old.get("benchmark") != new.get("benchmark"):
        raise CompareError(f"{old_path} is a result of {old.get('benchmark')}, not of"
                           f" {new.get('benchmark')}")
    before, after = figures(old), figures(new)
    rows = {}
    for name, fig in after.items():
        if name not in before:
            continue
        o, n = before[name]["value"], fig["value"]
        rows[name] = {"old": o, "new": n, "ratio": round(n / o, 3) if o else None,
                      "better": fig["better"]}
    return {"against": str(old_path), "against_started_at": old.get("started_at"),
            "figures": rows}


def comparison_lines(comparison: Mapping[str, Any]) -> list[str]:
    """The comparison as a table for the terminal."""
    rows = comparison["figures"]
    width = max([len(n) for n in rows] + [6])
    lines = [f"compared with {comparison['against']}"
             f" ({comparison.get('against_started_at') or 'time unknown'}):",
             f"  {'figure':<{width}} {'old':>12} {'new':>12} {'new/old':>8}  better"]
    for name, r in rows.items():
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(f"  {name:<{width}} {r['old']:>12,.6g} {r['new']:>12,.6g} {ratio:>8}"
                     f"  {r['better']}")
    if not rows:
        lines.append("  (no figure in common)")
    return lines


def series_lines(results: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every ``series`` entry of a result file, named by where it is."""

    def walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, Mapping):
            if isinstance(node.get("series"), Mapping):
                yield " ".join(path) or str(results.get("benchmark")), dict(node["series"])
            for key, value in node.items():
                if key not in ("series", "summary", "comparison"):
                    yield from walk(value, (*path, str(key)))
        elif isinstance(node, list):
            for k, item in enumerate(node):
                yield from walk(item, (*path, _item_name(item, k)))

    found = list(walk(results, ()))
    names = [name for name, _ in found]
    seen: dict[str, int] = {}
    out = []
    for name, entry in found:  # repeats of one configuration: "e2e sqlite run 2"
        if names.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name} run {seen[name]}"
        out.append((name, entry))
    return out


def plot(results: Mapping[str, Any], png: Path) -> Path:
    """Throughput over time and latency by percentile, as ``png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(f"no plot: matplotlib is not installed ({exc});"
                              f" pip install '{EXTRA}'") from None
    lines = series_lines(results)
    fig, (rate_ax, lat_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        fig.suptitle(f"{results.get('benchmark')} {results.get('started_at') or ''}", fontsize=10)
        units = set()
        lat_units = set()
        for label, s in lines:
            if s.get("throughput"):
                t, v = zip(*s["throughput"], strict=True)
                rate_ax.plot(t, v, label=label, linewidth=1, marker="." if len(t) < 5 else None)
                units.add(s.get("unit", ""))
            if s.get("latency"):
                p, v = zip(*s["latency"], strict=True)
                lat_ax.plot(range(len(p)), v, marker=".", label=label, linewidth=1)
                lat_ax.set_xticks(range(len(p)), [f"{x:g}" for x in p])
                lat_units.add(s.get("latency_unit", "ms"))
        rate_ax.set_title("throughput over time", fontsize=9)
        rate_ax.set_xlabel("seconds into the measured phase")
        rate_ax.set_ylabel(f"{', '.join(sorted(units)) or 'items'} per second")
        lat_ax.set_title("latency by percentile", fontsize=9)
        lat_ax.set_xlabel("percentile")
        lat_ax.set_ylabel(", ".join(sorted(lat_units)) or "ms")
        if lat_ax.lines and all(min(line.get_ydata()) > 0 for line in lat_ax.lines):
            lat_ax.set_yscale("log")  # tails are orders of magnitude above the median
        for ax in (rate_ax, lat_ax):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "not recorded by this program", ha="center",
                        transform=ax.transAxes)
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=100)
    finally:
        plt.close(fig)
    return png
