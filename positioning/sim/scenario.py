"""Scenarios as data: YAML files in the repository's ``sim/`` folder, sampled reproducibly from a seed.

A scenario file describes distributions; :func:`sample_session` draws one concrete
:class:`SessionSpec` from it with ``numpy.random.default_rng(seed)``, so ``(scenario, seed)`` always gives
the same session. Values in the YAML are either fixed (a number, string or list of numbers) or a sampler:
``{uniform: [lo, hi]}`` or ``{choice: [a, b, ...]}``.

Example ``sim/hfs-arms-up.yaml``::

    name: hfs-arms-up
    description: Supine, head first, arms above the head (chest / abdomen protocols).
    patient:
      position: HFS
      arms: raised
      phenotype: {gender: {uniform: [0, 1]}, age: {uniform: [0.45, 0.95]}, ...}
      lateral_offset_mm: {uniform: [-40, 40]}
    room: {mattress_top_z_mm: {uniform: [-210, -110]}}
    camera: {model: D435, width: 848, height: 480}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from positioning.errors import ScenarioError
from positioning.sim.body import ArmPose, Phenotype
from positioning.sim.noise import D435_NOISE, D455_NOISE, DepthNoiseParams
from positioning.sim.placement import PatientPosition, PlacementParams
from positioning.sim.rig import CameraRig
from positioning.sim.room import RoomParams

__all__ = [
    "Scenario",
    "SessionSpec",
    "SKIN_TONES",
    "scenario_dir",
    "list_scenarios",
    "load_scenario",
    "sample_session",
]

#: Skin albedos (linear RGB, 0..1) spanning light to dark skin.
SKIN_TONES: tuple[tuple[float, float, float], ...] = (
    (0.93, 0.76, 0.65), (0.87, 0.67, 0.54), (0.78, 0.58, 0.44), (0.66, 0.47, 0.33),
    (0.52, 0.36, 0.25), (0.38, 0.26, 0.18),
)  # fmt: skip

#: Hospital gown / clothing colours for the trunk.
GOWN_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.62, 0.75, 0.85), (0.85, 0.85, 0.82), (0.55, 0.70, 0.62), (0.80, 0.72, 0.80),
)  # fmt: skip


def scenario_dir() -> Path:
    """The repository's ``sim/`` folder (scenario YAML files)."""
    return Path(__file__).resolve().parents[2] / "sim"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named scenario: the raw YAML mapping plus its name, description and source file."""

    name: str
    description: str
    data: dict[str, Any]
    path: Path | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionSpec:
    """One concrete simulated session.

    Attributes:
        scenario: scenario name.
        seed: the seed it was sampled with.
        phenotype: the patient's phenotype, or None for an empty table.
        placement: where and how the patient lies (None for an empty table).
        room: room geometry.
        rig: camera rig.
        noise: depth noise parameters.
        skin_rgb, gown_rgb: albedos of skin and trunk clothing.
        breathing_amplitude_mm: peak anterior chest/abdomen motion.
        breathing_period_s: breathing period.
        shift_at_frame: frame index from which the patient is shifted by ``shift_mm`` (None: never).
        shift_mm: ``(3,)`` patient displacement (scanner frame) applied from ``shift_at_frame`` on.
        second_person: ``(x_mm, y_mm)`` of a standing second person beside the table, or None.
        frames: default number of frames.
    """

    scenario: str
    seed: int
    phenotype: Phenotype | None
    placement: PlacementParams | None
    room: RoomParams
    rig: CameraRig
    noise: DepthNoiseParams
    skin_rgb: tuple[float, float, float] = SKIN_TONES[1]
    gown_rgb: tuple[float, float, float] = GOWN_COLORS[0]
    breathing_amplitude_mm: float = 3.0
    breathing_period_s: float = 4.0
    shift_at_frame: int | None = None
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    second_person: tuple[float, float] | None = None
    frames: int = 30


def list_scenarios(directory: Path | None = None) -> list[Scenario]:
    """All scenarios in ``directory`` (default :func:`scenario_dir`), sorted by name."""
    directory = directory or scenario_dir()
    return sorted((load_scenario(p) for p in directory.glob("*.yaml")), key=lambda s: s.name)


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by name (a file ``sim/NAME.yaml``) or by path.

    Raises:
        ScenarioError: unknown name, unreadable or malformed file.
    """
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = scenario_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(s.stem for s in sorted(scenario_dir().glob("*.yaml")))
        raise ScenarioError(f"unknown scenario {str(name_or_path)!r}; known scenarios: {known}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"scenario file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or "name" not in data:
        raise ScenarioError(f"scenario file {p} must be a mapping with at least a 'name'")
    return Scenario(name=str(data["name"]), description=str(data.get("description", "")), data=data, path=p)


def _draw(value: Any, rng: np.random.Generator, where: str) -> Any:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("uniform", "choice"):
        kind, arg = next(iter(value.items()))
        if kind == "uniform":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ScenarioError(f"{where}: 'uniform' needs [low, high], got {arg!r}")
            return float(rng.uniform(float(arg[0]), float(arg[1])))
        if not (isinstance(arg, list) and arg):
            raise ScenarioError(f"{where}: 'choice' needs a non-empty list, got {arg!r}")
        return _draw(arg[int(rng.integers(len(arg)))], rng, where)
    if isinstance(value, dict):
        return {k: _draw(v, rng, f"{where}.{k}") for k, v in value.items()}
    return value


def sample_session(scenario: Scenario | str, seed: int = 0) -> SessionSpec:
    """Draw one concrete session from a scenario.

    Args:
        scenario: a :class:`Scenario` or its name.
        seed: random seed; the same (scenario, seed) always gives the same session.

    Raises:
        ScenarioError: a value in the scenario is malformed.
    """
    sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
    rng = np.random.default_rng(seed)
    d = _draw(sc.data, rng, sc.name)
    try:
        room = RoomParams(**d.get("room", {}))
        cam = dict(d.get("camera", {}))
        noise_name = str(cam.pop("noise", cam.get("model", "D435")))
        rig = CameraRig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cam.items()})
        rig.intrinsics  # noqa: B018 - checks the camera model and resolution here, not at the first frame
        noise = {"D435": D435_NOISE, "D455": D455_NOISE}[noise_name]
        p = d.get("patient")
        phenotype = placement = None
        skin, gown = SKIN_TONES[1], GOWN_COLORS[0]
        if p is not None:
            phenotype = Phenotype(**p.get("phenotype", {}))
            jitter = rng.normal(0.0, float(p.get("limb_jitter_deg", 3.0)), size=(2, 3))
            spread = rng.uniform(3.0, 9.0, size=2)
            position = PatientPosition(p.get("position", "HFS"))
            arms = ArmPose(p.get("arms", "sides"))
            if arms is ArmPose.CHEST and position.lying != "supine":
                arms = ArmPose.RAISED  # hands on the chest is a supine habit; prone hands would be under it
            placement = PlacementParams(
                position=position,
                arms=arms,
                lateral_offset_mm=float(p.get("lateral_offset_mm", 0.0)),
                head_y_mm=float(p.get("head_y_mm", room.table_head_y_mm - 80.0)),
                yaw_deg=float(p.get("yaw_deg", 0.0)),
                roll_deg=float(p.get("roll_deg", 0.0)),
                mattress_top_z_mm=room.mattress_top_z_mm,
                arm_jitter_deg=tuple(map(tuple, jitter)),  # type: ignore[arg-type]
                leg_spread_deg=(float(spread[0]), float(spread[1])),
                head_tilt_deg=float(p.get("head_tilt_deg", 0.0)),
            )
            skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
            gown = GOWN_COLORS[int(rng.integers(len(GOWN_COLORS)))]
        motion = d.get("motion", {}) or {}
        shift = motion.get("shift")
        person = d.get("second_person")
        return SessionSpec(
            scenario=sc.name,
            seed=seed,
            phenotype=phenotype,
            placement=placement,
            room=room,
            rig=rig,
            noise=noise,
            skin_rgb=skin,
            gown_rgb=gown,
            breathing_amplitude_mm=float(motion.get("breathing_amplitude_mm", 3.0)),
            breathing_period_s=float(motion.get("breathing_period_s", 4.0)),
            shift_at_frame=None if shift is None else int(shift["at_frame"]),
            shift_mm=(0.0, 0.0, 0.0) if shift is None else tuple(map(float, shift["mm"])),  # type: ignore[arg-type]
            second_person=None if person is None else (float(person["x_mm"]), float(person["y_mm"])),
            frames=int(d.get("frames", 30)),
        )
    except (TypeError, ValueError, KeyError) as e:
        raise ScenarioError(f"scenario {sc.name!r} (seed {seed}) is malformed: {e}") from e
