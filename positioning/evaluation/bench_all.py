"""``positioning bench`` with no sub-command: the quick form of every benchmark, one table of headlines.

Runs, one after the other, each benchmark's quick form as its own ``positioning bench NAME`` process (so
that one benchmark's threads, models and memory never colour the next one's figures), reads the figures
from the JSON the benchmark writes, and prints one table: benchmark, headline figure, median, p95, unit
(a figure that is one number, a rate or a share, has it in the median column and no p95).

* ``sim``: render + write time per frame and frames per second (:mod:`.bench_sim`);
* ``perception``: 3-D shoulder and hip error per lying group, position right, per-frame latency
  (:mod:`.bench_perception`, one case per scenario);
* ``plan``: vertical and lateral isocenter error, scan-range ends, ``make_plan`` time
  (:mod:`.bench_plan` ``--quick``);
* ``robustness``: isocenter, range ends, shoulders and hips, position and arms right, silent failures on
  the first sessions of the robustness suite (:mod:`.robustness`);
* ``evaluate``: the quick evaluation suite (``positioning evaluate quick``, :mod:`.evaluate`): isocenter,
  range ends, position and arms right, failures and silent failures;
* ``fluoro``: fluoroscopy set-ups on the quick suite's sessions: target centre error, the true
  target inside the PA field, area saved (:mod:`.bench_fluoro`);
* ``pipeline``: frames perceived per second at camera rate, per-frame and frame-to-estimate time
  (:mod:`.bench_pipeline`);
* ``serve``: frame-to-client latency and estimates per second, one client (:mod:`.bench_serve`);
* ``tablet``: page load and frame to picture in headless Chromium (:mod:`.bench_tablet`), only where
  Chromium is installed.

A benchmark that fails does not stop the others: its row says FAILED with the last line of its error,
and the command exits with 1 at the end. ``--json FILE`` writes every headline figure; ``--only`` and
``--skip`` pick benchmarks. A progress line per benchmark goes to stderr. The figures are quick forms
(few cases, a few seconds each): they show where the project stands, not its accuracy to a decimal; the
full benchmarks are ``positioning bench NAME``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "BENCHES",
    "Bench",
    "Figure",
    "Outcome",
    "add_arguments",
    "format_table",
    "main",
    "overview_json",
    "run_args",
    "run_bench",
    "run_overview",
    "select",
]

#: Stands for the JSON file's path in a :class:`Bench`'s arguments.
JSON_PATH = "{json}"


@dataclasses.dataclass(frozen=True)
class Figure:
    """One headline figure: ``median`` and ``p95``, or one value (``p95`` None) such as a rate."""

    name: str
    median: float | None
    p95: float | None = None
    unit: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _r(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


def _mp(name: str, stats: dict[str, Any], unit: str = "ms") -> Figure:
    """A figure from a ``{"median": ..., "p95": ...}`` dict (:func:`~.figures.median_p95`)."""
    return Figure(name, _r(stats["median"]), _r(stats["p95"]), unit)


def _pct(share: Any) -> float | None:
    return None if share is None else round(100.0 * float(share), 1)


# -------------------------------------------------------------------------------- headlines per benchmark


def sim_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench sim --json`` (:func:`~.bench_sim.benchmark_simulator`)."""
    total = doc["stages"]["total"]
    return [
        Figure("render + write per frame", _r(total["median_ms"]), _r(total["p95_ms"]), "ms"),
        Figure(f"render + write, {doc['resolution']}", _r(doc["fps"]), None, "frames/s"),
    ]


def perception_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench perception --json`` (:func:`~.bench_perception.summarize`)."""
    figures = []
    for lying, table in doc["landmarks"].items():
        med, p95, n = table["shoulders+hips"]
        figures.append(Figure(f"3-D shoulders+hips error, {lying} (n={n})", _r(med), _r(p95), "mm"))
    groups = doc["by_lying"].values()
    cases = sum(g["cases"] for g in groups)
    right = sum(g["position_correct"] for g in groups)
    figures.append(Figure(f"patient position right ({right}/{cases})", _pct(right / cases), None, "%"))
    med, p95 = doc["latency_ms"]["total"]
    figures.append(Figure("latency per frame", _r(med), _r(p95), "ms"))
    return figures


def plan_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench plan --json FILE`` (:func:`~.bench_plan.summarize` under ``summary``)."""
    s = doc["summary"]

    def err(name: str, key: str) -> Figure:
        st = s["overall"][key]
        return Figure(f"{name} (n={st['n']})", _r(st.get("median_abs_mm")), _r(st.get("p95_abs_mm")), "mm")

    return [
        err("vertical isocenter |error|", "iso_z_err_mm"),
        err("lateral isocenter |error|", "iso_x_err_mm"),
        err("scan start |error|", "start_err_mm"),
        err("scan end |error|", "end_err_mm"),
        _mp("make_plan time", s["make_plan_ms"]),
    ]


def robustness_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench robustness --json FILE`` (:func:`~.robustness.summarize` under
    ``summary``; the first landmark mode)."""
    mode, m = next(iter(doc["summary"].items()))
    a = m["all"]

    def mm(name: str, key: str) -> Figure:
        st = a[key]
        return Figure(f"{name} (n={st['n']})", _r(st.get("median_mm")), _r(st.get("p95_mm")), "mm")

    def share(name: str, key: str) -> Figure:
        st = a[key]
        return Figure(f"{name} ({st['right']}/{st['n']})", _pct(st["share"]), None, "%")

    return [
        mm(f"vertical isocenter |error|, {mode}", "iso_z"),
        mm("scan range ends |error|", "range_ends"),
        mm("3-D shoulders+hips error", "shoulders_hips_3d"),
        share("patient position right", "position"),
        share("arm state right", "arms"),
        Figure(f"silent failures (of {a['sessions']} sessions)", float(a["silent_failures"]), None, ""),
    ]


def evaluate_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning evaluate quick --json FILE`` (:func:`~.summary.headline` under ``headline``)."""
    h = doc["headline"]
    return [
        Figure(f"vertical isocenter |error| (n={h['with_truth']})", _r(h["iso_z_median_mm"]),
               _r(h["iso_z_p95_mm"]), "mm"),
        Figure("lateral isocenter |error|", _r(h["iso_x_median_mm"]), _r(h["iso_x_p95_mm"]), "mm"),
        Figure("scan range ends |error|", _r(h["range_end_median_mm"]), _r(h["range_end_p95_mm"]), "mm"),
        Figure("patient position right", _pct(h["position_accuracy"]), None, "%"),
        Figure("arm state right", _pct(h["arms_accuracy"]), None, "%"),
        Figure("failures (no plan)", h["failures"], None, "cases"),
        Figure("silent failures (large error, no check)", h["silent_failures"], None, "cases"),
    ]  # fmt: skip


def fluoro_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench fluoro --json FILE`` (:func:`~.bench_fluoro.summarize` under ``summary``)."""
    a = doc["summary"]["all"]
    c = a["centre_err_mm"]
    return [
        Figure(f"target centre error (n={c.get('n', 0)} plans)", _r(c.get("median")), _r(c.get("p95")), "mm"),
        Figure("true target wholly inside the PA field", _pct(a["full_coverage_pa_share"]), None, "%"),
        Figure(
            "PA field area saved",
            _r(a["area_saved_pa"].get("median")),
            _r(a["area_saved_pa"].get("p95")),
            "%",
        ),
    ]


def pipeline_headline(doc: dict[str, Any] | list[dict[str, Any]]) -> list[Figure]:
    """From ``positioning bench pipeline --json FILE`` (one run, or the baseline and the run: the last)."""
    r = doc[-1] if isinstance(doc, list) else doc
    figures = [
        Figure(
            f"frames given a state (of {r['offered_fps']} offered)", _r(r["processed_fps"]), None, "frames/s"
        ),
        _mp("per frame (perception + preview)", r["frame_ms"]),
        _mp("frame to estimate", r["end_to_end_ms"]),
        _mp("full plan on request", r["full_plan_ms"]),
    ]
    if "perception_age_ms" in r:  # since steady frames (older documents have neither)
        figures.insert(
            1, Figure("frames perceived in full", _r(r["perceived_in_full_fps"]), None, "frames/s")
        )
        figures.append(_mp("age of the perception a frame shows", r["perception_age_ms"]))
    return figures


def serve_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench serve --json FILE`` (the first run: the fewest clients)."""
    run = doc["runs"][0]
    clients = f"{run['clients']} client{'s' if run['clients'] != 1 else ''}"
    return [
        _mp(f"frame to client, {clients}", run["frame_to_client_ms"]),
        _mp("service's own share", run["service_share_ms"]),
        Figure("estimates per client", _r(run["estimates_per_s_per_client"]["median"]), None, "/s"),
    ]


def tablet_headline(doc: dict[str, Any]) -> list[Figure]:
    """From ``positioning bench tablet --json FILE``."""
    return [
        _mp("page load", doc["page_load_ms"]),
        _mp("page ready (protocols shown)", doc["page_ready_ms"]),
        _mp("frame to picture on the page", doc["frame_to_picture_ms"]),
        Figure("pictures on the page", _r(doc["pictures_per_s"]), None, "/s"),
    ]


# ------------------------------------------------------------------------------------------- benchmarks


def _no_chromium() -> str | None:
    from positioning.evaluation.browser import chromium_path

    return None if chromium_path() is not None else "no chromium on PATH"


@dataclasses.dataclass(frozen=True)
class Bench:
    """One benchmark's quick form.

    Attributes:
        name: the benchmark (``positioning bench NAME``).
        args: the process's arguments after the Python interpreter; :data:`JSON_PATH` stands for the
            JSON file the benchmark writes.
        headline: the headline figures from the benchmark's JSON.
        json_on_stdout: the JSON is the process's standard output, not a file.
        unavailable: why it cannot run here (None: it can), checked just before it would run.
        timeout_s: the process is killed after this long (a FAILED row).
    """

    name: str
    args: tuple[str, ...]
    headline: Callable[[Any], list[Figure]]
    json_on_stdout: bool = False
    unavailable: Callable[[], str | None] | None = None
    timeout_s: float = 600.0

    def command(self, json_path: Path) -> list[str]:
        return [sys.executable, *(a.replace(JSON_PATH, str(json_path)) for a in self.args)]

    def shown_command(self) -> str:
        """The command as a user would type it."""
        args = [a.replace(JSON_PATH, "FILE") for a in self.args]
        if args[:2] == ["-m", "positioning.cli"]:
            return shlex.join(["positioning", *args[2:]])
        return shlex.join(["python", *args])


def _bench(name: str, options: str, headline: Callable[[Any], list[Figure]], **kw: Any) -> Bench:
    """``positioning bench NAME OPTIONS`` (options split at spaces)."""
    return Bench(name, ("-m", "positioning.cli", "bench", name, *options.split()), headline, **kw)


#: The benchmarks of the overview, in the order they run.
BENCHES: dict[str, Bench] = {
    b.name: b
    for b in (
        _bench("sim", "--frames 10 --json", sim_headline, json_on_stdout=True),
        _bench("perception", "--cases 12 --json", perception_headline, json_on_stdout=True),
        _bench("plan", "--quick --json {json}", plan_headline),
        _bench("robustness", "--cases 6 --jobs 2 --json {json}", robustness_headline),
        Bench(
            "evaluate",
            ("-m", "positioning.cli", "evaluate", "quick", "--no-progress", "--json", JSON_PATH),
            evaluate_headline,
        ),
        _bench("fluoro", "--suite quick --jobs 2 --json {json}", fluoro_headline),
        _bench("pipeline", "--seconds 5 --json {json}", pipeline_headline),
        _bench("serve", "--seconds 5 --clients 1 --json {json}", serve_headline),
        _bench("tablet", "--seconds 5 --loads 3 --json {json}", tablet_headline, unavailable=_no_chromium),
    )
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one benchmark gave.

    Attributes:
        name: the benchmark.
        status: ``ok``, ``failed`` or ``skipped``.
        seconds: its wall time.
        figures: its headline figures (empty unless ``ok``).
        error: the last line of its error (``failed``), or why it did not run (``skipped``).
        command: the command that ran, as a user would type it.
        log_tail: the last lines of its error output when it failed (the last line alone rarely says
            which step failed: a browser's "- waiting 500ms").
    """

    name: str
    status: str
    seconds: float
    figures: tuple[Figure, ...] = ()
    error: str | None = None
    command: str = ""
    log_tail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "command": self.command,
            "error": self.error,
            "figures": [f.to_json() for f in self.figures],
        }


def _last_line(*texts: str) -> str | None:
    """The last non-empty line of the first text that has one (progress bars' ``\\r`` count as breaks)."""
    for text in texts:
        lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return None


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_bench(bench: Bench) -> Outcome:
    """Run one benchmark in its own process and read its headline figures; never raises for a failing
    benchmark (its :class:`Outcome` says ``failed``)."""
    shown = bench.shown_command()
    t0 = time.perf_counter()
    if bench.unavailable is not None and (why := bench.unavailable()):
        return Outcome(bench.name, "skipped", 0.0, error=why, command=shown)

    def failed(error: str, log: str = "") -> Outcome:
        tail = "\n".join(log.replace("\r", "\n").splitlines()[-25:])
        return Outcome(
            bench.name, "failed", time.perf_counter() - t0, error=error, command=shown, log_tail=tail
        )

    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        json_path = Path(tmp) / f"{bench.name}.json"
        # its own process group, so that a timeout also ends the benchmark's worker processes
        proc = subprocess.Popen(
            bench.command(json_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=bench.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return failed(f"timed out after {bench.timeout_s:g} s")
        except BaseException:  # Ctrl-C: the benchmark goes with us
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            return failed(_last_line(err, out) or f"exit status {proc.returncode}", err or out)
        try:
            text = out if bench.json_on_stdout else json_path.read_text()
            figures = tuple(bench.headline(json.loads(text)))
        except (OSError, ValueError, KeyError, IndexError, TypeError, StopIteration) as e:
            return failed(f"no figures in its JSON: {type(e).__name__}: {e}")
    return Outcome(bench.name, "ok", time.perf_counter() - t0, figures, command=shown)


def run_overview(benches: Sequence[Bench], *, progress: TextIO | None = None) -> list[Outcome]:
    """Run ``benches`` one after the other; a line per benchmark on ``progress`` as it starts and ends."""
    outcomes = []
    t0 = time.perf_counter()
    for i, bench in enumerate(benches, 1):
        tag = f"[{i}/{len(benches)}] {bench.name}"
        if progress is not None:
            print(f"{tag}: running {bench.shown_command()} ...", file=progress, flush=True)
        o = run_bench(bench)
        outcomes.append(o)
        if progress is not None:
            what = {"ok": "done", "failed": "FAILED", "skipped": "skipped"}[o.status]
            print(
                f"{tag}: {what} in {o.seconds:.0f} s (elapsed {time.perf_counter() - t0:.0f} s)"
                + (f": {o.error}" if o.error else ""),
                file=progress,
                flush=True,
            )
    return outcomes


# -------------------------------------------------------------------------------------------- reporting


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def format_table(outcomes: Sequence[Outcome], total_s: float | None = None) -> str:
    """The table of every benchmark's headline figures (a FAILED or skipped row for the others)."""
    rows: list[tuple[str, str, str, str, str]] = []
    for o in outcomes:
        if o.status == "ok" and not o.figures:
            rows.append((o.name, "(no figures)", "", "", ""))
        elif o.status == "ok":
            for k, f in enumerate(o.figures):
                rows.append((o.name if k == 0 else "", f.name, _num(f.median), _num(f.p95), f.unit))
        else:
            label = "FAILED" if o.status == "failed" else "skipped"
            rows.append((o.name, f"{label}: {o.error}", "", "", ""))
    header = ("benchmark", "figure", "median", "p95", "unit")
    w = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    # a FAILED row's message is not what sizes the figure column
    w[1] = max([len(header[1])] + [len(r[1]) for r in rows if r[2] or r[3] or r[4]])

    def line(r: tuple[str, str, str, str, str]) -> str:
        if not (r[2] or r[3] or r[4]):
            return f"{r[0]:<{w[0]}}  {r[1]}".rstrip()
        return f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  {r[4]}".rstrip()

    lines = [line(header), line(tuple("-" * n for n in w))]  # type: ignore[arg-type]
    lines += [line(r) for r in rows]
    timing = ", ".join(f"{o.name} {o.seconds:.0f} s" for o in outcomes if o.status != "skipped")
    total = f" in {total_s:.0f} s" if total_s is not None else ""
    failed = sum(o.status == "failed" for o in outcomes)
    benchmarks = f"{len(outcomes)} benchmark{'s' if len(outcomes) != 1 else ''}"
    lines.append(f"{benchmarks}{total} ({timing})" + (f"; {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def overview_json(outcomes: Sequence[Outcome], total_s: float) -> dict[str, Any]:
    """Every headline figure, by benchmark (what ``--json FILE`` writes)."""
    return {
        "schema": "positioning.bench_overview/1",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(total_s, 1),
        "ok": all(o.status != "failed" for o in outcomes),
        "benches": {o.name: o.to_json() for o in outcomes},
    }


# ---------------------------------------------------------------------------------------- command line


def select(only: Sequence[str] | None = None, skip: Sequence[str] | None = None) -> list[Bench]:
    """The benchmarks of :data:`BENCHES` named in ``only`` (all when None), less those in ``skip``, in
    :data:`BENCHES`'s order.

    Raises:
        ValueError: an unknown name.
    """
    unknown = sorted({*(only or ()), *(skip or ())} - set(BENCHES))
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    return [b for n, b in BENCHES.items() if (only is None or n in only) and n not in (skip or ())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The overview's options (on ``positioning bench`` itself, before any sub-command)."""
    names = list(BENCHES)
    parser.add_argument(
        "--only",
        dest="overview_only",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"run these benchmarks only ({', '.join(names)})",
    )
    parser.add_argument(
        "--skip", dest="overview_skip", nargs="+", choices=names, metavar="NAME", help="leave these out"
    )
    parser.add_argument(
        "--json", dest="overview_json", metavar="FILE", help="also write every headline figure as JSON"
    )


def run_args(args: argparse.Namespace, *, benches: Sequence[Bench] | None = None) -> int:
    """Run the overview the parsed options ask for; 0 when no benchmark failed, else 1.

    Args:
        args: from a parser given :func:`add_arguments`.
        benches: run these instead of the ones the options select (tests).
    """
    if benches is None:
        benches = select(args.overview_only, args.overview_skip)
    t0 = time.perf_counter()
    outcomes = run_overview(benches, progress=sys.stderr)
    total_s = time.perf_counter() - t0
    print(format_table(outcomes, total_s))
    if args.overview_json:
        path = Path(args.overview_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(overview_json(outcomes, total_s), indent=1) + "\n")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
