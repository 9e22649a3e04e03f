"""The calibration board: a ChArUco board's definition, its printable image and its corners.

A board file (``calibration/board-charuco.yaml``) names OpenCV's ArUco dictionary, the squares across
(``squares_x``) and along (``squares_y``) the table, the square and marker sizes and the plate's
thickness. OpenCV's :class:`cv2.aruco.CharucoBoard` is the one source of the pattern: the printed image,
the simulator's texture and the detector all come from it.

Board frame (OpenCV's): origin at the top-left corner of the printed image, x along its columns, y down
its rows, z into the board, mm. Lying face up on the table with its top edge toward the gantry (the
placement ``board-charuco.yaml`` describes), board x is scanner +x, board y is scanner -y and board z is
scanner -z: :func:`board_to_scanner` maps board points to the scanner frame for given table readings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import yaml

from positioning import resources
from positioning.errors import CalibrationError

__all__ = ["Board", "load_board", "default_board_path", "board_to_scanner", "write_board"]

PRINT_PX_PER_MM = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Board:
    """A ChArUco board (mm)."""

    name: str
    dictionary: str
    squares_x: int
    squares_y: int
    square_mm: float
    marker_mm: float
    thickness_mm: float = 5.0

    def __post_init__(self) -> None:
        if not hasattr(cv2.aruco, self.dictionary):
            raise CalibrationError(f"unknown ArUco dictionary {self.dictionary!r}")
        if self.squares_x < 3 or self.squares_y < 3:
            raise CalibrationError("a board needs at least 3 x 3 squares")
        if not 0 < self.marker_mm < self.square_mm:
            raise CalibrationError(
                f"marker_mm must be below square_mm, got {self.marker_mm}, {self.square_mm}"
            )

    @property
    def size_mm(self) -> tuple[float, float]:
        """``(width, length)``: across and along the table."""
        return self.squares_x * self.square_mm, self.squares_y * self.square_mm

    def cv_board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_mm, self.marker_mm, d)

    def corners_mm(self) -> np.ndarray:
        """``(N, 3)`` the inner chessboard corners (the ChArUco corners) in the board frame, by id."""
        return np.asarray(self.cv_board().getChessboardCorners(), np.float64)

    def image(self, px_per_mm: float = PRINT_PX_PER_MM) -> np.ndarray:
        """The printable pattern, ``(rows, cols)`` uint8, ``px_per_mm`` pixels per millimetre, no margin."""
        w, h = self.size_mm
        size = (round(w * px_per_mm), round(h * px_per_mm))
        return self.cv_board().generateImage(size, marginSize=0, borderBits=1)


def default_board_path() -> Path:
    return resources.data_root() / "calibration" / "board-charuco.yaml"


def load_board(path: str | Path | None = None) -> Board:
    """Read a board file (default: ``calibration/board-charuco.yaml``).

    Raises:
        CalibrationError: missing or malformed file.
    """
    p = Path(path) if path is not None else default_board_path()
    if not p.is_file():
        raise CalibrationError(f"no board file {p}")
    try:
        d = yaml.safe_load(p.read_text())
        return Board(
            name=str(d["name"]),
            dictionary=str(d["dictionary"]),
            squares_x=int(d["squares_x"]),
            squares_y=int(d["squares_y"]),
            square_mm=float(d["square_mm"]),
            marker_mm=float(d["marker_mm"]),
            thickness_mm=float(d.get("thickness_mm", 5.0)),
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"board file {p} is malformed: {e}") from e


def board_to_scanner(
    board: Board,
    table_height_mm: float,
    table_longitudinal_mm: float,
    *,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
) -> np.ndarray:
    """``(4, 4)`` board frame -> scanner frame for the table's readings.

    At the reference readings the board's origin lies at the isocenter's height (z = 0) and in the scan
    plane (y = 0), laterally half the board's width left of the centre line (the board centred on the
    table); the table's travel moves it along +y (readings increasing into the gantry) and +z.
    """
    width, _ = board.size_mm
    t = np.eye(4)
    t[:3, :3] = np.diag([1.0, -1.0, -1.0])
    t[:3, 3] = (
        -width / 2,
        table_longitudinal_mm - reference_longitudinal_mm,
        table_height_mm - reference_height_mm,
    )
    return t


def write_board(board: Board, out: str | Path) -> Path:
    """Write the board at scale: PNG (10 px per mm, its DPI recorded) or PDF (the page is the board).

    Raises:
        CalibrationError: another file type.
    """
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = board.image()
    if p.suffix.lower() == ".png":
        from PIL import Image

        dpi = PRINT_PX_PER_MM * 25.4
        Image.fromarray(img).save(p, dpi=(dpi, dpi))
        return p
    if p.suffix.lower() == ".pdf":
        from matplotlib.backends.backend_pdf import FigureCanvasPdf
        from matplotlib.figure import Figure

        w, h = board.size_mm
        fig = Figure(figsize=(w / 25.4, h / 25.4))
        FigureCanvasPdf(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        fig.savefig(p, dpi=PRINT_PX_PER_MM * 25.4)
        return p
    raise CalibrationError(f"the board is written as .png or .pdf, not {p.suffix!r}")
