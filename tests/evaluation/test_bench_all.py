"""``positioning bench`` with no sub-command: its dispatch and options, its table, a failing benchmark's row
and exit status, and the headline figures read from the JSON each real benchmark writes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import re

import pytest

from positioning.cli import build_parser, main
from positioning.evaluation import bench_all
from positioning.evaluation.bench_all import (
    BENCHES,
    Bench,
    Figure,
    Outcome,
    format_table,
    run_args,
    run_bench,
    select,
)


def _args(json_path: object = None) -> argparse.Namespace:
    return argparse.Namespace(overview_only=None, overview_skip=None, overview_json=json_path)


def _script(code: str, *args: str) -> tuple[str, ...]:
    return ("-c", code, *args)


#: A benchmark that writes ``{"v": 1.5, "p": 2.5}`` to its JSON file.
GOOD = Bench(
    "good",
    _script("import json, sys; json.dump({'v': 1.5, 'p': 2.5}, open(sys.argv[1], 'w'))", "{json}"),
    lambda d: [Figure("a figure", d["v"], d["p"], "ms")],
)
#: A benchmark that fails after some progress output.
BOOM = Bench(
    "boom",
    _script("import sys; print('x' * 10 + '\\rprogress', file=sys.stderr); sys.exit('boom: the last line')"),
    lambda d: [],
)


# -- dispatch and options -----------------------------------------------------------------------------------
def test_bench_help_lists_the_overview_and_its_options():
    out = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(out):
        main(["bench", "--help"])
    assert info.value.code == 0
    text = " ".join(out.getvalue().split())
    assert "With no sub-command: runs the quick form of every benchmark" in text
    for option in ("--only NAME", "--skip NAME", "--json FILE"):
        assert option in text


def test_no_sub_command_runs_the_overview_and_sub_commands_still_dispatch():
    parser = build_parser()
    args, extra = parser.parse_known_args(["bench", "--only", "sim", "plan", "--json", "x.json"])
    assert not extra and args.bench_command is None and args.func.__name__ == "_cmd_bench_overview"
    assert args.overview_only == ["sim", "plan"] and args.overview_json == "x.json"
    args, _ = parser.parse_known_args(["bench", "sim", "--frames", "2", "--json"])
    assert args.func.__name__ == "_cmd_bench_sim" and args.json is True and args.frames == 2
    args, extra = parser.parse_known_args(["bench", "plan", "--quick", "--json", "p.json"])
    assert args.func.__name__ == "_cmd_bench_delegated" and args.bench_module == "bench_plan"
    assert [*extra, *args.rest] == ["--quick", "--json", "p.json"] and args.overview_json is None


@pytest.mark.parametrize("argv", [["--only", "nope"], ["--skip", "sim", "nope"]], ids=["only", "skip"])
def test_an_unknown_benchmark_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "'perception'" in err  # says what is known
    with pytest.raises(ValueError, match="unknown benchmark nope"):
        select(["nope"])


def test_select_keeps_the_overview_order():
    assert [b.name for b in select()] == list(BENCHES)
    assert list(BENCHES)[:3] == ["sim", "perception", "plan"]
    assert [b.name for b in select(["serve", "sim", "plan"], ["plan"])] == ["sim", "serve"]
    assert [b.name for b in select(None, ["tablet", "robustness"])] == [
        "sim", "perception", "plan", "evaluate", "fluoro", "pipeline", "serve",
    ]  # fmt: skip


def test_every_benchmark_is_a_quick_positioning_bench_command():
    shown = {name: b.shown_command() for name, b in BENCHES.items()}
    assert shown["plan"] == "positioning bench plan --quick --json FILE"
    assert shown["serve"] == "positioning bench serve --seconds 5 --clients 1 --json FILE"
    parser = build_parser()
    for name, b in BENCHES.items():  # each is a command the real parser routes to that benchmark
        args, _ = parser.parse_known_args(list(b.args[2:]))
        assert (args.bench_command if args.command == "bench" else args.command) == name
        assert b.json_on_stdout or "{json}" in b.args, name
    assert BENCHES["tablet"].unavailable is not None


# -- table --------------------------------------------------------------------------------------------------
def test_the_table_of_canned_figures():
    outcomes = [
        Outcome("sim", "ok", 8.2, (Figure("render + write per frame", 256.84, 375.3, "ms"),
                                   Figure("render + write", 3.49, None, "frames/s"))),
        Outcome("plan", "failed", 3.0, error="ValueError: no frames"),
        Outcome("tablet", "skipped", 0.0, error="no chromium on PATH"),
    ]  # fmt: skip
    lines = format_table(outcomes, total_s=11.4).splitlines()
    assert lines[0].split() == ["benchmark", "figure", "median", "p95", "unit"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["sim", "render", "+", "write", "per", "frame", "256.8", "375.3", "ms"]
    assert lines[3].split() == ["render", "+", "write", "3.5", "-", "frames/s"]
    assert lines[4].split() == ["plan", "FAILED:", "ValueError:", "no", "frames"]
    assert lines[5].split() == ["tablet", "skipped:", "no", "chromium", "on", "PATH"]
    assert lines[6] == "3 benchmarks in 11 s (sim 8 s, plan 3 s); 1 FAILED"
    # the numbers line up under their headers, right-aligned
    for col in ("median", "p95"):
        end = lines[0].index(col) + len(col)
        assert lines[2][end - 1] != " " and lines[3][end - 1] != " "
        assert lines[2][end] == " " and lines[3][end] == " "


# -- running, failing ---------------------------------------------------------------------------------------
def test_a_failing_benchmark_has_a_failed_row_the_others_run_and_the_exit_status_is_1(tmp_path, capsys):
    path = tmp_path / "out" / "overview.json"
    assert run_args(_args(path), benches=[BOOM, GOOD]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"^boom +FAILED: boom: the last line$", out, re.M)
    assert re.search(r"^good +a figure +1\.5 +2\.5 +ms$", out, re.M)
    assert "1 FAILED" in out.splitlines()[-1]
    # a progress line as each starts and ends: which, and the time so far
    assert "[1/2] boom: running python -c" in err and "[2/2] good: running" in err
    assert re.search(r"\[1/2\] boom: FAILED in \d+ s \(elapsed \d+ s\): boom: the last line", err)
    assert re.search(r"\[2/2\] good: done in \d+ s \(elapsed \d+ s\)", err)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "positioning.bench_overview/1" and doc["ok"] is False
    assert doc["benches"]["boom"]["status"] == "failed"
    assert doc["benches"]["boom"]["error"] == "boom: the last line"
    assert doc["benches"]["good"]["figures"] == [
        {"name": "a figure", "median": 1.5, "p95": 2.5, "unit": "ms"}
    ]


def test_all_ok_or_skipped_exits_0(capsys):
    skipped = dataclasses.replace(GOOD, name="skipped", unavailable=lambda: "not here")
    assert run_args(_args(), benches=[GOOD, skipped]) == 0
    assert re.search(r"^skipped +skipped: not here$", capsys.readouterr().out, re.M)


def test_a_failed_benchmark_keeps_the_tail_of_its_log():
    o = run_bench(BOOM)
    assert o.status == "failed" and o.error == "boom: the last line"
    assert "progress" in o.log_tail and o.log_tail.endswith("boom: the last line")


def test_a_benchmark_without_its_figures_or_that_hangs_fails():
    no_file = dataclasses.replace(GOOD, args=_script("pass"))
    assert run_bench(no_file).status == "failed"
    assert "no figures in its JSON: FileNotFoundError" in (run_bench(no_file).error or "")
    wrong = dataclasses.replace(GOOD, headline=lambda d: [Figure("x", d["missing"])])
    o = run_bench(wrong)
    assert o.status == "failed" and o.error == "no figures in its JSON: KeyError: 'missing'"
    hangs = dataclasses.replace(GOOD, args=_script("import time; time.sleep(60)"), timeout_s=0.5)
    o = run_bench(hangs)
    assert o.status == "failed" and o.error == "timed out after 0.5 s" and o.seconds < 10


# -- headline figures from the real benchmarks' JSON --------------------------------------------------------
def test_sim_headline_from_a_real_run():
    """The real ``positioning bench sim`` (2 frames of the empty table), through the overview's runner."""
    sim = BENCHES["sim"]
    tiny = dataclasses.replace(
        sim, args=(*sim.args[:4], "--frames", "2", "--scenario", "empty-table", "--json")
    )
    o = run_bench(tiny)
    assert o.status == "ok", o.error
    per_frame, rate = o.figures
    assert per_frame.unit == "ms" and 0 < per_frame.median <= per_frame.p95
    assert rate.unit == "frames/s" and rate.p95 is None
    assert rate.median == pytest.approx(1000.0 / per_frame.median, rel=0.5)


def test_sim_headline_is_the_whole_frame():
    from positioning.evaluation.bench_sim import benchmark_simulator

    doc = json.loads(json.dumps(benchmark_simulator("empty-table", frames=2)))  # what ``--json`` prints
    per_frame, rate = bench_all.sim_headline(doc)
    total = doc["stages"]["total"]
    assert (per_frame.median, per_frame.p95) == (round(total["median_ms"], 2), round(total["p95_ms"], 2))
    assert rate == Figure("render + write, 848x480", round(doc["fps"], 2), None, "frames/s")


def test_perception_headline_from_its_summary():
    from positioning.evaluation.bench_perception import CaseResult, summarize

    def case(position: str, shoulder_mm: float, hip_mm: float, total_ms: float, right: bool) -> CaseResult:
        return CaseResult(
            scenario="s", seed=0, true_position=position, true_arms="up", camera="D435 848x480",
            status="ok", position=position if right else "HFP", arms="up",
            errors_mm={"left_shoulder": shoulder_mm, "left_hip": hip_mm, "nose": 99.0},
            signed_body_mm={}, timings_ms={"scene": 1.0, "total": total_ms},
        )  # fmt: skip

    results = [case("HFS", 10.0, 20.0, 100.0, True), case("FFS", 30.0, 40.0, 200.0, False),
               case("HFP", 5.0, 5.0, 300.0, True)]  # fmt: skip
    doc = json.loads(json.dumps(summarize(results)))  # what ``--json`` prints
    figures = {f.name: f for f in bench_all.perception_headline(doc)}
    supine = figures["3-D shoulders+hips error, supine (n=4)"]
    assert supine.median == 25.0 and supine.unit == "mm" and 35.0 < supine.p95 < 40.0
    assert figures["3-D shoulders+hips error, prone (n=2)"].median == 5.0
    assert figures["patient position right (2/3)"].median == pytest.approx(66.7)
    assert figures["latency per frame"].median == 200.0 and figures["latency per frame"].p95 == 290.0


def test_plan_headline_from_its_summary():
    from positioning.evaluation.bench_plan import Case, CaseResult, summarize

    def result(z: float, x: float, start: float, end: float) -> CaseResult:
        return CaseResult(
            case=Case(name="accuracy", scenario="hfs-arms-up", seed=2000, protocol="chest", accuracy=True),
            camera="D435", position="HFS", plan={}, codes={}, labels={},
            iso_z_err_mm=z, iso_x_err_mm=x, start_err_mm=start, end_err_mm=end,
        )  # fmt: skip

    summary = summarize([result(-2.0, 1.0, 5.0, -10.0), result(4.0, -3.0, math.nan, 20.0)])
    summary["make_plan_ms"] = {"median": 25.1, "p95": 890.5}  # what benchmark_plan adds
    figures = bench_all.plan_headline(json.loads(json.dumps({"summary": summary, "results": []})))
    assert [f.name for f in figures] == [
        "vertical isocenter |error| (n=2)", "lateral isocenter |error| (n=2)", "scan start |error| (n=1)",
        "scan end |error| (n=2)", "make_plan time",
    ]  # fmt: skip
    assert (figures[0].median, figures[0].unit) == (3.0, "mm") and 3.8 < figures[0].p95 <= 4.0
    assert figures[2].median == 5.0 and (figures[4].median, figures[4].p95) == (25.1, 890.5)


def test_robustness_headline_from_its_summary():
    from positioning.evaluation.robustness import CaseResult, summarize

    def result(seed: int, iso_z: float, arms_right: bool) -> CaseResult:
        return CaseResult(
            seed=seed, mode="fused", protocol="chest", factors={"cover": "none"}, status="ok",
            table_found=True, table_err_mm=2.0, position_true="HFS", position="HFS", arms_true="up",
            arms="up" if arms_right else "down", keypoint_err_mm={"left_shoulder": 10.0, "left_hip": 30.0},
            iso_z_err_mm=iso_z, iso_x_err_mm=1.0, start_err_mm=4.0, end_err_mm=-8.0, checks={}, seconds=1.0,
        )  # fmt: skip

    summary = summarize([result(1, 2.0, True), result(2, -20.0, False)])  # the second: a silent failure
    doc = json.loads(json.dumps({"suite": "robustness", "summary": summary, "results": []}))
    figures = {f.name: f for f in bench_all.robustness_headline(doc)}
    iso = figures["vertical isocenter |error|, fused (n=2)"]
    assert iso.median == 11.0 and 19.0 < iso.p95 <= 20.0
    assert figures["scan range ends |error| (n=4)"].median == 6.0
    assert figures["3-D shoulders+hips error (n=4)"].median == 20.0
    assert figures["patient position right (2/2)"].median == 100.0
    assert figures["arm state right (1/2)"].median == 50.0 and figures["arm state right (1/2)"].unit == "%"
    assert figures["silent failures (of 2 sessions)"].median == 1.0


def _pipeline_run(baseline: bool, fps: float) -> dict:
    mp = {"median": 63.0, "p95": 82.0}
    return {
        "resolution": "848x480", "baseline": baseline, "landmarks": "fused", "seconds": 5.0,
        "offered_fps": 30.0, "processed_fps": fps, "frame_ms": mp,
        "end_to_end_ms": {"median": 63.1, "p95": 82.1}, "plan_preview_hz": 6.8,
        "full_plan_ms": {"median": 31.4, "p95": 108.3}, "stages_ms": {"scene": mp},
        "plan_median_mm": {"isocenter_z": -39.9}, "frames": 66, "image": [848, 480], "peak_rss_mb": 629.4,
    }  # fmt: skip


def test_pipeline_serve_and_tablet_headlines_from_documents_their_modules_print():
    """These benchmarks build their figures inline in a live run (``test_real_live_benchmarks`` runs them);
    the documents here are in their shape, which the modules' own formatters accept."""
    from positioning.evaluation.bench_pipeline import format_run
    from positioning.evaluation.bench_serve import format_results as format_serve
    from positioning.evaluation.bench_tablet import format_results as format_tablet

    runs = [_pipeline_run(True, 7.0), _pipeline_run(False, 13.2)]
    assert all("frames per second" in format_run(r) for r in runs)
    figures = bench_all.pipeline_headline(runs)  # --baseline writes both: the run is the last
    assert figures[0] == Figure("frames given a state (of 30.0 offered)", 13.2, None, "frames/s")
    assert figures[1] == Figure("per frame (perception + preview)", 63.0, 82.0, "ms")
    assert bench_all.pipeline_headline(runs[0])[0].median == 7.0
    steady = {
        **runs[1], "processed_fps": 30.0, "perceived_in_full_fps": 3.8, "repeated_share": 0.97,
        "perception_age_ms": {"median": 180.0, "p95": 400.0}, "cpu_cores": 1.5,
        "plan_sd_mm": {"isocenter_z": 1.4}, "move_ms": {"PATIENT_MOVING": 350.0, "PATIENT_MOVED": 900.0},
    }  # fmt: skip
    names = [f.name for f in bench_all.pipeline_headline(steady)]
    assert names[1] == "frames perceived in full" and names[-1] == "age of the perception a frame shows"
    text = format_run(steady)
    assert "97 % steady frames" in text and "PATIENT_MOVED after 900.0 ms" in text

    serve = {
        "landmarks": "fused", "seconds": 5.0, "peak_rss_mb": 641.5,
        "runs": [{"clients": n, "frame_to_client_ms": {"median": 63.0 * n, "p95": 89.1},
                  "service_share_ms": {"median": 3.7, "p95": 12.0},
                  "estimates_per_s_per_client": {"median": 13.69, "min": 13.69},
                  "frames_perceived_per_s": 13.49} for n in (1, 8)],
    }  # fmt: skip
    assert "1 client(s): frame to client 63.0 / 89.1 ms" in format_serve(serve)
    f = bench_all.serve_headline(serve)
    assert f[0] == Figure("frame to client, 1 client", 63.0, 89.1, "ms") and f[2].median == 13.69

    def st(m: float) -> dict:
        return {"median": m, "p95": m + 10, "n": 5}

    tablet = {"landmarks": "fused", "seconds": 5.0, "viewport": "1280x800", "page_load_ms": st(170.4),
              "page_ready_ms": st(421.0), "frame_to_picture_ms": st(125.7), "frame_to_estimate_ms": st(78.9),
              "pictures_per_s": 9.15, "camera_fps": 10.2}  # fmt: skip
    assert "pictures per second: 9.15" in format_tablet(tablet)
    names = [(f.name, f.median) for f in bench_all.tablet_headline(tablet)]
    assert names == [("page load", 170.4), ("page ready (protocols shown)", 421.0),
                     ("frame to picture on the page", 125.7), ("pictures on the page", 9.15)]  # fmt: skip


@pytest.mark.slow
def test_real_live_benchmarks():
    """The quick forms of the live benchmarks, for real (about 40 s on 2 cores): their JSON has the
    figures the overview reads."""
    for bench in select(["pipeline", "serve", "tablet"]):
        o = run_bench(bench)
        assert o.status in ("ok", "skipped"), f"{bench.name}: {o.error}\n{o.log_tail}"
        if o.status == "ok":
            assert all(f.median is not None for f in o.figures), o.figures
