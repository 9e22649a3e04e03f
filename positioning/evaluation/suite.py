"""Benchmark suites: which simulated sessions, which frames, which protocols (``sim/suites/NAME.yaml``).

A suite lists groups of sessions, each a scenario and its seeds (``first_seed`` + ``count``, or
``seeds``); seeds are chosen apart from every seed a model was fitted or trained on (see
``sim/world.yaml``), so what a suite measures was never seen in fitting. The older one-scenario form
(``scenario``, ``first_seed``, ``count`` at the top) is read as one group::

    name: quick
    frames: [0, 1, 2]                 # frames perceived per session (tracking over them; the last is planned)
    protocols: [chest, abdomen]       # cycled over the sessions
    prone_protocols: [chest-prone]    # cycled over prone sessions instead
    console_wrong_every: 5            # every 5th session the console's position is wrong (head/feet swapped)
    sessions:
      - {scenario: world, first_seed: 700000, count: 6}
      - {scenario: hfs-arms-up, seeds: [3000]}

:func:`suite_recording` turns a case into a genuine RealSense recording with its truth and calibration
sidecars, recorded once and cached by content (the scenario's definition, seed, frame count and the
simulator's source code name the file; see :func:`positioning.sim.room_source.cached_clip`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from positioning.errors import ScenarioError

__all__ = [
    "SuiteCase",
    "Suite",
    "suite_dir",
    "list_suites",
    "load_suite",
    "suite_recording",
    "swap_head_feet",
]


def suite_dir() -> Path:
    """The repository's ``sim/suites`` folder."""
    from positioning.sim.scenario import scenario_dir

    return scenario_dir() / "suites"


@dataclasses.dataclass(frozen=True)
class SuiteCase:
    """One session of a suite: a scenario and its seed."""

    scenario: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.scenario}@{self.seed}"


def swap_head_feet(position: str) -> str:
    """The position with head and feet swapped (``HFS`` -> ``FFS``): the commonest wrong console entry."""
    return ("FF" if position.startswith("HF") else "HF") + position[2:]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
    """A benchmark suite.

    Attributes:
        name: suite name.
        description: what it is for.
        cases: its sessions.
        frames: frame indices perceived per session (tracking over them; the last one is planned).
        protocols: protocols cycled over the sessions (by position in the suite).
        prone_protocols: protocols cycled over prone sessions instead.
        console_wrong_every: every N-th session (N > 0) the console's patient position is wrong (head and
            feet swapped), so that the orientation check has cases to catch; 0: always right.
        path: the file it was read from.
    """

    name: str
    description: str
    cases: tuple[SuiteCase, ...]
    frames: tuple[int, ...]
    protocols: tuple[str, ...]
    prone_protocols: tuple[str, ...]
    console_wrong_every: int = 0
    path: Path | None = None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(c.seed for c in self.cases)

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.scenario for c in self.cases))

    @property
    def frame_count(self) -> int:
        """Frames each session's recording holds (through the last frame the suite perceives)."""
        return max(self.frames) + 1

    def protocol_for(self, k: int, position: str | None) -> str:
        """The protocol of the ``k``-th session (a prone patient gets a prone protocol)."""
        pool = self.prone_protocols if position is not None and position.endswith("P") else self.protocols
        return pool[k % len(pool)]

    def console_position(self, k: int, position: str | None) -> str | None:
        """The patient position the console enters for the ``k``-th session (the true one, except every
        :attr:`console_wrong_every`-th session)."""
        if position is None:
            return None
        n = self.console_wrong_every
        return swap_head_feet(position) if n > 0 and k % n == n - 1 else position


def list_suites() -> list[str]:
    return sorted(q.stem for q in suite_dir().glob("*.yaml") if not q.name.endswith(".floors.yaml"))


def _group(d: dict, where: str) -> list[SuiteCase]:
    scenario = str(d["scenario"])
    if "seeds" in d:
        seeds = [int(s) for s in d["seeds"]]
    else:
        first, count = int(d["first_seed"]), int(d["count"])
        seeds = list(range(first, first + count))
    if not seeds:
        raise ScenarioError(f"{where}: a group of {scenario!r} has no seeds")
    return [SuiteCase(scenario, s) for s in seeds]


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a suite by name (``sim/suites/NAME.yaml``) or path.

    Raises:
        ScenarioError: unknown or malformed suite, or a scenario it names that does not exist.
    """
    from positioning.sim.scenario import load_scenario

    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = suite_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        raise ScenarioError(f"unknown suite {str(name_or_path)!r}; known suites: {', '.join(list_suites())}")
    try:
        d = yaml.safe_load(p.read_text())
        groups = d["sessions"] if "sessions" in d else [d]
        cases = tuple(c for g in groups for c in _group(g, str(p)))
        suite = Suite(
            name=str(d["name"]),
            description=str(d.get("description", "")),
            cases=cases,
            frames=tuple(int(f) for f in d.get("frames", [0])),
            protocols=tuple(str(x) for x in d["protocols"]),
            prone_protocols=tuple(str(x) for x in d.get("prone_protocols", d["protocols"])),
            console_wrong_every=int(d.get("console_wrong_every", 0)),
            path=p,
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ScenarioError(f"suite file {p} is malformed: {e}") from e
    if len(set(cases)) != len(cases):
        raise ScenarioError(f"suite file {p} names a session twice")
    if not suite.frames or min(suite.frames) < 0:
        raise ScenarioError(f"suite file {p}: frames must be non-negative indices")
    for scenario in suite.scenarios:
        load_scenario(scenario)  # raises ScenarioError naming the unknown scenario
    if not suite.protocols or not suite.prone_protocols:
        raise ScenarioError(f"suite file {p}: protocols and prone_protocols must name at least one protocol")
    from positioning.errors import ProtocolError
    from positioning.planning.protocol import load_protocol

    for name in dict.fromkeys((*suite.protocols, *suite.prone_protocols)):
        try:
            load_protocol(name)
        except ProtocolError as e:
            raise ScenarioError(f"suite file {p}: {e}") from e
    return suite


def suite_recording(suite: Suite, case: SuiteCase, *, directory: Path | None = None) -> Path:
    """The recording of one suite session (``KEY.db3`` with its truth and calibration sidecars), recorded
    now if the cache (``$POSITIONING_CACHE/suites``) does not hold it."""
    from positioning import resources
    from positioning.sim.room_source import cached_clip

    return cached_clip(
        case.scenario,
        case.seed,
        "still",
        frames=suite.frame_count,
        directory=directory or resources.cache_dir("suites"),
    )
