"""``positioning evaluate``: the pipeline on a set of recorded sessions, scored against truth, as a report.

A target is a suite (``sim/suites/NAME.yaml``: its sessions are recorded first when the cache does not
hold them, see :func:`~positioning.evaluation.suite.suite_recording`) or a folder of recordings (``.db3``
or ``.bag``, each with an optional ``NAME.truth.json`` and ``NAME.calibration.yaml`` beside it). Every
recording is played through the service's own path (:func:`~positioning.service.replay.run_session`:
perception with tracking over its frames, the plan of the last one) and, where it has truth, scored
(:mod:`positioning.evaluation.scoring`). A recording without truth (a real camera session) still runs: the
report shows its plan, checks and overlay. A case that fails keeps its error and is counted.

Cases run as tasks on Dask distributed: a ``LocalCluster`` of worker processes on this machine by default
(``jobs`` workers, one thread each), or the cluster whose scheduler ``scheduler`` names. A task carries
only the case's description (a suite session, or a path), never frames, so:

* suite sessions need no shared storage: each worker records the sessions it is given into its own cache
  (``$POSITIONING_CACHE/suites``) once, and reuses them on later runs;
* a folder of recordings must be readable at the same path on every worker (a shared file system, e.g.
  the archive mounted read-only on every node); results (plans, errors, overlay JPEGs of some 40 kB) come
  back to the client, which writes the report.

Truth is read only in this module and :mod:`~positioning.evaluation.scoring`, after the pipeline has run,
except to choose a suite session's protocol and the console's patient position (as the technologist
would enter them), which the pipeline receives as its request, exactly as in the service.

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from positioning.errors import PositioningError, ScenarioError
from positioning.evaluation.records import CaseRecord, json_safe
from positioning.evaluation.suite import Suite, SuiteCase, load_suite

__all__ = ["EvalTask", "Evaluation", "resolve_tasks", "run_task", "run_tasks", "evaluate", "write_results"]

RECORDING_SUFFIXES: tuple[str, ...] = (".db3", ".bag")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalTask:
    """One case to evaluate: a suite session (recorded on the worker when missing) or a recording's path.

    Attributes:
        name: the case's name.
        protocol: protocol name or file; None: the suite's choice for the session.
        landmarks: landmark backends.
        suite: the suite (with ``case`` and ``index``) for a suite session.
        case, index: the suite session and its position in the suite.
        recording: the recording's path (a folder's case).
        room: a room file (table model) for the pipeline; None: the default.
        calibration: a camera-to-scanner calibration for recordings without their own sidecar.
    """

    name: str
    protocol: str | None
    landmarks: str = "fused"
    suite: Suite | None = None
    case: SuiteCase | None = None
    index: int = 0
    recording: str | None = None
    room: str | None = None
    calibration: str | None = None


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The records of a run, with how it ran."""

    target: str
    records: list[CaseRecord]
    seconds: float
    workers: int
    scheduler: str


def resolve_tasks(
    target: str | Path,
    *,
    protocol: str | None = None,
    landmarks: str = "fused",
    room: str | None = None,
    cases: int | None = None,
    calibration: str | None = None,
) -> list[EvalTask]:
    """The cases of ``target``: a suite's sessions, or a folder's recordings (sorted by name).

    Raises:
        ScenarioError: an unknown suite (that is not a folder either), or a folder without recordings.
        PositioningError: a folder's cases without ``protocol``.
    """
    p = Path(target)
    # paths travel to the workers as absolute paths (a worker's working folder may differ)
    room = None if room is None else str(Path(room).resolve())
    calibration = None if calibration is None else str(Path(calibration).resolve())
    common = {"protocol": protocol, "landmarks": landmarks, "room": room}
    if p.is_dir() or p.suffix in RECORDING_SUFFIXES:
        if p.is_dir():
            recs = sorted(q for q in p.iterdir() if q.suffix in RECORDING_SUFFIXES and q.is_file())
            if not recs:
                raise ScenarioError(f"folder {p} holds no RealSense recordings (.db3 or .bag)")
        elif p.is_file():
            recs = [p]
        else:
            raise ScenarioError(f"no recording {p}")
        if protocol is None:
            raise PositioningError(
                f"recordings need a protocol to plan: add --protocol NAME (see `positioning protocols`); "
                f"{len(recs)} recording(s) in {p}"
            )
        tasks = [
            EvalTask(name=q.stem, recording=str(q.resolve()), calibration=calibration, **common) for q in recs
        ]
    else:
        suite = load_suite(target)
        tasks = [
            EvalTask(name=c.name, suite=suite, case=c, index=k, **common) for k, c in enumerate(suite.cases)
        ]
    if protocol is not None:
        from positioning.planning.protocol import load_protocol

        load_protocol(protocol)  # an unknown protocol fails here, once, not in every task
    return tasks if cases is None else tasks[:cases]


def _overlay_jpeg(run: Any) -> bytes | None:
    from positioning.perception.overlay import display_image, jpeg_bytes
    from positioning.planning.overlay import draw_plan

    if run.plan is None or not run.estimates:
        return None
    frame = run.last_frame
    img = draw_plan(display_image(frame), run.plan, run.calibration, frame.intrinsics)
    return jpeg_bytes(img)


def run_task(task: EvalTask) -> CaseRecord:
    """Evaluate one case (runs on a worker): record it if needed, replay it through the service's path,
    score it against its truth. Never raises for a case's own problem: the record keeps the failure."""
    from positioning.evaluation.scoring import case_errors, case_truth, check_labels
    from positioning.evaluation.suite import suite_recording
    from positioning.evaluation.truth import load_truth
    from positioning.native_log import quiet_native_stderr
    from positioning.planning.protocol import load_protocol
    from positioning.service.replay import run_session
    from positioning.service.session import SessionRequest
    from positioning.sim.session import truth_path_for

    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    protocol_name = task.protocol
    console: str | None = None
    recording = task.recording or ""
    doc: dict[str, Any] | None = None
    frames: int | None = None
    failure: str | None = None
    run = None
    try:
        if task.suite is not None and task.case is not None:
            recording = str(suite_recording(task.suite, task.case))
            frames = task.suite.frame_count
        if truth_path_for(recording).is_file():
            doc = load_truth(recording)
        true_position = (
            None if doc is None or doc.get("patient") is None else doc["patient"]["patient_position"]
        )
        if task.suite is not None:
            console = task.suite.console_position(task.index, true_position)
            protocol_name = protocol_name or task.suite.protocol_for(task.index, true_position)
        else:
            console = true_position  # the console's entry is right unless a suite says otherwise
        assert protocol_name is not None
        request = SessionRequest(protocol=protocol_name, expected_position=console)
        with quiet_native_stderr():
            run = run_session(
                recording,
                request,
                calibration=task.calibration,
                max_frames=frames,
                landmarks=task.landmarks,
                room=task.room,
            )
    except PositioningError as e:
        failure = str(e)
    except Exception as e:
        failure = f"internal error: {type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
    try:
        protocol = load_protocol(protocol_name) if protocol_name else None
    except PositioningError as e:
        protocol, failure = None, failure or str(e)
    plan_json = None if run is None or run.plan is None else run.plan.to_json()
    if (
        plan_json is not None
        and failure is None
        and (plan_json.get("scan_range") is None or plan_json.get("isocenter") is None)
    ):
        errors_said = [
            f"{c['code']}: {c['message']}" for c in plan_json["checks"] if c["severity"] == "error"
        ]
        failure = errors_said[0] if errors_said else "no scan range or isocenter, and no error check says why"
    truth = errors = None
    labels: dict[str, bool] = {}
    if doc is not None and protocol is not None:
        try:
            truth = case_truth(doc, protocol, plan_json)
            labels = check_labels(doc, protocol, console, plan_json)
            if plan_json is not None and truth.position is not None:
                errors = case_errors(doc, truth, plan_json)
        except Exception as e:  # a truth file this code cannot score is the case's failure, not the run's
            truth = errors = None
            labels = {}
            failure = (failure + "; " if failure else "") + f"scoring: {type(e).__name__}: {e}"
    overlay = None
    if run is not None:
        try:
            overlay = _overlay_jpeg(run)
        except Exception:
            overlay = None
    return CaseRecord(
        name=task.name,
        recording=recording,
        protocol=protocol_name or "?",
        body_region=getattr(protocol, "body_region", "") or (protocol_name or "?"),
        console_position=console,
        landmarks=task.landmarks,
        plan=plan_json,
        failure=failure,
        checks=[]
        if plan_json is None
        else [
            {"code": c["code"], "severity": c["severity"], "message": c["message"]}
            for c in plan_json["checks"]
        ],
        check_labels=labels,
        truth=truth,
        errors=errors,
        frames=0 if run is None else len(run.estimates),
        seconds=time.perf_counter() - t0,
        worker=worker,
        overlay_jpeg=overlay,
    )


def _worker_setup() -> None:
    """Each worker: one PyTorch thread (a worker is one core's task)."""
    import torch

    torch.set_num_threads(1)


def run_tasks(
    tasks: Sequence[EvalTask],
    *,
    scheduler: str | None = None,
    jobs: int = 2,
    progress: bool = True,
    on_record: Callable[[CaseRecord], None] | None = None,
) -> tuple[list[CaseRecord], int, str]:
    """Run the tasks on Dask distributed, each case a task; records come back in the tasks' order.

    Args:
        tasks: the cases.
        scheduler: a Dask scheduler's address (``tcp://host:8786``); None: a ``LocalCluster`` of ``jobs``
            worker processes with one thread each.
        jobs: local worker processes.
        progress: a tqdm bar on stderr.
        on_record: called with each record as it arrives (in completion order).

    Returns:
        ``(records, workers, scheduler address)``.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=max(1, jobs),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="20s")
    try:
        client.run(_worker_setup)
        workers = len(client.scheduler_info().get("workers", {}))
        address = client.scheduler.address if cluster is None else f"LocalCluster ({workers} processes)"
        futures = client.map(run_task, list(tasks), key=[f"case-{i}-{t.name}" for i, t in enumerate(tasks)],
                             pure=False)  # fmt: skip
        order = {f.key: i for i, f in enumerate(futures)}
        out: list[CaseRecord | None] = [None] * len(tasks)
        bar = tqdm(total=len(tasks), desc="evaluate", unit="case", file=sys.stderr, disable=not progress)
        for fut in as_completed(futures):
            rec = fut.result()
            out[order[fut.key]] = rec
            bar.set_postfix_str(rec.name, refresh=False)
            bar.update()
            if on_record is not None:
                on_record(rec)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    assert all(r is not None for r in out)
    return [r for r in out if r is not None], workers, address


def evaluate(
    target: str | Path,
    *,
    protocol: str | None = None,
    landmarks: str = "fused",
    room: str | None = None,
    cases: int | None = None,
    calibration: str | None = None,
    scheduler: str | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> Evaluation:
    """Resolve ``target`` and evaluate every case (see the module docstring)."""
    t0 = time.perf_counter()
    tasks = resolve_tasks(
        target, protocol=protocol, landmarks=landmarks, room=room, cases=cases, calibration=calibration
    )
    records, workers, address = run_tasks(tasks, scheduler=scheduler, jobs=jobs, progress=progress)
    return Evaluation(str(target), records, time.perf_counter() - t0, workers, address)


def write_results(evaluation: Evaluation, out_dir: Path, summary: dict[str, Any]) -> Path:
    """``results.json`` (every record and the summary) and ``overlays/NAME.jpg`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "overlays").mkdir(exist_ok=True)
    docs = []
    for r in evaluation.records:
        rel = None
        if r.overlay_jpeg is not None:
            rel = f"overlays/{r.name.replace('/', '_')}.jpg"
            (out_dir / rel).write_bytes(r.overlay_jpeg)
        docs.append(r.to_json(rel))
    path = out_dir / "results.json"
    doc = {
        "schema": "positioning.evaluation/1",
        "target": evaluation.target,
        "seconds": round(evaluation.seconds, 1),
        "workers": evaluation.workers,
        "scheduler": evaluation.scheduler,
        "summary": json_safe(summary),
        "cases": docs,
    }
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))
    return path
