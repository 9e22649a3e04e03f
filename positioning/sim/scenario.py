"""Scenarios as data: YAML files in the repository's ``sim/`` folder, sampled reproducibly from a seed.

A scenario file describes distributions; :func:`sample_session` draws one concrete
:class:`SessionSpec` from it with ``numpy.random.default_rng(seed)``, so ``(scenario, seed)`` always gives
the same session. Values in the YAML are either fixed (a number, string or list of numbers) or a sampler:
``{uniform: [lo, hi]}`` or ``{choice: [a, b, ...]}`` (drawn recursively, inside lists too). Keys that start
with ``x-`` hold YAML anchors for reuse and are ignored.

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
import functools
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from positioning import resources
from positioning.errors import ScenarioError
from positioning.sim.appearance import CLOTHING, FITZPATRICK_SKIN, GOWN_COLORS, SKIN_TONES, Appearance
from positioning.sim.body import ArmPose, Phenotype
from positioning.sim.cover import CoverParams, PillowParams
from positioning.sim.noise import NOISE_PRESETS, DepthNoiseParams
from positioning.sim.placement import PatientPosition, PlacementParams
from positioning.sim.render import Lighting
from positioning.sim.rig import CameraRig
from positioning.sim.room import ClutterItem, RoomParams
from positioning.sim.staff import StaffMember

__all__ = [
    "Scenario",
    "SessionSpec",
    "SKIN_TONES",
    "GOWN_COLORS",
    "scenario_dir",
    "list_scenarios",
    "load_scenario",
    "sample_session",
]


def scenario_dir() -> Path:
    """The repository's ``sim/`` folder (scenario YAML files)."""
    return resources.sim_dir()


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
        appearance: skin tone and clothing.
        cover: a blanket over the patient.
        pillows: a pillow under the head, a bolster under the knees.
        lighting: the room's light (None: the reference white light with no auto-exposure).
        staff: people beside the table (standing or leaning over it).
        dark_surface_dropout: dark surfaces lose depth (little infrared returned).
        breathing_amplitude_mm: peak anterior chest/abdomen motion.
        breathing_period_s: breathing period.
        shift_at_frame: frame index from which the patient is shifted by ``shift_mm`` (None: never).
        shift_mm: ``(3,)`` patient displacement (scanner frame) applied from ``shift_at_frame`` on.
        second_person: ``(x_mm, y_mm)`` of a standing second person beside the table, or None (the
            scenarios' older form of one standing ``staff`` member).
        frames: default number of frames.
        board: a calibration board on the table (:class:`positioning.sim.board.BoardPlacement`), or None.
    """

    scenario: str
    seed: int
    phenotype: Phenotype | None
    placement: PlacementParams | None
    room: RoomParams
    rig: CameraRig
    noise: DepthNoiseParams
    appearance: Appearance = dataclasses.field(default_factory=Appearance)
    cover: CoverParams = dataclasses.field(default_factory=CoverParams)
    pillows: PillowParams = dataclasses.field(default_factory=PillowParams)
    lighting: Lighting | None = None
    staff: tuple[StaffMember, ...] = ()
    dark_surface_dropout: bool = False
    breathing_amplitude_mm: float = 3.0
    breathing_period_s: float = 4.0
    shift_at_frame: int | None = None
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    second_person: tuple[float, float] | None = None
    frames: int = 30
    board: Any = None


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
    text = p.read_text()
    return Scenario(**_parse(str(p), text), path=p)


@functools.lru_cache(maxsize=64)
def _parse(where: str, text: str) -> dict[str, Any]:
    """``name``, ``description`` and ``data`` of a scenario file's text (parsed once per text; the data is
    only ever read)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ScenarioError(f"scenario file {where} is not valid YAML: {e}") from e
    if not isinstance(data, dict) or "name" not in data:
        raise ScenarioError(f"scenario file {where} must be a mapping with at least a 'name'")
    return {"name": str(data["name"]), "description": str(data.get("description", "")), "data": data}


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
    if isinstance(value, dict):  # keys starting with "x-" hold YAML anchors only: not drawn, dropped
        return {k: _draw(v, rng, f"{where}.{k}") for k, v in value.items() if not str(k).startswith("x-")}
    if isinstance(value, list):
        return [_draw(v, rng, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _rgb(value: Any, where: str) -> tuple[float, float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 3):
        raise ScenarioError(f"{where} must be [r, g, b] albedos, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _room(d: dict[str, Any]) -> RoomParams:
    """``room:``: RoomParams fields (``mattress_inset_mm`` may replace ``mattress_width_mm``: the mattress is
    that much narrower than the table top on each side); ``clutter`` items may give ``side`` (+1 toward +x,
    -1 toward -x) and ``gap_mm`` (from the table edge) instead of ``centre_x_mm``, and
    ``top_above_mattress_mm`` instead of ``top_z_mm``."""
    r = dict(d.get("room", {}) or {})
    inset = r.pop("mattress_inset_mm", None)
    if inset is not None:
        r["mattress_width_mm"] = float(r.get("table_width_mm", RoomParams.table_width_mm)) - 2.0 * float(
            inset
        )
    items = []
    for k, item in enumerate(r.pop("clutter", []) or []):
        item = dict(item)
        side = float(item.pop("side", 1.0))
        gap = item.pop("gap_mm", None)
        above = item.pop("top_above_mattress_mm", None)
        if "rgb" in item:
            item["rgb"] = _rgb(item["rgb"], f"room.clutter[{k}].rgb")
        items.append(item | {"_side": side, "_gap": gap, "_above": above})
    for key in ("table_rgb", "mattress_rgb", "head_rest_rgb", "gantry_rgb", "floor_rgb"):
        if key in r:
            r[key] = _rgb(r[key], f"room.{key}")
    room = RoomParams(**r)
    clutter = []
    for item in items:
        side, gap, above = item.pop("_side"), item.pop("_gap"), item.pop("_above")
        width = float(item.get("width_mm", ClutterItem.width_mm))
        if gap is not None:
            item["centre_x_mm"] = room.table_lateral_mm + side * (room.table_width_mm / 2 + gap + width / 2)
        if above is not None:
            item["top_z_mm"] = room.mattress_top_z_mm + above
        clutter.append(ClutterItem(**item))
    return dataclasses.replace(room, clutter=tuple(clutter)) if clutter else room


def _rig(cam: dict[str, Any], room: RoomParams, trunk_y_mm: float) -> CameraRig:
    """``camera:``: CameraRig fields (``resolution: [w, h]`` may replace ``width`` and ``height``), or a
    ``mount`` relative to the table: ``height_above_table_mm`` (above
    the mattress top), ``tilt_deg`` (optical axis from straight down), ``tilt_azimuth_deg`` (plan-view
    direction from the target to the camera, 0 = toward -y, the table's foot end; 90 = toward +x),
    ``target_offset_mm`` ([dx, dy] of the look-at point from the table's centre line at the trunk),
    ``roll_deg``, ``image_right`` (the scanner direction image-right roughly follows) and
    ``min_above_floor_mm`` (a ceiling mount: never lower than this above the floor)."""
    cam = dict(cam)
    if "resolution" in cam:
        cam["width"], cam["height"] = (int(v) for v in cam.pop("resolution"))
    mount = cam.pop("mount", None)
    cam.pop("dark_surface_dropout", None)
    if mount is not None:
        m = dict(mount)
        h = float(m.get("height_above_table_mm", 1850.0))
        h = max(h, float(m.get("min_above_floor_mm", 0.0)) + room.floor_z_mm - room.mattress_top_z_mm)
        tilt = np.radians(float(m.get("tilt_deg", 0.0)))
        az = np.radians(float(m.get("tilt_azimuth_deg", 0.0)))
        dx, dy = (float(v) for v in m.get("target_offset_mm", [0.0, 0.0]))
        target = np.array([room.table_lateral_mm + dx, trunk_y_mm + dy, room.mattress_top_z_mm])
        away = np.array([np.sin(az), -np.cos(az), 0.0])  # az 0: camera toward the foot end (-y)
        position = target + h * np.tan(tilt) * away + np.array([0.0, 0.0, h])
        cam["position_mm"] = tuple(float(v) for v in position)
        cam["look_at_mm"] = tuple(float(v) for v in target)
        cam["right_hint"] = tuple(float(v) for v in m.get("image_right", [0.0, 1.0, 0.0]))
        cam["roll_deg"] = float(m.get("roll_deg", 0.0))
    return CameraRig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cam.items()})


def _appearance(a: dict[str, Any] | None, rng: np.random.Generator) -> Appearance:
    """``appearance:``: ``skin`` (a Fitzpatrick type I-VI or [r, g, b]), ``clothing`` (gown, clothes, bare),
    ``top_rgb``, ``bottom_rgb``. Without it: a random skin tone and gown colour (the older scenarios)."""
    if a is None:
        skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
        gown = GOWN_COLORS[int(rng.integers(len(GOWN_COLORS)))]
        return Appearance(skin_rgb=skin, top_rgb=gown)
    kw: dict[str, Any] = {}
    skin = a.get("skin", "II")
    if isinstance(skin, str):
        if skin not in FITZPATRICK_SKIN:
            raise ScenarioError(
                f"appearance.skin must be a Fitzpatrick type {list(FITZPATRICK_SKIN)}, got {skin!r}"
            )
        kw["skin_rgb"] = FITZPATRICK_SKIN[skin]
    else:
        kw["skin_rgb"] = _rgb(skin, "appearance.skin")
    clothing = str(a.get("clothing", "gown"))
    if clothing not in CLOTHING:
        raise ScenarioError(f"appearance.clothing must be one of {CLOTHING}, got {clothing!r}")
    kw["clothing"] = clothing
    for key in ("top_rgb", "bottom_rgb"):
        if key in a:
            kw[key] = _rgb(a[key], f"appearance.{key}")
    return Appearance(**kw)


def _lighting(lt: dict[str, Any] | None, room: RoomParams, trunk_y_mm: float) -> Lighting | None:
    """``lighting:``: Lighting fields, or ``intensity`` (1 = reference), ``tint`` ([r, g, b] colour of the
    light: warm or cold), ``uneven`` (strength of a second light to one side, relative to the main one),
    ``fill_side`` (+1 / -1: which side)."""
    if lt is None:
        return None
    lt = dict(lt)
    if "intensity" not in lt:
        return Lighting(**{k: tuple(v) if isinstance(v, list) else v for k, v in lt.items()})
    i = float(lt.get("intensity", 1.0))
    tint = np.asarray(_rgb(lt.get("tint", [1.0, 1.0, 1.0]), "lighting.tint"))
    uneven = float(lt.get("uneven", 0.0))
    side = float(lt.get("fill_side", 1.0))
    fill = None
    if uneven > 0:
        fill = (side * 2200.0, trunk_y_mm, room.mattress_top_z_mm + 1400.0)
    return Lighting(
        key_rgb=tuple(float(c) for c in 0.65 * i * tint),  # type: ignore[arg-type]
        ambient_rgb=tuple(float(c) for c in 0.35 * i * tint),  # type: ignore[arg-type]
        fill_mm=fill,
        fill_rgb=tuple(float(c) for c in 0.65 * i * uneven * tint[::-1]),  # type: ignore[arg-type]
    )


def _staff(items: list[Any] | None, room: RoomParams, trunk_y_mm: float) -> tuple[StaffMember, ...]:
    """``staff:`` a list of StaffMember fields; ``side`` (+1 / -1) and ``gap_mm`` (from the table edge)
    may replace ``x_mm``, ``y_offset_mm`` (from the patient's trunk) may replace ``y_mm``."""
    out = []
    for k, item in enumerate(items or []):
        item = dict(item)
        side = float(item.pop("side", 1.0))
        gap = item.pop("gap_mm", None)
        if gap is not None:
            item["x_mm"] = room.table_lateral_mm + side * (room.table_width_mm / 2 + float(gap))
        dy = item.pop("y_offset_mm", None)
        if dy is not None:
            item["y_mm"] = trunk_y_mm + float(dy)
        if "phenotype" in item:
            item["phenotype"] = Phenotype(**item["phenotype"])
        for key in ("scrubs_rgb", "skin_rgb"):
            if key in item:
                item[key] = _rgb(item[key], f"staff[{k}].{key}")
        out.append(StaffMember(**item))
    return tuple(out)


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
        room = _room(d)
        p = d.get("patient")
        head_first = p is None or PatientPosition(p.get("position", "HFS")).head_first
        head_y = room.table_head_y_mm - 80.0
        if p is not None and "head_gap_mm" in p:
            head_y = room.table_head_y_mm - float(p["head_gap_mm"])
        elif p is not None and "head_y_mm" in p:
            head_y = float(p["head_y_mm"])
        trunk_y = head_y - (650.0 if head_first else 1050.0)  # about the trunk's middle, for mounts
        cam = dict(d.get("camera", {}))
        noise_name = str(cam.pop("noise", cam.get("model", "D435")))
        dark = bool(cam.get("dark_surface_dropout", False))
        rig = _rig(cam, room, trunk_y)
        rig.intrinsics  # noqa: B018 - checks the camera model and resolution here, not at the first frame
        if noise_name not in NOISE_PRESETS:
            raise ValueError(f"no noise preset for camera {noise_name!r}; known: {sorted(NOISE_PRESETS)}")
        noise = NOISE_PRESETS[noise_name]
        phenotype = placement = None
        appearance = Appearance()
        pillows = PillowParams(**(d.get("pillows") or {}))
        cover = CoverParams(**(d.get("cover") or {}))
        if p is not None:
            phenotype = Phenotype(**p.get("phenotype", {}))
            jitter = rng.normal(0.0, float(p.get("limb_jitter_deg", 3.0)), size=(2, 3))
            spread = rng.uniform(3.0, 9.0, size=2)
            position = PatientPosition(p.get("position", "HFS"))
            arms = ArmPose(p.get("arms", "sides"))
            if arms is ArmPose.CHEST and position.lying != "supine":
                arms = ArmPose.RAISED  # hands on the chest is a supine habit; prone hands would be under it
            contact = dict(p.get("contact", {}) or {})
            placement = PlacementParams(
                position=position,
                arms=arms,
                lateral_offset_mm=float(p.get("lateral_offset_mm", 0.0)),
                head_y_mm=head_y,
                yaw_deg=float(p.get("yaw_deg", 0.0)),
                roll_deg=float(p.get("roll_deg", 0.0)),
                mattress_top_z_mm=room.mattress_top_z_mm,
                arm_jitter_deg=tuple(map(tuple, jitter)),  # type: ignore[arg-type]
                leg_spread_deg=(float(spread[0]), float(spread[1])),
                head_tilt_deg=float(p.get("head_tilt_deg", 0.0)),
                mattress_softness=room.mattress_softness,
                mattress_thickness_mm=room.mattress_thickness_mm,
                flatten_scale=float(contact.get("flatten_scale", 1.0)),
                knee_rest_mm=pillows.knee_mm if position.lying == "supine" else 0.0,
            )
            appearance = _appearance(d.get("appearance"), rng)
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
            appearance=appearance,
            cover=cover,
            pillows=pillows,
            lighting=_lighting(d.get("lighting"), room, trunk_y),
            staff=_staff(d.get("staff"), room, trunk_y),
            dark_surface_dropout=dark,
            breathing_amplitude_mm=float(motion.get("breathing_amplitude_mm", 3.0)),
            breathing_period_s=float(motion.get("breathing_period_s", 4.0)),
            shift_at_frame=None if shift is None else int(shift["at_frame"]),
            shift_mm=(0.0, 0.0, 0.0) if shift is None else tuple(map(float, shift["mm"])),  # type: ignore[arg-type]
            second_person=None if person is None else (float(person["x_mm"]), float(person["y_mm"])),
            frames=int(d.get("frames", 30)),
        )
    except (TypeError, ValueError, KeyError) as e:
        raise ScenarioError(f"scenario {sc.name!r} (seed {seed}) is malformed: {e}") from e
