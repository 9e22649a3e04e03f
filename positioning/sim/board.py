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

import numpy as np

from positioning.calibration.board import Board, board_to_scanner
from positioning.sim.room import Label, Mesh, box_mesh
from positioning.sim.scenario import SessionSpec

__all__ = ["BoardPlacement", "board_mesh", "calibration_spec"]

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
    """``base``'s room, camera and light with the board on the table at ``placement``'s readings and
    nothing else on or beside it."""
    room = base.room
    mattress_top = placement.table_height_mm - placement.board.thickness_mm
    head = max(room.table_head_y_mm, placement.table_longitudinal_mm + 100.0)
    room = dataclasses.replace(
        room, mattress_top_z_mm=mattress_top, table_head_y_mm=head, clutter=(), mattress_sagitta_mm=0.0
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
