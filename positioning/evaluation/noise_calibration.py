"""Calibrate the simulated depth noise against a real RealSense recording, and report real vs simulated.

Procedure (:func:`compare_noise_to_reference`):

1. Read the first depth frame of the recording with pyrealsense2 (playback, not real time) and its
   focal length (:func:`load_reference_depth`).
2. Build a like-for-like ideal scene from it (:func:`reference_surface`): cut the real depth into smooth
   segments at its discontinuities, smooth each segment on its own with a wide normalised Gaussian (so the
   noise goes and the edges stay sharp), and fill the holes with the farther neighbouring depth (stereo
   holes lie on the background side of edges). The result is the "true" surface of the same room, seen
   with the same intrinsics.
3. Run that surface through :func:`positioning.sim.noise.apply_depth_noise` with the real focal length.
4. Compute :func:`positioning.evaluation.depth_stats.depth_statistics` of both images (plus the flat-
   region noise at several window sizes on the far wall, which pins the spatial correlation) and put
   them side by side.

The defaults of :data:`positioning.sim.noise.D435_NOISE` were tuned by hand until the two columns
agreed; the table printed by ``python -m positioning.evaluation.noise_calibration [PATH]`` is the record.

Convention: depth is z in millimetres, ``(H, W)`` uint16, 0 = invalid, pixel origin top-left.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from positioning.errors import (
    CorruptRecordingError,
    MissingStreamError,
    RecordingError,
    RecordingNotFoundError,
)
from positioning.evaluation.depth_stats import (
    depth_statistics,
    discontinuity_mask,
    fill_rows_with_background,
    local_plane_noise,
)
from positioning.sim.noise import D435_NOISE, DepthNoiseParams, apply_depth_noise

__all__ = [
    "REFERENCE_BAG_NAME",
    "default_reference_path",
    "load_reference_depth",
    "reference_surface",
    "compare_noise_to_reference",
    "format_comparison",
    "main",
]

#: The real D435 recording shipped in the shared data folder (librealsense test resource, Apache-2.0).
REFERENCE_BAG_NAME = "d435_single_depth_color_640x480.bag"

#: Window sizes (pixels) of the multi-scale flat-region noise figures on the far wall.
_SCALE_WINDOWS_PX = (9, 15, 31)
#: Depth bins of the per-depth noise rows.
_DEPTH_BIN_MM = 250.0
#: Tiles deeper than this belong to the far wall of the reference scene (it is at about 1.7-1.8 m).
_FAR_WALL_MIN_MM = 1500.0


def default_reference_path() -> Path:
    """The reference recording: ``$POSITIONING_SHARED_DIR/data/<name>``, else ``../shared/data/<name>``.

    ``../shared`` is the sibling of the repository root (the folder holding ``pyproject.toml``).
    """
    shared = os.environ.get("POSITIONING_SHARED_DIR")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    return base / "data" / REFERENCE_BAG_NAME


def load_reference_depth(path: str | Path) -> tuple[np.ndarray, float]:
    """Read the first depth frame of a RealSense recording (``.bag`` or ``.db3``) with pyrealsense2.

    Args:
        path: the recording.

    Returns:
        ``(depth_mm, focal_px)``: ``(H, W)`` uint16 z-depth in millimetres (rescaled if the recording's
        depth units are not 1 mm), 0 = invalid; and the depth stream's horizontal focal length ``fx``.

    Raises:
        RecordingNotFoundError: the file does not exist.
        CorruptRecordingError: pyrealsense2 cannot play it.
        MissingStreamError: it has no depth frame.
    """
    import pyrealsense2 as rs  # imported here: only this loader needs the native library

    path = Path(path)
    if not path.is_file():
        raise RecordingNotFoundError(f"recording not found: {path}")
    pipe = rs.pipeline()
    cfg = rs.config()
    try:
        cfg.enable_device_from_file(str(path), repeat_playback=False)
        profile = pipe.start(cfg)
    except RuntimeError as e:
        raise CorruptRecordingError(f"pyrealsense2 cannot play {path}: {e}") from e
    try:
        profile.get_device().as_playback().set_real_time(False)
        try:
            frames = pipe.wait_for_frames(10_000)
        except RuntimeError as e:
            raise MissingStreamError(f"no frames in {path}: {e}") from e
        depth = frames.get_depth_frame()
        if not depth:
            raise MissingStreamError(f"no depth frame in the first frameset of {path}")
        units_m = float(depth.get_units())
        raw = np.asanyarray(depth.get_data()).copy()
        fx = float(depth.profile.as_video_stream_profile().get_intrinsics().fx)
    finally:
        pipe.stop()
    if abs(units_m - 0.001) > 1e-7:
        raw = np.clip(np.rint(raw.astype(np.float64) * units_m * 1000.0), 0, 65535).astype(np.uint16)
    return raw.astype(np.uint16), fx


def reference_surface(depth_mm: np.ndarray, *, smooth_px: float = 16.0, min_area_px: int = 400) -> np.ndarray:
    """An ideal, noise-free z-depth of the scene in a real depth frame (the simulator's input).

    The depth is cut into segments at its discontinuities (:func:`discontinuity_mask`, radius 1); each
    segment of at least ``min_area_px`` pixels is smoothed on its own by normalised Gaussian convolution
    (sigma ``smooth_px``), smaller bits keep a 5x5 median. Holes are then filled along their row with the
    farther of the two neighbouring depths (:func:`fill_rows_with_background`), which puts occlusion holes
    on the background side of the edge, where they are; rows without any depth grow from their neighbours.

    Args:
        depth_mm: ``(H, W)`` uint16 real depth in mm, 0 = invalid.
        smooth_px: Gaussian sigma of the per-segment smoothing, pixels.
        min_area_px: smallest segment smoothed on its own.

    Returns:
        ``(H, W)`` float32 depth in mm, finite wherever the frame had any valid pixel.

    Raises:
        ValueError: ``depth_mm`` is not a 2-D uint16 array or has no valid pixel.
    """
    if not isinstance(depth_mm, np.ndarray) or depth_mm.ndim != 2 or depth_mm.dtype != np.uint16:
        raise ValueError(
            f"depth_mm must be a (H, W) uint16 array, got {getattr(depth_mm, 'dtype', type(depth_mm))} "
            f"{getattr(depth_mm, 'shape', '')}"
        )
    valid = depth_mm > 0
    if not valid.any():
        raise ValueError("depth_mm has no valid pixel")
    z = depth_mm.astype(np.float32)
    step = discontinuity_mask(depth_mm, radius_px=1)
    n_lab, labels = cv2.connectedComponents((valid & ~step).astype(np.uint8), connectivity=4)
    out = np.where(valid, cv2.medianBlur(depth_mm, 5).astype(np.float32), np.nan).astype(np.float32)
    areas = np.bincount(labels.ravel(), minlength=n_lab)
    for k in range(1, n_lab):
        if areas[k] < min_area_px:
            continue
        sel = labels == k
        m = sel.astype(np.float32)
        num = cv2.GaussianBlur(z * m, (0, 0), smooth_px)
        den = cv2.GaussianBlur(m, (0, 0), smooth_px)
        out[sel] = num[sel] / den[sel]
    out = fill_rows_with_background(out)  # holes: the farther of the two neighbours in the row
    filled = np.isfinite(out)
    k3 = np.ones((3, 3), np.uint8)
    while not filled.all():  # rows with no depth at all: grow from the rows above and below
        far = cv2.dilate(np.where(filled, out, 0.0).astype(np.float32), k3)
        newly = ~filled & (far > 0)
        if not newly.any():
            break
        out[newly] = far[newly]
        filled |= newly
    return out


def _far_wall_scales(depth_mm: np.ndarray) -> dict[str, float]:
    """Flat-region noise on the far wall at several window sizes (pins amplitude and correlation)."""
    exclude = discontinuity_mask(depth_mm)
    out: dict[str, float] = {}
    for w in _SCALE_WINDOWS_PX:
        lp = local_plane_noise(depth_mm, window_px=w, exclude=exclude)
        far = lp.depth_mm > _FAR_WALL_MIN_MM
        out[f"far_wall_sigma_w{w}_mm"] = float(np.median(lp.sigma_mm[far])) if far.any() else math.nan
    return out


def compare_noise_to_reference(
    path: str | Path | None = None,
    params: DepthNoiseParams = D435_NOISE,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics of the real recording next to those of its simulated twin.

    Args:
        path: the real recording; defaults to :func:`default_reference_path`.
        params: noise model to test.
        seed: seed of the simulation's random generator.

    Returns:
        ``{"path", "focal_px", "params", "real", "sim", "rows"}``: ``real`` and ``sim`` are flat dicts of
        figures (the :class:`~positioning.evaluation.depth_stats.DepthStats` fields plus the far-wall
        multi-scale noise), ``rows`` a list of ``(name, real, sim)`` for the printed table.

    Raises:
        RecordingError: the recording cannot be read (see :func:`load_reference_depth`).
    """
    path = Path(path) if path is not None else default_reference_path()
    real_mm, focal_px = load_reference_depth(path)
    truth_mm = reference_surface(real_mm)
    sim_mm = apply_depth_noise(truth_mm, focal_px, np.random.default_rng(seed), params)

    def figures(img: np.ndarray) -> dict[str, float]:
        s = depth_statistics(img, focal_px, baseline_mm=params.baseline_mm, depth_bin_mm=_DEPTH_BIN_MM)
        d = {k: v for k, v in s.as_dict().items() if k != "noise_by_depth"}
        for b in s.noise_by_depth:
            lo = int(b.depth_mm // _DEPTH_BIN_MM * _DEPTH_BIN_MM)
            d[f"sigma_mm z={lo}-{lo + int(_DEPTH_BIN_MM)}mm"] = b.sigma_mm
        d.update(_far_wall_scales(img))
        return d

    real = figures(real_mm)
    sim = figures(sim_mm)
    names = [k for k in real if k not in ("height", "width")] + [k for k in sim if k not in real]
    rows = [(k, real.get(k, math.nan), sim.get(k, math.nan)) for k in names]
    return {
        "path": str(path),
        "focal_px": focal_px,
        "params": params,
        "real": real,
        "sim": sim,
        "rows": rows,
    }


def format_comparison(result: dict[str, Any]) -> str:
    """Render :func:`compare_noise_to_reference`'s result as a side-by-side text table."""
    lines = [
        f"reference: {result['path']}",
        f"focal_px: {result['focal_px']:.3f}   baseline_mm: {result['params'].baseline_mm:g}",
        f"{'statistic':<34}{'real':>12}{'simulated':>12}{'sim/real':>10}",
        "-" * 68,
    ]
    for name, r, s in result["rows"]:
        ratio = s / r if (isinstance(r, float | int) and r not in (0, 0.0) and math.isfinite(r)) else math.nan
        lines.append(f"{name:<34}{_fmt(r):>12}{_fmt(s):>12}{_fmt(ratio):>10}")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    """Print the real-vs-simulated noise table for a recording (default: the shared D435 recording).

    Args:
        argv: command-line arguments (``[PATH] [--seed N]``); defaults to ``sys.argv[1:]``.

    Returns:
        Process exit code: 0, or 2 when the recording cannot be read.
    """
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.noise_calibration",
        description="Compare the simulated RealSense depth noise (D435_NOISE) with a real recording.",
    )
    parser.add_argument("path", nargs="?", default=None, help="RealSense recording (.bag/.db3)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    args = parser.parse_args(argv)
    try:
        result = compare_noise_to_reference(args.path, D435_NOISE, seed=args.seed)
    except RecordingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_comparison(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
