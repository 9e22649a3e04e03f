"""The benchmarks' headline form of a list of times or errors: median and p95, rounded to 0.1."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["median_p95"]


def median_p95(values: Sequence[float]) -> dict[str, float | None]:
    """``{"median": ..., "p95": ...}`` of the finite values (None for both when there are none)."""
    v = [float(x) for x in values if math.isfinite(x)]
    if not v:
        return {"median": None, "p95": None}
    return {"median": round(float(np.median(v)), 1), "p95": round(float(np.percentile(v, 95)), 1)}
