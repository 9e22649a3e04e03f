"""The plan overlay: projection convention and an image written to disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from planning_builders import make_state

from positioning.planning.anatomy import PRIOR_RULES, LandmarkModel
from positioning.planning.isocenter import IsocenterModel
from positioning.planning.overlay import draw_plan, project_points, save_overlay
from positioning.planning.plan import make_plan
from positioning.planning.protocol import load_protocol
from positioning.sim.rig import CameraRig


@pytest.fixture
def rig() -> CameraRig:
    # lopsided on purpose: camera off the table's axis, D455 intrinsics (fx != fy is not available, but
    # cx != W / 2 and W != H are)
    return CameraRig(model="D455", width=848, height=480, position_mm=(120.0, -1250.0, 1600.0))


def test_projection_of_the_optical_axis_point(rig: CameraRig) -> None:
    """The look-at point projects to the principal point; a point toward +x (scanner) moves along the
    image axis the rig maps +x to."""
    cal, k = rig.calibration(), rig.intrinsics
    uv = project_points(np.array([rig.look_at_mm, np.add(rig.look_at_mm, (100.0, 0.0, 0.0))]), cal, k)
    np.testing.assert_allclose(uv[0], [k.ppx, k.ppy], atol=1e-6)
    assert np.linalg.norm(uv[1] - uv[0]) > 10
    behind = project_points(np.array([[120.0, -1250.0, 2000.0]]), cal, k)
    assert np.isnan(behind).all()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(np.zeros(3), cal, k)


def test_overlay_writes_an_image(rig: CameraRig, tmp_path: Path) -> None:
    plan = make_plan(
        make_state("HFS", y_shoulders_mm=-1000.0),
        load_protocol("chest"),
        isocenter_model=IsocenterModel.half_ellipse(),
        landmark_model=LandmarkModel(rules=dict(PRIOR_RULES)),
    )
    k = rig.intrinsics
    blank = np.full((k.height, k.width, 3), 40, np.uint8)
    img = draw_plan(blank, plan, rig.calibration(), k)
    assert img.shape == blank.shape and img.dtype == np.uint8
    assert (img != blank).any(axis=2).mean() > 0.01  # the range band, lines, landmarks
    assert (blank == 40).all()  # the input is not changed
    out = save_overlay(tmp_path / "sub" / "plan.png", img)
    back = cv2.imread(str(out))
    assert back is not None and back.shape == img.shape
    with pytest.raises(ValueError, match="uint8"):
        draw_plan(blank.astype(np.float32), plan, rig.calibration(), k)
