"""Level network: input planes, shapes, the model file, and the head-first / feet-first convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from planning_builders import body_points, make_table  # noqa: E402  (tests/planning on sys.path)

from positioning.perception.heightmap import height_map  # noqa: E402
from positioning.planning.anatomy import PLANNING_LANDMARKS  # noqa: E402
from positioning.planning.level_net import (  # noqa: E402
    IN_CHANNELS,
    LEVEL_NET_SCHEMA,
    OUT_BINS,
    bin_centres_mm,
    build_level_net,
    input_planes,
    load_level_net,
)


def test_input_planes_encode_height_occupancy_posture_and_arms() -> None:
    h = np.zeros((256, 72), np.float32)
    h[100, 30] = 150.0
    c = (h > 0).astype(np.int32)
    x = input_planes(h, c, "prone", "raised")
    assert x.shape == (IN_CHANNELS, 256, 72) and x.dtype == np.float32
    assert x[0, 100, 30] == pytest.approx(0.5) and x[1].sum() == 1
    assert np.all(x[3] == 1) and np.all(x[2] == 0) and np.all(x[6] == 1)
    assert np.all(input_planes(h, c, "supine", None)[5:] == 0)
    with pytest.raises(ValueError, match="posture"):
        input_planes(h, c, "standing", None)
    with pytest.raises(ValueError, match="arms"):
        input_planes(h, c, "supine", "waving")


def test_network_output_shape() -> None:
    net = build_level_net(len(PLANNING_LANDMARKS), width=4).eval()
    with torch.inference_mode():
        y, direction = net(torch.zeros(2, IN_CHANNELS, 256, 72))
    assert tuple(y.shape) == (2, len(PLANNING_LANDMARKS), OUT_BINS)
    assert tuple(direction.shape) == (2,)
    centres = bin_centres_mm(256, 10.0)
    assert centres[0] == pytest.approx(-1270.0) and centres[-1] == pytest.approx(1270.0)


def _model_file(tmp_path: Path, width: int = 4) -> Path:
    torch.manual_seed(0)
    net = build_level_net(len(PLANNING_LANDMARKS), width)
    sig = dict.fromkeys(PLANNING_LANDMARKS, 10.0)
    state = {
        "schema": LEVEL_NET_SCHEMA, "landmarks": list(PLANNING_LANDMARKS), "width": width, "rows": 256,
        "cols": 72, "cell_mm": 10.0,
        "sigma_mm": {"all": sig, "prone": dict.fromkeys(PLANNING_LANDMARKS, 20.0)},
        "spread_ref_mm": dict.fromkeys(PLANNING_LANDMARKS, 1e6), "training": {"note": "test"},
        "members": [net.state_dict(), build_level_net(len(PLANNING_LANDMARKS), width).state_dict()],
    }  # fmt: skip
    path = tmp_path / "level_net.pt"
    torch.save(state, path)
    return path


def test_predictions_follow_the_head_direction(tmp_path: Path) -> None:
    """Convention pin: the same body turned 180 degrees about z (head first -> feet first) gets the same
    levels mirrored in y, whatever the weights."""
    net = load_level_net(_model_file(tmp_path))
    table = make_table(-150.0)
    pts = body_points(table_top_z_mm=-150.0, y_range_mm=(-2300.0, -700.0))
    pts = pts[pts[:, 0] < 100.0]  # break the left-right symmetry
    turned = pts * np.array([-1.0, -1.0, 1.0]) + np.array([0.0, -3000.0, 0.0])
    out_a = net.predict(height_map(pts, table, 1), "supine", "raised")
    out_b = net.predict(height_map(turned, table, -1), "supine", "raised")
    a, b = out_a.levels, out_b.levels
    assert 0.0 <= out_a.head_direction_p <= 1.0
    assert out_b.head_direction_p == pytest.approx(out_a.head_direction_p, abs=1e-5)
    assert set(a) == set(PLANNING_LANDMARKS)
    for name in PLANNING_LANDMARKS:
        assert b[name].y_mm == pytest.approx(-3000.0 - a[name].y_mm, abs=1e-3)
        assert np.isfinite(a[name].y_mm) and a[name].sigma_mm == pytest.approx(10.0)
    prone = net.predict(height_map(pts, table, 1), "prone", None)
    assert prone.levels["knee"].sigma_mm == pytest.approx(20.0)


def test_grid_mismatch_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    from positioning.perception.heightmap import HeightMapSettings

    net = load_level_net(_model_file(tmp_path))
    pts = body_points(table_top_z_mm=-150.0, y_range_mm=(-2300.0, -700.0))
    small = height_map(pts, make_table(-150.0), 1, HeightMapSettings(rows=128))
    with pytest.raises(ValueError, match="grid"):
        net.predict(small, "supine", None)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a valid level network"):
        load_level_net(bad)
    with pytest.raises(ValueError, match="not found"):
        load_level_net(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    doc = torch.load(_model_file(tmp_path), weights_only=True)
    torch.save({**doc, "members": []}, empty)
    with pytest.raises(ValueError, match="no network weights"):
        load_level_net(empty)
    wrong = tmp_path / "wrong.pt"
    torch.save({"schema": "something/9"}, wrong)
    with pytest.raises(ValueError, match="schema"):
        load_level_net(wrong)
