"""The ``positioning`` command: the real entry point, its outputs, its error contract (exit 2, one line)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from positioning.cli import build_parser, main
from positioning.sim.scenario import list_scenarios

SCENARIO_NAMES = [s.name for s in list_scenarios()]
ERROR_LINE = re.compile(r"^error \[(?P<code>[A-Z_]+)\]: (?P<message>.+)\n$")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Call ``main`` in-process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, code: str) -> str:
    assert rc == 2
    assert "Traceback" not in err
    m = ERROR_LINE.match(err)
    assert m, f"not a one-line 'error [CODE]: ...' message: {err!r}"
    assert m["code"] == code
    return m["message"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, str]:
    """``sim record`` of 2 frames (with ``--preview``): the recording's path and what the command printed."""
    out_dir = tmp_path_factory.mktemp("cli")
    path = out_dir / "hfs.db3"
    rc, out, err = run_cli(
        "sim", "record", path, "--scenario", "hfs-arms-up", "--frames", "2", "--seed", "3",
        "--preview", out_dir / "hfs.png",
    )  # fmt: skip
    assert rc == 0, err
    return path, out


# -- sim -----------------------------------------------------------------------------------------------------
def test_sim_list_lists_every_scenario():
    rc, out, _ = run_cli("sim", "list")
    assert rc == 0
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == SCENARIO_NAMES
    assert "hfs-arms-up" in out and "arms raised above the head" in out


def test_sim_record_writes_the_three_files(recording):
    path, out = recording
    for p in (path, path.with_name("hfs.truth.json"), path.with_name("hfs.calibration.yaml"),
              path.with_name("hfs.png")):  # fmt: skip
        assert p.is_file() and p.stat().st_size > 0, p
    assert f"wrote {path} (2 frames" in out
    assert "truth       " in out and "calibration " in out and "preview     " in out
    doc = json.loads(path.with_name("hfs.truth.json").read_text())
    assert doc["seed"] == 3 and len(doc["frames"]) == 2


def test_sim_record_unknown_scenario_lists_the_known_ones(tmp_path):
    rc, out, err = run_cli("sim", "record", tmp_path / "x.db3", "--scenario", "nope")
    message = assert_one_line_error(rc, err, "SCENARIO_ERROR")
    assert "unknown scenario 'nope'" in message
    for name in SCENARIO_NAMES:
        assert name in message
    assert out == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_sim_record_needs_at_least_one_frame(tmp_path, frames):
    rc, _, err = run_cli("sim", "record", tmp_path / "x.db3", "--scenario", "empty-table", "--frames", frames)
    assert "--frames must be at least 1" in assert_one_line_error(rc, err, "POSITIONING_ERROR")


def test_sim_record_refuses_to_write_a_bag(tmp_path):
    rc, _, err = run_cli("sim", "record", tmp_path / "x.bag", "--scenario", "empty-table", "--frames", "1")
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("error: ") and ".db3" in err and err.count("\n") == 1


def test_sim_preview_writes_a_png(tmp_path):
    png = tmp_path / "sub" / "preview.png"
    rc, out, err = run_cli("sim", "preview", "--scenario", "second-person", "--seed", "1", "--out", png)
    assert rc == 0, err
    assert out.strip() == f"wrote {png}"
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (480, 3 * 848, 3)  # colour | depth | labels


# -- info ----------------------------------------------------------------------------------------------------
def test_info_on_a_simulated_recording(recording):
    path, _ = recording
    rc, out, err = run_cli("info", path)
    assert rc == 0, err
    assert re.search(r"^frames\s+2 over 33 ms", out, re.M)
    assert re.search(r"^depth\s+848x480 z16, fx 446\.80 fy 446\.80 ppx 426\.20 ppy 237\.90$", out, re.M)
    assert "Intel RealSense D435 (simulated) (serial SIM0000003)" in out
    assert re.search(r"^colour\s+rgb, aligned to depth$", out, re.M)
    assert re.search(r"^truth\s+scenario hfs-arms-up \(seed 3\)", out, re.M)
    assert "true isocenter" in out


def test_info_json_is_one_json_document(recording, tmp_path):
    """Regression: the truth summary used to be printed as text after the JSON, so stdout was not JSON."""
    path, _ = recording
    png = tmp_path / "info.png"
    rc, out, err = run_cli("info", path, "--json", "--preview", png)
    assert rc == 0, err
    info = json.loads(out)
    assert info["frames"] == 2 and info["depth"]["width"] == 848 and info["depth"]["height"] == 480
    assert info["depth"]["fx"] == pytest.approx(446.803, abs=1e-3)
    assert info["color"] == {"aligned": True}
    assert info["truth"][0].startswith("scenario hfs-arms-up (seed 3)")
    assert png.is_file() and f"preview     {png}" in err


def test_info_on_the_real_d435_bag(real_d435_bag):
    rc, out, err = run_cli("info", real_d435_bag)
    assert rc == 0, err
    assert re.search(r"^frames\s+1 over 0 ms", out, re.M)
    assert re.search(r"^depth\s+640x480 z16, fx 390\.43 fy 390\.43 ppx 331\.39 ppy 242\.19$", out, re.M)
    assert "Intel RealSense D435 (serial 728612070259)" in out
    assert "truth" not in out  # a real recording has no ground truth


def test_info_on_a_missing_file(tmp_path):
    rc, out, err = run_cli("info", tmp_path / "missing.db3")
    assert "missing.db3" in assert_one_line_error(rc, err, "RECORDING_NOT_FOUND")
    assert out == ""


@pytest.mark.parametrize("name", ["notes.txt", "notes.db3", "notes.bag"])
def test_info_on_a_text_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not a RealSense recording\n")
    rc, out, err = run_cli("info", path)
    assert name in assert_one_line_error(rc, err, "RECORDING_CORRUPT")
    assert out == ""


def test_info_with_a_garbled_truth_sidecar_is_a_clean_error(recording, tmp_path):
    """Regression: a truth sidecar holding a JSON list crashed ``info`` with an AttributeError traceback."""
    path, _ = recording
    copy = tmp_path / "copy.db3"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "copy.truth.json").write_text("[1, 2]")
    rc, _, err = run_cli("info", copy)
    assert "must hold a JSON object" in assert_one_line_error(rc, err, "RECORDING_ERROR")


# -- bench, parser, script -----------------------------------------------------------------------------------
def test_bench_sim_prints_median_and_p95(tmp_path):
    rc, out, err = run_cli("bench", "sim", "--frames", "2")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("simulator benchmark: scenario hfs-arms-up, 848x480, 2 frames")
    assert re.match(r"stage\s+median ms\s+p95 ms$", lines[1])
    for stage in ("render", "noise", "truth", "write", "total"):
        assert re.search(rf"^{stage}\s+\d+\.\d\s+\d+\.\d$", out, re.M), stage
    assert re.search(r"^render \+ write: \d+\.\d\d frames/s$", out, re.M)
    assert re.search(r"^recording size: \d+\.\d MB for 2 frames$", out, re.M)


def test_bench_sim_json():
    rc, out, _ = run_cli("bench", "sim", "--frames", "2", "--scenario", "empty-table", "--json")
    r = json.loads(out)
    assert rc == 0 and r["frames"] == 2 and set(r["stages"]) == {"render", "noise", "truth", "write", "total"}
    assert all(s["p95_ms"] >= s["median_ms"] > 0 for s in r["stages"].values())


def test_demo_records_and_describes(tmp_path):
    rc, out, err = run_cli(
        "demo", "--offline", "--out", tmp_path, "--frames", "2", "--scenario", "hfs-hands-chest"
    )
    assert rc == 0, err
    assert (tmp_path / "hfs-hands-chest.db3").is_file() and (tmp_path / "hfs-hands-chest.png").is_file()
    assert "read back through pyrealsense2 playback" in out and "truth       patient: HFS, arms chest" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sim"],
        ["sim", "record", "x.db3"],
        ["nonsense"],
        ["bench", "nonsense"],
        ["info"],
        ["sim", "preview"],
    ],
    ids=["nothing", "sim", "record-no-scenario", "unknown", "bench-unknown", "info", "preview-no-scenario"],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: positioning" in capsys.readouterr().err


def test_every_command_has_help():
    parser = build_parser()
    assert parser.prog == "positioning"
    for argv in (["--help"], ["sim", "record", "--help"], ["info", "--help"], ["bench", "sim", "--help"]):
        with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        assert info.value.code == 0


def test_console_script_and_module_are_wired(tmp_path):
    """The installed ``positioning`` script and ``python -m positioning.cli`` both reach ``main``."""
    script = Path(sys.executable).with_name("positioning")
    assert script.is_file(), f"console script not installed at {script}"
    listed = subprocess.run([str(script), "sim", "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == SCENARIO_NAMES
    missing = subprocess.run(
        [sys.executable, "-m", "positioning.cli", "info", str(tmp_path / "missing.db3")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.stdout == ""
    assert_one_line_error(missing.returncode, missing.stderr, "RECORDING_NOT_FOUND")


def test_bench_commands_hand_their_options_on(capsys):
    """Options after ``bench NAME`` reach the benchmark's own parser (an unknown suite is its error, not
    the top-level parser's 'unrecognized arguments')."""
    assert main(["bench", "robustness", "--suite", "no-such-suite", "--cases", "1"]) == 2
    err = capsys.readouterr().err
    assert "no-such-suite" in err and "unrecognized" not in err
    with pytest.raises(SystemExit):
        main(["protocols", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
