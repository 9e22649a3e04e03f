"""The scene network: shapes, the read-out of its outputs into scanner coordinates, and model files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from positioning.perception.landmarks.base import LandmarkModelError, ModelNotFoundError
from positioning.perception.planview import PlanViewSettings, plan_view
from positioning.perception.scene_net import (
    ARM_STATES,
    CLASSES,
    COVERS,
    HEIGHT_SCALE_MM,
    KEYPOINTS,
    POSITIONS,
    SCENE_NET_SCHEMA,
    build_scene_net,
    decode,
    default_scene_net_path,
    load_scene_net,
    soft_argmax_2d,
)

SMALL = PlanViewSettings(cell_mm=20.0, rows=32, cols=16)


def test_network_shapes():
    net = build_scene_net(len(KEYPOINTS)).eval()
    with torch.inference_mode():
        out = net(torch.zeros(2, 4, SMALL.rows, SMALL.cols))
    assert out["cells"].shape == (2, len(CLASSES) + 1 + 3 * len(KEYPOINTS), 16, 8)
    assert out["globals"].shape == (2, len(POSITIONS) + len(ARM_STATES) + len(COVERS) + 1)


def test_soft_argmax_pins():
    logits = torch.full((1, 2, 5, 7), -1e4)
    logits[0, 0, 3, 1] = 0.0  # all weight on row 3, column 1
    logits[0, 1, 2, 2] = logits[0, 1, 2, 3] = 0.0  # half on (2, 2), half on (2, 3)
    rc, w = soft_argmax_2d(logits)
    np.testing.assert_allclose(rc[0].numpy(), [[3.0, 1.0], [2.0, 2.5]], atol=1e-6)
    assert float(w.sum()) == pytest.approx(2.0)


def test_decode_maps_output_cells_to_the_scanner_frame():
    """A heat map peaked at output cell (5, 3) reads as that cell's centre: x = x0 + 3.5 * 40 mm,
    y = y0 + 5.5 * 40 mm, and the height map's value there times the height scale."""
    pv = plan_view(np.array([[0.0, -1000.0, -100.0]]), SMALL, centre_y_mm=-1000.0)
    k = len(KEYPOINTS)
    n = len(CLASSES)
    cells = torch.zeros(n + 1 + 3 * k, 16, 8)
    cells[n + 1 : n + 1 + k] = -1e4
    cells[n + 1 + KEYPOINTS.index("left_hip"), 5, 3] = 0.0
    cells[n + 1 + k + KEYPOINTS.index("left_hip"), 5, 3] = 0.5  # height
    cells[n + 1 + 2 * k + KEYPOINTS.index("left_hip"), 5, 3] = 2.0  # confidence logit
    cells[CLASSES.index("support")] = 5.0
    glob = torch.zeros(len(POSITIONS) + len(ARM_STATES) + len(COVERS) + 1)
    glob[-1] = -0.3  # the table at z -150 mm (heights scaled by 500)
    glob[POSITIONS.index("FFDL")] = 5.0
    out = decode(cells, glob, pv, KEYPOINTS)
    x0, y0 = pv.origin_mm
    np.testing.assert_allclose(out.keypoints_xy_mm["left_hip"], [x0 + 3.5 * 40.0, y0 + 5.5 * 40.0])
    assert out.keypoints_height_mm["left_hip"] == pytest.approx(0.5 * HEIGHT_SCALE_MM)
    assert out.keypoint_confidence["left_hip"] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    assert out.position[0] == "FFDL" and out.position[1] > 0.9
    assert out.cell_mm == 40.0 and out.prob("support").min() > 0.9 and out.table_z_mm == pytest.approx(-150.0)
    # a scanner point falls in the output cell whose centre is nearest
    p = np.array([[x0 + 3.5 * 40.0, y0 + 5.5 * 40.0, 0.0]])
    assert out.at(out.class_prob[CLASSES.index("support")], p)[0] > 0.9
    assert out.cell_of(p[:, 0], p[:, 1]) == (np.array([5]), np.array([3]))


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_scene_net(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(LandmarkModelError, match="cannot be read"):
        load_scene_net(bad)
    wrong = tmp_path / "wrong.pt"
    buf = io.BytesIO()
    torch.save({"schema": "something/else"}, buf)
    wrong.write_bytes(buf.getvalue())
    with pytest.raises(LandmarkModelError, match="schema"):
        load_scene_net(wrong)
    broken = tmp_path / "broken.pt"
    buf = io.BytesIO()
    torch.save({"schema": SCENE_NET_SCHEMA, "keypoints": list(KEYPOINTS)}, buf)
    broken.write_bytes(buf.getvalue())
    with pytest.raises(LandmarkModelError, match="malformed"):
        load_scene_net(broken)


@pytest.mark.skipif(not default_scene_net_path().is_file(), reason="models/scene_net.pt is not built")
def test_shipped_network_loads_and_refuses_a_mismatched_grid():
    net = load_scene_net()
    assert net.keypoints == KEYPOINTS
    with pytest.raises(ValueError, match="does not match"):
        net.predict(plan_view(np.zeros((3, 3)), SMALL))


def test_both_model_schemas_load_and_only_the_second_reads_the_table_height():
    """``/1`` files (no table-height head) load and say NaN; ``/2`` files carry a head whose input is
    detached, so its loss cannot move the features the other heads share."""
    from positioning.perception.scene_net import SCENE_NET_SCHEMAS, SceneNet

    pts = np.array([[0.0, -1000.0, -150.0], [100.0, -900.0, -40.0]])
    settings = {"cell_mm": SMALL.cell_mm, "rows": SMALL.rows, "cols": SMALL.cols}
    for schema, head in zip(SCENE_NET_SCHEMAS, (False, True), strict=True):
        net = build_scene_net(len(KEYPOINTS), table_head=head)
        state = {
            "schema": schema, "keypoints": list(KEYPOINTS), "plan_view": settings,
            "widths": [16, 32, 48, 64], "weights": net.state_dict(),
        }  # fmt: skip
        out = SceneNet(state, source=schema).predict(plan_view(pts, SMALL))
        assert np.isfinite(out.table_z_mm) == head
    net = build_scene_net(len(KEYPOINTS), table_head=True)
    x = torch.randn(2, 4, SMALL.rows, SMALL.cols)
    net(x)["globals"][:, -1].sum().backward()
    assert all(
        p.grad is None or not p.grad.any() for n, p in net.named_parameters() if not n.startswith("table")
    )
    assert any(
        p.grad is not None and p.grad.any() for n, p in net.named_parameters() if n.startswith("table")
    )


def test_withheld_outputs_are_not_reported():
    """A model file can withhold outputs whose held-out figures carry no information: no blanket class,
    no table height; an unknown name is refused."""
    from positioning.perception.scene_net import SCENE_NET_SCHEMA, SceneNet

    pts = np.array([[0.0, -1000.0, -150.0], [100.0, -900.0, -40.0]])
    settings = {"cell_mm": SMALL.cell_mm, "rows": SMALL.rows, "cols": SMALL.cols}
    state = {
        "schema": SCENE_NET_SCHEMA, "keypoints": list(KEYPOINTS), "plan_view": settings,
        "widths": [16, 32, 48, 64], "weights": build_scene_net(len(KEYPOINTS)).state_dict(),
    }  # fmt: skip
    full = SceneNet(state).predict(plan_view(pts, SMALL))
    assert full.cover[0] in ("none", "legs", "chest") and np.isfinite(full.table_z_mm)
    out = SceneNet(state | {"withheld": ["cover", "table_height"]}).predict(plan_view(pts, SMALL))
    assert out.cover == (None, 0.0) and np.isnan(out.table_z_mm)
    assert out.position == full.position  # the other outputs are untouched
    with pytest.raises(LandmarkModelError, match="withheld"):
        SceneNet(state | {"withheld": ["arms"]})
