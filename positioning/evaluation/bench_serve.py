"""``positioning bench serve``: the service's stream latency and throughput, with 1 and 8 clients.

A server on the simulated room (real gRPC on a localhost port, real perception) with one session; each
client watches the session's estimates for ``--seconds``. Printed per client count:

* latency from the frame's arrival in the server to the client's receipt of its estimate (median, p95):
  perception + plan preview + the service's own share (queueing, conversion, gRPC);
* the service's own share: that latency minus the server's frame-to-estimate time (median, p95);
* estimates per second per client (each client gets the latest estimate; none is queued);
* the process's peak memory (server and clients in one process here).

Clients and server share a machine and its monotonic clock (the estimate carries the frame's arrival
time on it), so the latency is exact to the clock's resolution.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from positioning.evaluation.figures import median_p95
from positioning.perception.landmarks.base import LANDMARK_MODES

__all__ = ["benchmark_serve", "main"]


def _watch(address: str, session_id: str, seconds: float, out: dict[str, Any]) -> None:
    from positioning.service.client import Client

    latencies, service, received = [], [], 0
    with Client(address) as c:
        stream = c.watch(session_id, timeout_s=seconds + 30)
        end = time.monotonic() + seconds
        for est in stream:
            now = time.monotonic_ns()
            received += 1
            if est.frame_received_monotonic_ns:
                total = (now - est.frame_received_monotonic_ns) / 1e6
                latencies.append(total)
                service.append(total - est.latency_ms)
            if time.monotonic() >= end:
                break
        stream.cancel()
    out.update(latencies=latencies, service=service, received=received)


def benchmark_serve(
    *, clients: Sequence[int] = (1, 8), seconds: float = 20.0, landmarks: str = "fused", frames: int = 15
) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring)."""
    from positioning.service.app import AppSettings, build_server
    from positioning.service.client import Client
    from positioning.service.server import ServerSettings

    server = build_server(
        AppSettings(frames=frames, landmarks=landmarks, no_audit=True, server=ServerSettings(port=0))
    )
    server.start()
    results: dict[str, Any] = {"landmarks": landmarks, "seconds": seconds, "runs": []}
    try:
        with Client(server.address) as c:
            session = c.start_session("chest")
            # warm up: models loaded, first previews made
            stream = c.watch(session.session_id, timeout_s=120)
            for i, _ in enumerate(stream):
                if i >= 3:
                    break
            stream.cancel()
            for n in clients:
                outs: list[dict[str, Any]] = [{} for _ in range(n)]
                frames_before = server.hub.device_status().frames_delivered
                t0 = time.monotonic()
                threads = [
                    threading.Thread(
                        target=_watch, args=(server.address, session.session_id, seconds, outs[i])
                    )
                    for i in range(n)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - t0
                perceived = server.hub.device_status().frames_delivered - frames_before
                lat = [v for o in outs for v in o.get("latencies", [])]
                svc = [v for o in outs for v in o.get("service", [])]
                rates = [o.get("received", 0) / elapsed for o in outs]
                results["runs"].append(
                    {
                        "clients": n,
                        "frame_to_client_ms": median_p95(lat),
                        "service_share_ms": median_p95(svc),
                        "estimates_per_s_per_client": {
                            "median": round(float(np.median(rates)), 2),
                            "min": round(float(np.min(rates)), 2),
                        },
                        "frames_perceived_per_s": round(perceived / elapsed, 2),
                    }
                )
            c.end_session(session.session_id)
    finally:
        server.stop()
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return results


def format_results(r: dict[str, Any]) -> str:
    lines = [f"bench serve: simulated room, landmarks {r['landmarks']}, {r['seconds']:g} s per run"]
    for run in r["runs"]:
        f, s, e = run["frame_to_client_ms"], run["service_share_ms"], run["estimates_per_s_per_client"]
        lines.append(
            f"  {run['clients']} client(s): frame to client {f['median']} / {f['p95']} ms (median / p95), "
            f"service share {s['median']} / {s['p95']} ms, {e['median']} estimates/s per client "
            f"(min {e['min']}), {run['frames_perceived_per_s']} frames perceived/s"
        )
    lines.append(f"  peak memory (server and clients, one process): {r['peak_rss_mb']} MB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench serve", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per run (default 20)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--landmarks", default="fused", choices=LANDMARK_MODES)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    r = benchmark_serve(clients=args.clients, seconds=args.seconds, landmarks=args.landmarks)
    print(format_results(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
