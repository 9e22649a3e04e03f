#!/usr/bin/env bash
# Set up the project on a fresh Debian machine with Python 3.11: system library, virtual environment,
# Python dependencies, the gRPC stubs and the BlazePose model bundle (built from PyPI's mediapipe==0.10.21 wheel).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# pyrealsense2 and open3d need libusb-1.0 at import time; the service's TLS tests make certificates with
# openssl; the tablet app is built with Node.js and npm and tested in Debian's Chromium.
APT=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || APT+=(libusb-1.0-0)
command -v openssl >/dev/null || APT+=(openssl)
command -v chromium >/dev/null || APT+=(chromium)
command -v npm >/dev/null || APT+=(nodejs npm)
if [ ${#APT[@]} -gt 0 ]; then
  echo "setup: installing ${APT[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
# torch==2.13.0 is pinned in pyproject.toml: the CPU build (no multi-GB CUDA download where a local wheel
# of it is configured for pip).
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# The gRPC stubs from protos/ (generated, never committed; regenerated on import when the proto changes).
.venv/bin/python -m positioning.service.protos >/dev/null

# The tablet app (tablet/): npm packages from the lock file, the TypeScript client generated from the
# proto, type-checked and bundled into tablet/dist (never committed). Reinstalled only when the lock changes.
if [ ! -f tablet/node_modules/.package-lock.json ] || ! cmp -s tablet/package-lock.json tablet/node_modules/.lock-installed; then
  (cd tablet && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.lock-installed)
fi
(cd tablet && PYTHON="$PWD/../.venv/bin/python" npm run -s build >/dev/null)

# The BlazePose bundle for MediaPipe's PoseLandmarker (not committed; built once, cached).
.venv/bin/python -m positioning.perception.landmarks.model_build --out models/pose_landmarker_full.task
echo "setup: done (.venv/bin/positioning is the command)" >&2
