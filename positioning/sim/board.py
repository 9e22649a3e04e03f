"""The calibration board in the simulated room: a textured plate on the table at the table's readings.

:func:`calibration_spec` turns a session (its room, camera and light) into a calibration session: nobody
on the table, no blankets, staff or clutter, the table top raised or lowered and moved so that the
board, lying face up on its mattress, is where the console's readings put it
(:func:`positioning.calibration.board.board_to_scanner`). The board is a box mesh whose top face carries
the ChArUco pattern OpenCV generates (:meth:`~positioning.calibration.board.Board.image`), looked up per
ray hit.

Convention: scanner frame (IEC 61217), mm; readings as in the room file (reference readings 0: the
reading is the board origin's z and y).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from positioning.calibration.board import Board, board_to_scanner
from positioning.sim.room import Label, Mesh, box_mesh
from positioning.sim.scenario import SessionSpec

__all__ = ["BoardPlacement", "board_mesh", "calibration_spec", "record_calibration_set"]

TEXTURE_PX_PER_MM = 4.0


@dataclasses.dataclass(frozen=True)
class BoardPlacement:
    """The board and the table readings that place it (see :func:`board_to_scanner`)."""

    board: Board
    table_height_mm: float
    table_longitudinal_mm: float

    @property
    def scanner_from_board(self) -> np.ndarray:
        return board_to_scanner(self.board, self.table_height_mm, self.table_longitudinal_mm)


def board_mesh(placement: BoardPlacement) -> Mesh:
    """The plate as a box (its face at the board's z = 0, the plate below it), the pattern on its face."""
    board = placement.board
    t = placement.scanner_from_board
    w, h = board.size_mm
    corners_b = np.array([[0.0, 0.0, 0.0], [w, h, board.thickness_mm]])
    corners_s = corners_b @ t[:3, :3].T + t[:3, 3]
    box = box_mesh(corners_s.min(0), corners_s.max(0), (0.95, 0.95, 0.95), Label.BOARD)
    image = board.image(TEXTURE_PX_PER_MM).astype(np.float32) / 255.0
    inv = np.linalg.inv(t)
    rows, cols = image.shape

    def texture(points_mm: np.ndarray) -> np.ndarray:
        b = points_mm @ inv[:3, :3].T + inv[:3, 3]
        c = np.floor(b[:, 0] * TEXTURE_PX_PER_MM).astype(np.int64)
        r = np.floor(b[:, 1] * TEXTURE_PX_PER_MM).astype(np.int64)
        on_face = (np.abs(b[:, 2]) < 1.0) & (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
        value = np.full(len(points_mm), 0.95, np.float32)
        value[on_face] = 0.04 + 0.91 * image[r[on_face], c[on_face]]  # printed black is not perfectly black
        return np.repeat(value[:, None], 3, axis=1)

    return dataclasses.replace(box, texture=texture)


def calibration_spec(base: SessionSpec, placement: BoardPlacement) -> SessionSpec:
    """``base``'s room, camera and light with the board on the table at ``placement``'s readings (its top
    edge at the table's head end) and nothing else on or beside it. Replace ``board`` by None in the
    result for the same empty table without the board (the daily check's view)."""
    room = base.room
    mattress_top = placement.table_height_mm - placement.board.thickness_mm
    # the board's top edge at the table's head end (as the placement in board-charuco.yaml says)
    room = dataclasses.replace(
        room,
        mattress_top_z_mm=mattress_top,
        table_head_y_mm=placement.table_longitudinal_mm,
        clutter=(),
        mattress_sagitta_mm=0.0,
        head_holder="none",
    )
    return dataclasses.replace(
        base,
        phenotype=None,
        placement=None,
        room=room,
        staff=(),
        second_person=None,
        shift_at_frame=None,
        board=placement,
    )


def record_calibration_set(
    out_dir: str | Path,
    *,
    scenario: str = "hfs-arms-up",
    seed: int = 0,
    heights_mm: Sequence[float] = (-380.0, -220.0, -60.0),
    positions_mm: Sequence[float] = (-300.0, -900.0),
    frames: int = 3,
    board: Board | None = None,
) -> list[Path]:
    """Record the board at every pair of table readings in ``scenario``'s room and camera, as a site does
    (``calib-H-L.db3`` each, with ``calib-H-L.table.yaml`` holding the console's readings, and the truth
    and true calibration sidecars the simulator writes for evaluation)."""
    import yaml

    from positioning.calibration.board import load_board
    from positioning.calibration.workflow import readings_path
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import record_session

    board = board or load_board()
    base = sample_session(scenario, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for h in heights_mm:
        for y in positions_mm:
            spec = calibration_spec(base, BoardPlacement(board, float(h), float(y)))
            rec = out / f"calib-{h:+.0f}-{y:+.0f}.db3"
            record_session(spec, rec, frames=frames)
            readings_path(rec).write_text(
                yaml.safe_dump({"height_mm": float(h), "longitudinal_mm": float(y)}, sort_keys=False)
            )
            paths.append(rec)
    return paths
