"""Planning on a simulated frame through the real perception pipeline (slow: anny, rendering, MediaPipe).

Truth is used only to check the plan. Seeds 2900+ are outside both the fits' training seeds (1000-1019)
and the benchmark's cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from positioning.evaluation.isocenter_fit import load_frames
from positioning.evaluation.truth import true_isocenter
from positioning.planning.plan import make_plan
from positioning.planning.protocol import load_protocol

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def perceiver():
    pipeline = pytest.importorskip("positioning.perception.pipeline")
    try:
        p = pipeline.Perceiver(settings=pipeline.PerceiverSettings(track=True))
    except Exception as e:  # the MediaPipe model may not be built on this machine
        pytest.skip(f"perceiver unavailable: {e}")
    yield p
    p.close()


@pytest.mark.parametrize(("scenario", "protocol"), [("hfs-arms-up", "chest"), ("ffs-arms-up", "abdomen")])
def test_simulated_plan_is_close_to_the_truth(
    perceiver, tmp_path: Path, scenario: str, protocol: str
) -> None:
    frames = load_frames(scenario, 2900, (0, 1), directory=tmp_path)
    perceiver.reset()
    for s in frames:
        state = perceiver.perceive(s.frame, s.calibration)
    plan = make_plan(state, load_protocol(protocol))
    assert plan.patient_position is not None and str(plan.patient_position) == frames[-1].position
    r, iso = plan.scan_range, plan.isocenter
    assert r is not None and iso is not None
    tx, tz = true_isocenter(frames[-1].cross_sections(), r.start_mm, r.end_mm)
    assert abs(iso.z_mm - tz) < 15.0
    assert abs(iso.x_mm - tx) < 15.0
    assert plan.table_offset.vertical_mm == pytest.approx(-iso.z_mm, abs=1e-6)
    # the range brackets the truth landmarks it is defined by
    lm = frames[-1].landmarks_mm
    p = load_protocol(protocol)
    ys = [lm[p.superior.landmark][1], lm[p.inferior.landmark][1]]
    assert r.start_mm - 50 < min(ys) and max(ys) < r.end_mm + 50
    assert np.isfinite(plan.to_json()["dose"]["centering"]["current"]["surface_dose_increase"]["percent"])


@pytest.mark.parametrize("scenario", ["hfs-arms-up", "ffs-arms-up", "hfp-arms-up", "hfs-arms-down"])
def test_level_network_reads_the_levels_of_a_simulated_body(tmp_path: Path, scenario: str) -> None:
    """The shipped level network on a held-out simulated frame (its own segmentation, the simulated
    position and arms as perception would report them): every landmark level within 40 mm, median 15."""
    from positioning.evaluation.bench_plan import truth_levels
    from positioning.perception.heightmap import height_map
    from positioning.perception.segmentation import segment_frame
    from positioning.planning.anatomy import posture_group
    from positioning.planning.level_net import load_level_net

    net = load_level_net()
    assert net is not None, "models/level_net.pt is part of the repository"
    s = load_frames(scenario, 2901, (0,), directory=tmp_path)[0]
    table, seg = segment_frame(s.frame, s.calibration)
    sign = 1 if s.position.startswith("HF") else -1
    out = net.predict(height_map(seg.points_mm, table, sign), posture_group(s.position), s.arms)
    pred = out.levels
    assert out.head_direction_p > 0.5
    turned = net.predict(height_map(seg.points_mm, table, -sign), posture_group(s.position), s.arms)
    assert turned.head_direction_p < 0.5
    truth = truth_levels(s)
    err = np.array([pred[n].y_mm - truth[n] for n in pred])
    assert np.median(np.abs(err)) < 15.0, dict(zip(pred, err.round(1), strict=True))
    assert np.max(np.abs(err)) < 40.0, dict(zip(pred, err.round(1), strict=True))
