"""Benchmark: camera-to-scanner calibration and its daily check against the simulator's true transform.

For each room (a session's room, camera and light: the named scenarios' and the randomised world's, so
camera heights, tilts, sensors and noise vary), the board is recorded at three table heights and two
longitudinal positions (:func:`~positioning.sim.board.record_calibration_set`), calibrated through the
command's own path (:func:`~positioning.calibration.workflow.calibrate_recordings`) and compared with the
truth (evaluation only):

* the camera's position (mm) and rotation (deg) errors;
* the error where it matters: scanner points of the working volume (over the table, 0.3 m around the
  isocenter's height) mapped through the estimated instead of the true transform (RMS and max, mm);
* the daily check on the empty table (the table-only form) and on the board at one reading, with the
  new calibration (it must pass) and with a deliberately wrong one (0.5 deg and 3 mm: it must fail);
* the effect of a wrong calibration on the plan: the vertical isocenter of a patient in the same room,
  planned with the true calibration and with one rotated 0.5 / 1 deg about x or shifted 5 mm in z.

Run ``positioning bench calibration [--rooms N] [--jobs 2] [--json FILE]``.

Convention: scanner frame (IEC 61217), mm and degrees.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ROOMS", "perturbed", "run_room", "summarize", "main"]

#: Rooms: (scenario, seed). The world's seeds 960000+ are used nowhere else.
ROOMS: tuple[tuple[str, int], ...] = (
    ("hfs-arms-up", 0),
    ("tilted-d455", 0),
    ("obese", 0),
    *(("world", 960000 + k) for k in range(9)),
)


def perturbed(m: np.ndarray, *, rot_x_deg: float = 0.0, dz_mm: float = 0.0, dx_mm: float = 0.0) -> np.ndarray:
    """A camera-to-scanner transform rotated about the scanner's x axis (through the isocenter), shifted."""
    a = np.radians(rot_x_deg)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    out = m.copy()
    out[:3, :3] = r @ m[:3, :3]
    out[:3, 3] = r @ m[:3, 3] + np.array([dx_mm, 0.0, dz_mm])
    return out


def _volume_error(est: np.ndarray, true: np.ndarray, table_top_z_mm: float) -> tuple[float, float]:
    xs, ys, zs = np.meshgrid(
        np.linspace(-250, 250, 5),
        np.linspace(-1800, -400, 8),
        np.linspace(table_top_z_mm, table_top_z_mm + 300, 4),
        indexing="ij",
    )
    p = np.stack([xs.ravel(), ys.ravel(), zs.ravel(), np.ones(xs.size)], 1)
    cam = p @ np.linalg.inv(true).T
    err = np.linalg.norm((cam @ est.T)[:, :3] - p[:, :3], axis=1)
    return float(np.sqrt(np.mean(err**2))), float(err.max())


def _write_cal(path: Path, m: np.ndarray) -> Path:
    from positioning.frames import Calibration

    Calibration(scanner_from_camera=m, method="test").save(path)
    return path


def run_room(scenario: str, seed: int) -> dict[str, Any]:
    """Calibrate one room and check it (see the module docstring)."""
    from positioning.calibration.board import load_board
    from positioning.calibration.workflow import (
        calibrate_recordings,
        check_recording,
        transform_error,
        write_room_file,
    )
    from positioning.evaluation.truth import load_truth
    from positioning.native_log import quiet_native_stderr
    from positioning.sim.board import BoardPlacement, calibration_spec, record_calibration_set
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import record_session

    t0 = time.perf_counter()
    board = load_board()
    base = sample_session(scenario, seed)
    row: dict[str, Any] = {
        "room": f"{scenario}@{seed}",
        "camera": base.rig.model,
        "resolution": f"{base.rig.intrinsics.width}x{base.rig.intrinsics.height}",
        "tilt_deg": round(base.rig.tilt_deg, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp, quiet_native_stderr():
        d = Path(tmp)
        recs = record_calibration_set(d, scenario=scenario, seed=seed, frames=2, board=board)
        true = np.array(load_truth(recs[0])["camera"]["camera_to_scanner"])
        row["height_above_table_mm"] = round(float(true[2, 3] - base.room.mattress_top_z_mm), 0)
        try:
            result, _views, frame = calibrate_recordings(recs, board=board)
        except Exception as e:  # a room that fails is a result
            row["failure"] = f"{type(e).__name__}: {e}"
            return row
        room = write_room_file(d / "room.yaml", result, board, frame, recordings=recs)
        dt, dr = transform_error(result.camera_to_scanner, true)
        rms, worst = _volume_error(result.camera_to_scanner, true, base.room.mattress_top_z_mm)
        row.update(
            translation_mm=dt,
            rotation_deg=dr,
            volume_rms_mm=rms,
            volume_max_mm=worst,
            reprojection_px=result.reprojection_px,
            depth_residual_mm=result.depth_residual_mm,
        )
        # the daily check: the empty table at a reading, and the board at one
        h, y = -200.0, -500.0
        empty = dataclasses.replace(calibration_spec(base, BoardPlacement(board, h, y)), board=None)
        record_session(empty, d / "empty.db3", frames=6)
        ok_table, _ = check_recording(d / "empty.db3", room, table_height_mm=h, table_position_mm=y)
        ok_board, _ = check_recording(recs[2], room, table_height_mm=-220.0, table_position_mm=-300.0)
        wrong = _write_cal(d / "wrong.yaml", perturbed(result.camera_to_scanner, rot_x_deg=0.5, dx_mm=3.0))
        bad_table, _ = check_recording(d / "empty.db3", wrong, table_height_mm=h, table_position_mm=y)
        bad_board, _ = check_recording(recs[2], wrong, table_height_mm=-220.0, table_position_mm=-300.0)
        row.update(
            check_table_pass=ok_table.passed,
            check_board_pass=ok_board.passed,
            check_table_catches_wrong=bad_table.status == "fail",
            check_board_catches_wrong=bad_board.status == "fail",
            check_table_status=ok_table.status,
            check_board_status=ok_board.status,
            wrong_table_status=bad_table.status,
            wrong_board_status=bad_board.status,
            check_table=ok_table.to_json(),
            check_board=ok_board.to_json(),
        )
        row["iso_shift_mm"] = _iso_effect(base, true, d) if base.placement is not None else None
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _iso_effect(base: Any, true: np.ndarray, d: Path) -> dict[str, float]:
    """Vertical isocenter shift of a chest plan when the calibration is wrong by each perturbation."""
    from positioning.service.replay import run_session
    from positioning.service.session import SessionRequest
    from positioning.sim.session import record_session

    rec = d / "patient.db3"
    record_session(dataclasses.replace(base, shift_at_frame=None), rec, frames=2)
    out: dict[str, float] = {}
    plans = {}
    for name, m in (
        ("true", true),
        ("rot_x_0.5deg", perturbed(true, rot_x_deg=0.5)),
        ("rot_x_1deg", perturbed(true, rot_x_deg=1.0)),
        ("dz_5mm", perturbed(true, dz_mm=5.0)),
    ):
        cal = _write_cal(d / f"{name}.yaml", m)
        run = run_session(
            rec,
            SessionRequest(protocol="chest", expected_position=str(base.placement.position)),
            calibration=cal,
            landmarks="depth",
        )
        plans[name] = run.plan
    ref = plans["true"]
    for name, plan in plans.items():
        if name != "true" and plan.isocenter is not None and ref.isocenter is not None:
            out[name] = round(plan.isocenter.z_mm - ref.isocenter.z_mm, 2)
    return out


def _work(args: tuple[str, int]) -> dict[str, Any]:
    return run_room(*args)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "failure" not in r]

    def mp(key: str) -> dict[str, float]:
        a = np.asarray([r[key] for r in ok], float)
        return (
            {
                "median": round(float(np.median(a)), 3),
                "p95": round(float(np.percentile(a, 95)), 3),
                "max": round(float(a.max()), 3),
            }
            if len(a)
            else {}
        )

    def share(key: str) -> float | None:
        return round(float(np.mean([bool(r[key]) for r in ok])), 3) if ok else None

    def outcomes(key: str) -> dict[str, int]:
        return {k: sum(r.get(key) == k for r in ok) for k in ("pass", "inconclusive", "fail")}

    iso: dict[str, list[float]] = {}
    for r in ok:
        for k, v in (r.get("iso_shift_mm") or {}).items():
            iso.setdefault(k, []).append(abs(v))
    return {
        "rooms": len(rows),
        "failures": [r["room"] + ": " + r["failure"] for r in rows if "failure" in r],
        "translation_mm": mp("translation_mm"),
        "rotation_deg": mp("rotation_deg"),
        "volume_rms_mm": mp("volume_rms_mm"),
        "volume_max_mm": mp("volume_max_mm"),
        "reprojection_px": mp("reprojection_px"),
        "check_table_passes": share("check_table_pass"),
        "check_board_passes": share("check_board_pass"),
        "check_table_catches_wrong": share("check_table_catches_wrong"),
        "check_board_catches_wrong": share("check_board_catches_wrong"),
        "iso_shift_abs_mm": {k: round(float(np.median(v)), 2) for k, v in iso.items()},
        "right_outcomes": {"table": outcomes("check_table_status"), "board": outcomes("check_board_status")},
        "wrong_outcomes": {"table": outcomes("wrong_table_status"), "board": outcomes("wrong_board_status")},
    }


def format_report(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["calibration vs the simulator's true transform (median / p95 / max)"]
    for key, unit in (
        ("translation_mm", "mm (camera position)"),
        ("rotation_deg", "deg"),
        ("volume_rms_mm", "mm RMS over the working volume"),
        ("volume_max_mm", "mm max there"),
        ("reprojection_px", "px reprojection"),
    ):
        s = summary[key]
        if s:
            lines.append(f"  {key:18s} {s['median']:.3f} / {s['p95']:.3f} / {s['max']:.3f} {unit}")

    def counts(o: dict[str, int]) -> str:
        return f"{o['pass']} pass / {o['inconclusive']} inconclusive / {o['fail']} fail"

    for form in ("table", "board"):
        lines.append(
            f"  daily check from the {form}: right calibration {counts(summary['right_outcomes'][form])}; "
            f"wrong by 0.5 deg + 3 mm {counts(summary['wrong_outcomes'][form])}"
        )
    lines.append(
        f"  |vertical isocenter shift| from a wrong calibration (median): {summary['iso_shift_abs_mm']}"
    )
    for r in rows:
        if "failure" in r:
            lines.append(f"  {r['room']}: FAILED {r['failure']}")
        else:
            lines.append(
                f"  {r['room']:16s} {r['camera']} {r['resolution']:9s} tilt {r['tilt_deg']:4.1f} "
                f"height {r['height_above_table_mm']:.0f}: t {r['translation_mm']:.2f} mm, "
                f"r {r['rotation_deg']:.3f} deg, "
                f"volume {r['volume_rms_mm']:.2f}/{r['volume_max_mm']:.2f} mm, "
                f"checks right {r['check_table_status']}/{r['check_board_status']}, "
                f"wrong {r['wrong_table_status']}/{r['wrong_board_status']}"
            )
    lines.extend(f"  failed: {f}" for f in summary["failures"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="positioning bench calibration", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--rooms", type=int, default=len(ROOMS), help=f"the first N rooms (default {len(ROOMS)})"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    t0 = time.perf_counter()
    work = list(ROOMS[: args.rooms])
    rows = []
    bar = tqdm(total=len(work), desc="calibration", unit="room", file=sys.stderr)
    if args.jobs <= 1:
        for w in work:
            rows.append(_work(w))
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # an executor, not a Pool: a worker that dies (a native crash) fails the run instead of hanging it
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            for r in pool.map(_work, work):
                rows.append(r)
                bar.update()
    bar.close()
    summary = summarize(rows)
    print(format_report(summary, rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "rooms": rows}, indent=1, default=str))
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
