"""Silence the native (C/C++) libraries' chatter on stderr: Warp's CUDA notice, LiteRT's INFO lines.

Those messages are written straight to file descriptor 2 by C++ code, so Python's logging cannot filter
them. :func:`quiet_native_stderr` points fd 2 at /dev/null for the duration of a block; Python exceptions
raised inside still propagate (with their messages) after the block. Set ``POSITIONING_NATIVE_LOGS=1`` to
see everything.

Note: fd 2 is process-wide; text another thread writes to stderr during the block is dropped too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["quiet_native_stderr", "quiet_native_stderr_at_exit"]

_lock = threading.RLock()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Discard what native code writes to stderr inside the block."""
    if os.environ.get("POSITIONING_NATIVE_LOGS") == "1":
        yield
        return
    with _lock:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _silence_fd2() -> None:
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def quiet_native_stderr_at_exit() -> None:
    """At interpreter exit, after Python has printed any traceback, drop native shutdown chatter (Warp
    checks for a CUDA driver while tearing down and says it found none). Call after importing the library
    whose exit handlers print: atexit runs handlers last-registered first."""
    if os.environ.get("POSITIONING_NATIVE_LOGS") != "1":
        atexit.register(_silence_fd2)
