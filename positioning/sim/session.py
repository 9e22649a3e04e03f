"""A simulated session: a patient on the table seen by the ceiling camera, frame by frame, with truth.

:class:`SimulatedSession` places the body once (anny forward passes and the contact model), then each
frame adds breathing (and an optional patient shift), ray-casts depth and colour, applies the RealSense
noise model and returns an :class:`~positioning.frames.RGBDFrame` together with its ground truth.
:func:`record_session` writes a genuine RealSense recording plus the ``.truth.json`` and
``.calibration.yaml`` sidecars.

Convention: truth is in the scanner frame (IEC 61217, mm); depth is uint16 z-depth in mm; colour is
aligned to depth (rendered from the depth camera's pose and intrinsics).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from positioning.frames import RGBDFrame
from positioning.sim.anatomy import anatomical_landmarks
from positioning.sim.appearance import patient_colors
from positioning.sim.body import BodyModel, body_model
from positioning.sim.cover import blanket_mesh, head_pillow_mesh, knee_bolster_mesh
from positioning.sim.cross_section import CrossSections, cross_sections
from positioning.sim.noise import apply_depth_noise, dark_surface_dropouts
from positioning.sim.placement import PlacedBody, PlacementParams, mattress_depression, place_body
from positioning.sim.recording import RecordingWriter
from positioning.sim.render import RenderResult, render
from positioning.sim.room import Label, Mesh, room_meshes
from positioning.sim.scenario import SessionSpec
from positioning.sim.staff import StaffMember, staff_mesh

__all__ = [
    "TRUTH_SCHEMA",
    "FrameTruth",
    "SimulatedSession",
    "RecordSummary",
    "record_session",
    "truth_path_for",
    "calibration_path_for",
]

TRUTH_SCHEMA = "positioning.sim.truth/1"
CROSS_SECTION_STEP_MM = 5.0
#: The colour camera's auto-exposure: mean image level it aims for (0-255) and its gain limits.
EXPOSURE_TARGET = 105.0
EXPOSURE_GAIN_RANGE = (0.6, 3.0)


def truth_path_for(recording: str | Path) -> Path:
    """``NAME.truth.json`` beside ``NAME.db3``."""
    p = Path(recording)
    return p.with_name(p.stem + ".truth.json")


def calibration_path_for(recording: str | Path) -> Path:
    """``NAME.calibration.yaml`` beside ``NAME.db3``."""
    p = Path(recording)
    return p.with_name(p.stem + ".calibration.yaml")


@dataclasses.dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one frame (scanner frame, mm).

    Attributes:
        frame_number: the recording's frame number.
        timestamp_ms: the frame's timestamp.
        keypoints_mm: COCO-17 name -> ``(3,)``.
        joints_mm: skeleton joint name -> ``(3,)``.
        landmarks_mm: anatomical landmark name -> ``(3,)`` (see :mod:`positioning.sim.anatomy`).
        cross_sections: body cross-sections along y every 5 mm.
        label: ``(H, W)`` uint8 label image (not written to the truth file).
    """

    frame_number: int
    timestamp_ms: float
    keypoints_mm: dict[str, np.ndarray]
    joints_mm: dict[str, np.ndarray]
    landmarks_mm: dict[str, np.ndarray]
    cross_sections: CrossSections | None
    label: np.ndarray

    def to_json(self) -> dict[str, Any]:
        def pts(d: dict[str, np.ndarray]) -> dict[str, list[float]]:
            return {k: [round(float(x), 2) for x in v] for k, v in d.items()}

        return {
            "frame_number": self.frame_number,
            "timestamp_ms": round(self.timestamp_ms, 3),
            "keypoints": pts(self.keypoints_mm),
            "joints": pts(self.joints_mm),
            "landmarks": pts(self.landmarks_mm),
            "cross_sections": None if self.cross_sections is None else self.cross_sections.to_dict(),
        }


class SimulatedSession:
    """Frames and truth of one :class:`~positioning.sim.scenario.SessionSpec`.

    Args:
        spec: the session to simulate.
        model: body model (default: the process-wide shared one).
    """

    def __init__(self, spec: SessionSpec, *, model: BodyModel | None = None) -> None:
        self.spec = spec
        self.intrinsics = spec.rig.intrinsics
        self.scanner_from_camera = spec.rig.scanner_from_camera
        self.placed: PlacedBody | None = None
        self._breathing_weight: np.ndarray | None = None
        self._colors: np.ndarray | None = None
        self._landmarks_mm: dict[str, np.ndarray] = {}
        self._static: list[Mesh] = room_meshes(spec.room)
        if spec.board is not None:
            from positioning.sim.board import board_mesh

            self._static.append(board_mesh(spec.board))
        if spec.phenotype is not None and spec.placement is not None:
            self._model = model or body_model()
            self.placed = place_body(spec.phenotype, spec.placement, model=self._model)
            self._prepare_patient()
        staff = list(spec.staff)
        if spec.second_person is not None:
            staff.append(StaffMember(x_mm=spec.second_person[0], y_mm=spec.second_person[1]))
        if staff:
            self._model = model or body_model()
            for member in staff:
                self._static.append(
                    staff_mesh(self._model, member, spec.room.floor_z_mm, spec.room.table_lateral_mm)
                )

    # -- set-up -------------------------------------------------------------------------------------
    def _prepare_patient(self) -> None:
        placed, model, spec = self.placed, self._model, self.spec
        assert placed is not None
        v = placed.vertices_mm
        torso = model.part_mask("torso")
        # Breathing moves the anterior trunk up and down; weight 0 on the table, 1 at the top.
        height = v[:, 2] - placed.contact_z_mm
        w = np.where(torso, np.clip(height / max(np.percentile(height[torso], 95), 1.0), 0, 1), 0.0)
        self._breathing_weight = w
        self._colors = patient_colors(model, spec.appearance, placed.body.vertices_mm)
        rot, t = placed.scanner_from_body[:3, :3], placed.scanner_from_body[:3, 3]
        self._landmarks_mm = {k: rot @ p + t for k, p in anatomical_landmarks(placed.body, model).items()}
        room = spec.room
        head_mask = model.part_mask("head")
        extra = [
            m
            for m in (
                head_pillow_mesh(v, placed.faces, head_mask, room, spec.pillows)
                if placed.params.position.lying != "prone"
                else None,
                knee_bolster_mesh(
                    v, placed.faces, placed.keypoints_mm, placed.contact_z_mm, room, spec.pillows
                )
                if placed.params.knee_rest_mm > 0
                else None,
                # the blanket rests on the body at full inhalation, so that breathing never lifts the body
                # through it
                blanket_mesh(
                    v + np.array([0.0, 0.0, spec.breathing_amplitude_mm]) * w[:, None],
                    placed.faces,
                    placed.keypoints_mm,
                    placed.params.position.head_first,
                    room,
                    spec.cover,
                ),
            )
            if m is not None
        ]
        depression = None
        if room.depression_length_mm > 0:
            half = room.mattress_width_mm / 2
            depression = mattress_depression(
                v,
                room.mattress_top_z_mm,
                room.depression_length_mm,
                (room.table_lateral_mm - half, room.table_lateral_mm + half),
                (room.table_foot_y_mm, room.table_head_y_mm),
            )
        # The head rest: a cushion under the head whose top meets the head's lowest point (unless a
        # pillow lies there).
        head_rest = None
        if not (spec.pillows.head and placed.params.position.lying != "prone"):
            head = v[head_mask]
            head_rest = (head[:, 1].min() - 40, head[:, 1].max() + 40, float(head[:, 2].min()))
        self._static = room_meshes(room, head_rest=head_rest, depression=depression, extra=extra)

    # -- per frame ----------------------------------------------------------------------------------
    def patient_vertices(self, index: int) -> np.ndarray | None:
        """Patient mesh vertices (scanner frame, mm) at frame ``index`` (breathing and shift applied)."""
        if self.placed is None:
            return None
        t_s = index / self.spec.rig.fps
        phase = np.sin(2 * np.pi * t_s / self.spec.breathing_period_s)
        v = self.placed.vertices_mm.copy()
        assert self._breathing_weight is not None
        v[:, 2] += self.spec.breathing_amplitude_mm * phase * self._breathing_weight
        return v + self._shift(index)

    def _shift(self, index: int) -> np.ndarray:
        s = self.spec
        if s.shift_at_frame is not None and index >= s.shift_at_frame:
            return np.asarray(s.shift_mm, dtype=np.float64)
        return np.zeros(3)

    def render_ideal(self, index: int) -> RenderResult:
        """The noise-free depth, colour and label images of frame ``index``."""
        meshes = list(self._static)
        v = self.patient_vertices(index)
        if v is not None:
            assert self.placed is not None and self._colors is not None
            meshes.append(Mesh(v, self.placed.faces, self._colors, Label.PATIENT))
        return render(meshes, self.intrinsics, self.scanner_from_camera, lighting=self.spec.lighting)

    def frame(self, index: int, *, timings_s: dict[str, float] | None = None) -> tuple[RGBDFrame, FrameTruth]:
        """Frame ``index``: the noisy RGB-D frame the camera would deliver, and its truth.

        Args:
            index: frame index.
            timings_s: if given, filled with the seconds spent in ``render``, ``noise`` and ``truth``.
        """
        t0 = time.perf_counter()
        ideal = self.render_ideal(index)
        t1 = time.perf_counter()
        rng = np.random.default_rng([self.spec.seed, index])
        depth = apply_depth_noise(ideal.depth_mm, self.intrinsics.fx, rng, self.spec.noise)
        if self.spec.dark_surface_dropout and ideal.albedo is not None:
            depth = dark_surface_dropouts(depth, ideal.albedo, rng)
        gain = 1.0
        if self.spec.lighting is not None:  # auto-exposure: dim rooms come out darker and noisier
            level = float(ideal.color_rgb.mean())
            gain = float(np.clip(EXPOSURE_TARGET / max(level, 1.0), *EXPOSURE_GAIN_RANGE))
        sensor_noise = rng.normal(0.0, 2.0 * max(gain, 1.0), ideal.color_rgb.shape)
        color = np.clip(ideal.color_rgb * gain + sensor_noise, 0, 255).astype(np.uint8)
        t2 = time.perf_counter()
        timestamp_ms = index * 1000.0 / self.spec.rig.fps
        frame = RGBDFrame(
            depth_mm=depth,
            intrinsics=self.intrinsics,
            color_rgb=color,
            color_intrinsics=self.intrinsics,
            color_aligned=True,
            frame_number=index,
            timestamp_ms=timestamp_ms,
            received_ns=time.monotonic_ns(),
            device_name=f"Intel RealSense {self.spec.rig.model} (simulated)",
            serial="SIM" + f"{self.spec.seed:07d}"[-7:],
        )
        truth = self.truth(index, timestamp_ms, ideal.label)
        if timings_s is not None:
            timings_s.update(render=t1 - t0, noise=t2 - t1, truth=time.perf_counter() - t2)
        return frame, truth

    def truth(self, index: int, timestamp_ms: float, label: np.ndarray) -> FrameTruth:
        """Ground truth of frame ``index``."""
        if self.placed is None:
            return FrameTruth(index, timestamp_ms, {}, {}, {}, None, label)
        shift = self._shift(index)
        v = self.patient_vertices(index)
        assert v is not None
        y0 = np.floor(v[:, 1].min() / CROSS_SECTION_STEP_MM) * CROSS_SECTION_STEP_MM
        y = np.arange(y0, v[:, 1].max(), CROSS_SECTION_STEP_MM)
        return FrameTruth(
            frame_number=index,
            timestamp_ms=timestamp_ms,
            keypoints_mm={k: p + shift for k, p in self.placed.keypoints_mm.items()},
            joints_mm={k: p + shift for k, p in self.placed.joints_mm.items()},
            landmarks_mm={k: p + shift for k, p in self._landmarks_mm.items()},
            cross_sections=cross_sections(v, self.placed.faces, y),
            label=label,
        )

    def frames(self, count: int | None = None) -> Iterator[tuple[RGBDFrame, FrameTruth]]:
        for i in range(self.spec.frames if count is None else count):
            yield self.frame(i)

    def session_truth(self) -> dict[str, Any]:
        """The session-level part of the truth file (patient, room, camera, contact model)."""
        s = self.spec
        out: dict[str, Any] = {
            "schema": TRUTH_SCHEMA,
            "scenario": s.scenario,
            "seed": s.seed,
            "units": "mm",
            "frame": "scanner (IEC 61217 fixed: +x lateral, +y into the gantry, +z up; origin at isocenter)",
            "camera": {
                "model": s.rig.model,
                "intrinsics": self.intrinsics.to_dict(),
                "camera_to_scanner": self.scanner_from_camera.round(6).tolist(),
                "tilt_deg": round(s.rig.tilt_deg, 3),
                "noise": dataclasses.asdict(s.noise),
            },
            "room": dataclasses.asdict(s.room),
            "second_person": None if s.second_person is None else list(s.second_person),
            "world": {
                "camera_height_above_table_mm": round(
                    float(self.scanner_from_camera[2, 3] - s.room.mattress_top_z_mm), 1
                ),
                "camera_roll_deg": s.rig.roll_deg,
                "appearance": dataclasses.asdict(s.appearance),
                "cover": dataclasses.asdict(s.cover),
                "pillows": dataclasses.asdict(s.pillows),
                "lighting": None if s.lighting is None else dataclasses.asdict(s.lighting),
                "staff": [dataclasses.asdict(m) for m in s.staff],
                "dark_surface_dropout": s.dark_surface_dropout,
            },
            "patient": None,
        }
        if self.placed is not None and s.phenotype is not None and s.placement is not None:
            p: PlacementParams = s.placement
            out["patient"] = {
                "patient_position": str(p.position),
                "arms": str(p.arms),
                "phenotype": s.phenotype.as_kwargs(),
                "height_mm": round(self.placed.body.height_mm, 1),
                "mass_kg": round(self.placed.body.mass_kg, 2),
                "bmi": round(self.placed.body.bmi, 2),
                "lateral_offset_mm": p.lateral_offset_mm,
                "yaw_deg": p.yaw_deg,
                "roll_deg": p.roll_deg,
                "contact": {
                    "mattress_top_z_mm": p.mattress_top_z_mm,
                    "contact_z_mm": round(self.placed.contact_z_mm, 2),
                    "sink_mm": round(self.placed.sink_mm, 2),
                    "flatten_mm": round(self.placed.flatten_mm, 2),
                    "arm_extension_deg": list(self.placed.arm_extension_deg),
                    "leg_extension_deg": list(self.placed.leg_extension_deg),
                    "knee_flexion_deg": list(self.placed.knee_flexion_deg),
                    "mattress_softness": p.mattress_softness,
                    "flatten_scale": p.flatten_scale,
                },
                "breathing_amplitude_mm": s.breathing_amplitude_mm,
                "shift_at_frame": s.shift_at_frame,
                "shift_mm": list(s.shift_mm),
            }
        return out


@dataclasses.dataclass(frozen=True)
class RecordSummary:
    """What :func:`record_session` wrote."""

    recording: Path
    truth: Path
    calibration: Path
    frames: int
    bytes: int
    seconds: float
    fps: float


def record_session(
    spec: SessionSpec,
    out_path: str | Path,
    *,
    frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    color: bool = True,
) -> RecordSummary:
    """Simulate a session and write it as a genuine RealSense recording with truth and calibration.

    Args:
        spec: the session.
        out_path: ``NAME.db3``; ``NAME.truth.json`` and ``NAME.calibration.yaml`` are written beside it.
        frames: number of frames (default: the scenario's).
        progress: called as ``progress(done, total)`` after each frame.
        color: write the colour stream too (False: a depth-only recording, as from a site that does not
            keep colour images of patients).

    Returns:
        Paths, size and speed of what was written.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".db3":
        raise ValueError(f"recordings are written as RealSense .db3 files, got {out_path.name!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    session = SimulatedSession(spec)
    n = spec.frames if frames is None else frames
    truths = []
    with RecordingWriter(
        out_path,
        depth_intrinsics=session.intrinsics,
        color_intrinsics=session.intrinsics if color else None,
        fps=spec.rig.fps,
        device_name=f"Intel RealSense {spec.rig.model} (simulated)",
        serial="SIM" + f"{spec.seed:07d}"[-7:],
    ) as writer:
        for i in range(n):
            frame, truth = session.frame(i)
            writer.write(frame.depth_mm, frame.color_rgb if color else None, frame.timestamp_ms)
            truths.append(truth.to_json())
            if progress is not None:
                progress(i + 1, n)
    doc = session.session_truth() | {"frames": truths}
    truth_path = truth_path_for(out_path)
    truth_path.write_text(json.dumps(doc, separators=(",", ":")))
    cal_path = calibration_path_for(out_path)
    spec.rig.calibration().save(cal_path)
    seconds = time.perf_counter() - t0
    return RecordSummary(out_path, truth_path, cal_path, n, out_path.stat().st_size, seconds, n / seconds)
