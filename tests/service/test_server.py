"""The gRPC service over a real channel on localhost: every call, the status codes, streams, security,
health and reflection."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from positioning.service.client import Client, describe_error
from positioning.service.protos import load_stubs
from positioning.sim.room_source import RoomEvent

pb2, pb2_grpc = load_stubs()


def _field(e: grpc.RpcError) -> str | None:
    status = rpc_status.from_call(e)
    if status is None:
        return None
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br) and br.field_violations:
            return br.field_violations[0].field
    return None


@pytest.fixture
def client(server):
    with Client(server.address) as c:
        yield c


@pytest.fixture
def session(client):
    s = client.start_session("chest", operator="rt.jones", table_position_mm=1000.0)
    yield s
    try:
        client.end_session(s.session_id)
    except grpc.RpcError:
        pass


def test_protocols_and_device(client, server):
    names = [p.name for p in client.protocols()]
    assert "chest" in names and "head" in names
    chest = next(p for p in client.protocols() if p.name == "chest")
    assert "HFS" in chest.accepted_positions
    assert (chest.body_region, chest.superior_landmark, chest.inferior_landmark) == (
        "chest",
        "lung_apex",
        "costophrenic",
    )
    d = client.device()
    assert "simulated" in d.camera_model and d.camera_ok and len(d.calibration_sha256) == 64
    assert d.frames_delivered > 0 and 0.5 < d.depth_fill_rate <= 1.0


def test_a_session_from_start_to_end(client, session, wait_for_plan):
    sid = session.session_id
    assert session.protocol == "chest" and session.active and session.table_position_mm == 1000.0
    est = wait_for_plan(client, sid)
    assert est.state.status == "OK" and est.state.patient_position == "HFS"
    assert len(est.state.landmarks) >= 10 and est.latency_ms >= 0.0
    plan = client.plan(sid)
    assert plan.ok and plan.HasField("table_offset") and plan.scan_range.HasField("first_slice_table_mm")
    edited = client.plan(sid, (plan.scan_range.start_mm - 50.0, plan.scan_range.end_mm))
    assert edited.scan_range.start_mm == pytest.approx(plan.scan_range.start_mm - 50.0, abs=1.0)
    overlay = client.overlay(sid)
    assert overlay.png[:8] == b"\x89PNG\r\n\x1a\n" and overlay.width_px == 848
    assert abs(overlay.frame_received_unix_ms / 1000.0 - time.time()) < 30.0
    small = client.overlay(sid, jpeg=True)
    assert small.jpeg[:3] == b"\xff\xd8\xff" and not small.png and len(small.jpeg) < len(overlay.png) / 4
    lateral = plan.table_offset.lateral_patient_move_mm
    words = plan.table_offset.lateral_patient_move_description
    assert words == "none" if abs(lateral) < 1.0 else f"{abs(lateral):.0f} mm toward the patient's" in words
    assert client.report_table_position(sid, 1100.0).table_position_mm == 1100.0
    confirmed = client.confirm(sid, operator="rt.jones", note="ok")
    assert confirmed.operator == "rt.jones" and confirmed.plan.ok and not confirmed.range_edited
    assert client.session(sid).confirmed
    ended = client.end_session(sid)
    assert not ended.active
    with pytest.raises(grpc.RpcError) as e:
        client.plan(sid)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_unknown_session_is_not_found_and_names_the_field(client):
    with pytest.raises(grpc.RpcError) as e:
        client.plan("no-such-session")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and _field(e.value) == "session_id"
    assert "session_id" in describe_error(e.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"protocol": ""}, "protocol"),
        ({"protocol": "no-such-protocol"}, "protocol"),
        ({"protocol": "chest", "expected_position": "HFX"}, "expected_position"),
        ({"protocol": "chest", "patient_height_mm": 90000.0}, "patient_height_mm"),
        ({"protocol": "chest", "patient_weight_kg": float("nan")}, "patient_weight_kg"),
    ],
)
def test_a_malformed_start_is_invalid_argument_naming_the_field(client, kwargs, field):
    protocol = kwargs.pop("protocol")
    with pytest.raises(grpc.RpcError) as e:
        client.start_session(protocol, **kwargs)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(e.value) == field


def test_fluoroscopy_procedures_and_a_set_up_over_the_channel(client, session, wait_for_plan):
    procs = client.stub.ListProcedures(pb2.ListProceduresRequest(), timeout=10).procedures
    ercp = next(p for p in procs if p.name == "ercp")
    assert "HFS" in ercp.accepted_positions and ercp.superior_landmark == "xiphoid"
    sid = session.session_id
    wait_for_plan(client, sid)  # frames have been perceived
    plan = client.stub.GetFluoroPlan(pb2.GetFluoroPlanRequest(session_id=sid, procedure="ercp"), timeout=30)
    assert plan.procedure == "ercp" and plan.patient_position == "HFS"
    assert plan.HasField("target_center") and plan.HasField("field_pa") and plan.HasField("field_lateral")
    assert plan.target_center.x_mm < 0 and 0 < plan.field_pa.area_saved_percent < 100  # the patient's right
    assert abs(plan.table_offset.residual.z_mm) < 1.0
    assert '"schema": "positioning.fluoro_plan/1"' in plan.plan_json
    for req, field in (
        (pb2.GetFluoroPlanRequest(session_id=sid, procedure=""), "procedure"),
        (pb2.GetFluoroPlanRequest(session_id=sid, procedure="no-such"), "procedure"),
        (
            pb2.GetFluoroPlanRequest(session_id=sid, procedure="ercp", expected_position="HFX"),
            "expected_position",
        ),
    ):
        with pytest.raises(grpc.RpcError) as e:
            client.stub.GetFluoroPlan(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(e.value) == field


def test_range_and_index_fields_are_checked(client, session):
    sid = session.session_id
    req = pb2.GetPlanRequest(session_id=sid, scan_start_mm=-900.0)
    with pytest.raises(grpc.RpcError) as e:
        client.stub.GetPlan(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(e.value) == "scan_end_mm"
    with pytest.raises(grpc.RpcError) as e:
        client.plan(sid, (-500.0, -900.0))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(e.value) == "scan_start_mm"
    with pytest.raises(grpc.RpcError) as e:
        next(iter(client.events(sid, from_index=-1, timeout_s=5)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _field(e.value) == "from_index"


def test_one_session_per_camera(client, session):
    with pytest.raises(grpc.RpcError) as e:
        client.start_session("chest")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert session.session_id in e.value.details()


def test_a_stream_honours_its_deadline(client, session):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(client.events(session.session_id, timeout_s=0.5))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5.0


def test_eight_clients_and_a_slow_one_share_the_camera(server, client, session):
    sid = session.session_id
    counts = [0] * 8
    slow_count = [0]
    stop = threading.Event()

    def watch(i: int) -> None:
        with Client(server.address) as c:
            stream = c.watch(sid, timeout_s=60)
            for _ in stream:
                counts[i] += 1
                if stop.is_set():
                    break
            stream.cancel()

    def slow() -> None:
        with Client(server.address) as c:
            stream = c.watch(sid, timeout_s=60)
            for _ in stream:
                slow_count[0] += 1
                if stop.wait(3.0):  # reads one estimate every 3 s
                    break
            stream.cancel()

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(8)] + [threading.Thread(target=slow)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while min(counts) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(10)
    assert min(counts) >= 3, counts  # every fast client got several estimates while the slow one dawdled
    assert slow_count[0] <= 2


def test_health_and_reflection_answer(client, server):
    assert client.health() == "SERVING"
    assert client.health("positioning.v1.Positioning") == "SERVING"
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for a in answers for s in a.list_services_response.service}
    assert {"positioning.v1.Positioning", "grpc.health.v1.Health"} <= services


def test_limits_give_resource_exhausted(make_server, wait_for_plan):
    server = make_server(max_message_bytes=65536, max_streams=2)
    with Client(server.address) as c:
        s = c.start_session("chest")
        wait_for_plan(c, s.session_id)
        with pytest.raises(grpc.RpcError) as e:
            c.overlay(s.session_id)  # a PNG of about 500 kB
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # two streams take both slots; a stream refused because a probe held a slot for a moment retries
        stop = threading.Event()
        open_streams: list = []

        def hold() -> None:
            while not stop.is_set():
                stream = c.events(s.session_id, timeout_s=20)
                open_streams.append(stream)
                try:
                    list(stream)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        return
                time.sleep(0.05)

        readers = [threading.Thread(target=hold) for _ in range(2)]
        for r in readers:
            r.start()
        refused = None
        deadline = time.monotonic() + 15  # both streams are up on the server within a moment
        while refused is None and time.monotonic() < deadline:
            try:
                c.protocols()
                time.sleep(0.2)
            except grpc.RpcError as e:
                refused = e.code()
        stop.set()
        for st in open_streams:
            st.cancel()
        for r in readers:
            r.join(5)
        assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
        deadline = time.monotonic() + 10  # cancelled streams free their slots within a wait period
        while True:
            try:
                assert c.protocols()
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.2)


def test_camera_lost_and_back(make_server):
    server = make_server(events=(RoomEvent(4.0, "camera_lost"), RoomEvent(7.0, "still")))
    with Client(server.address) as c:
        s = c.start_session("chest")
        events = c.events(s.session_id, timeout_s=60)
        kinds = []
        health_while_lost = None
        plan_while_lost = None
        for event in events:
            kinds.append(event.kind)
            if event.kind == "CAMERA_LOST":
                health_while_lost = c.health()
                with pytest.raises(grpc.RpcError) as e:
                    c.plan(s.session_id)
                plan_while_lost = e.value.code()
            if event.kind == "CAMERA_BACK":
                break
        events.cancel()
        assert "CAMERA_LOST" in kinds and kinds[-1] == "CAMERA_BACK"
        assert health_while_lost == "NOT_SERVING" and plan_while_lost == grpc.StatusCode.UNAVAILABLE
        deadline = time.monotonic() + 10
        while c.health() != "SERVING" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.health() == "SERVING"


def test_the_console_receives_the_confirmed_plan_and_motion_is_an_event(make_server, wait_for_plan):
    # the product's default landmarks: with depth alone, a still patient confirmed on a 3-frame clip has
    # read as moved by 10-11 mm along the table (the scene network's keypoint jitter; see the note)
    # as positioning serve runs it: concurrent landmarks and previews
    server = make_server(events=(RoomEvent(3600.0, "moved"),), landmarks="fused", live=True)
    with Client(server.address) as tablet, Client(server.address) as console:
        s = tablet.start_session("chest", operator="rt.jones")
        plans = console.confirmed_plans(timeout_s=60)
        wait_for_plan(tablet, s.session_id)
        confirmed = tablet.confirm(s.session_id)
        received = next(iter(plans))
        plans.cancel()
        assert received.session_id == s.session_id and received.plan.plan_json == confirmed.plan.plan_json
        server.hub.opened.source.bring_forward("moved")  # the patient shifts 25 mm sideways now
        moved = None
        for event in tablet.events(s.session_id, timeout_s=60):
            if event.kind == "PATIENT_MOVED":
                moved = event
                break
        assert moved is not None and moved.displacement_mm["sideways"] == pytest.approx(25.0, abs=8.0)


def test_a_stream_ends_with_unavailable_when_the_server_stops(make_server):
    server = make_server()
    with Client(server.address) as c:
        s = c.start_session("chest")
        events = c.events(s.session_id, timeout_s=30)
        threading.Timer(0.5, server.stop).start()
        with pytest.raises(grpc.RpcError) as e:
            list(events)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_a_live_streams_steady_frames_say_which_perception_they_repeat(make_server):
    # as positioning serve runs it: a still patient's frames repeat the last perception in full, and the
    # estimate says so (repeats_frame_number); the product's default landmarks (depth alone jitters by up
    # to 11.7 mm on a still patient, above the 10 mm a repeated perception may move)
    server = make_server(landmarks="fused", live=True)
    with Client(server.address) as c:
        sid = c.start_session("chest").session_id
        stream = c.watch(sid, timeout_s=60)
        seen = []
        for estimate in stream:
            seen.append(estimate)
            if estimate.HasField("repeats_frame_number"):
                break
        stream.cancel()
    repeat = seen[-1]
    assert (
        repeat.HasField("repeats_frame_number")
        and repeat.repeats_frame_timestamp_ms < repeat.frame_timestamp_ms
    )
    assert repeat.state.status == "OK"
