"""The conventions every stage shares: DICOM patient positions, arm states, and the body axes of each
position in the scanner frame. Simulator, perception and planning all import them from here.

Convention: scanner frame (IEC 61217 fixed system): +x lateral (to the right of an observer at the foot of
the table facing the gantry), +y along the table into the gantry, +z up. Head-first = head toward +y.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np

__all__ = ["PatientPosition", "ArmState", "BODY_AXES"]


class PatientPosition(enum.StrEnum):
    """DICOM Patient Position (0018,5100) codes."""

    HFS = "HFS"
    HFP = "HFP"
    FFS = "FFS"
    FFP = "FFP"
    HFDL = "HFDL"
    HFDR = "HFDR"
    FFDL = "FFDL"
    FFDR = "FFDR"

    @property
    def head_first(self) -> bool:
        return self.value.startswith("HF")

    @property
    def lying(self) -> str:
        """``"supine"``, ``"prone"``, ``"left_decubitus"`` or ``"right_decubitus"``."""
        return {"S": "supine", "P": "prone", "DL": "left_decubitus", "DR": "right_decubitus"}[self.value[2:]]

    @property
    def posture(self) -> str:
        """``"supine"``, ``"prone"`` or ``"decubitus"`` (either side): the groups models are fitted per."""
        return "decubitus" if self.value[2] == "D" else self.lying


class ArmState(enum.StrEnum):
    """Where the arms are, as CT set-ups care about it."""

    SIDES = "sides"  #: along the body (head and neck scans, lower extremity)
    RAISED = "raised"  #: above the head (trunk scans)
    CHEST = "chest"  #: hands resting on the chest / upper abdomen


_X, _Y, _Z = np.eye(3)
#: Scanner-frame unit vectors ``(superior, posterior, left)`` of the patient's body for each position;
#: left = posterior x superior keeps the body frame (DICOM LPS) right-handed.
BODY_AXES: Mapping[PatientPosition, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    PatientPosition.HFS: (_Y, -_Z, _X),
    PatientPosition.HFP: (_Y, _Z, -_X),
    PatientPosition.FFS: (-_Y, -_Z, -_X),
    PatientPosition.FFP: (-_Y, _Z, _X),
    PatientPosition.HFDL: (_Y, -_X, -_Z),
    PatientPosition.HFDR: (_Y, _X, _Z),
    PatientPosition.FFDL: (-_Y, _X, -_Z),
    PatientPosition.FFDR: (-_Y, -_X, _Z),
}
for _axes in BODY_AXES.values():
    for _a in _axes:
        _a.setflags(write=False)
