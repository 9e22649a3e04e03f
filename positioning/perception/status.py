"""What perception concluded about a frame: a status with a stable code and a message, and the errors that
carry a fatal status.

Codes are stable strings (they reach the CLI's JSON ``checks`` and, later, the service), so rename nothing.
``SECOND_PERSON`` is a warning: the patient is still returned. The others mean there is no patient to plan
for; the matching exceptions derive from :class:`positioning.errors.PerceptionError` (and from
:class:`~positioning.errors.NoPatientError` where the scene shows that nobody is on the table).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from positioning.errors import NoPatientError, PerceptionError

__all__ = [
    "PerceptionStatus",
    "PerceptionNote",
    "NoDepthError",
    "NoTableError",
    "EmptyTableError",
    "error_for_status",
]


class PerceptionStatus(enum.Enum):
    """Outcome of table and patient perception on one frame. The value is the stable code."""

    OK = "OK"
    NO_DEPTH = "NO_DEPTH"
    NO_TABLE = "NO_TABLE"
    EMPTY_TABLE = "EMPTY_TABLE"
    SECOND_PERSON = "SECOND_PERSON"

    @property
    def code(self) -> str:
        """The stable code (same as ``value``)."""
        return self.value

    @property
    def message(self) -> str:
        """One human-readable sentence for the operator."""
        return _MESSAGES[self]

    @property
    def has_patient(self) -> bool:
        """Whether a patient segment comes with this status (OK, or OK with a warning)."""
        return self in (PerceptionStatus.OK, PerceptionStatus.SECOND_PERSON)

    @property
    def severity(self) -> str:
        """``"info"``, ``"warning"`` or ``"error"`` (the ``checks`` severities)."""
        return {PerceptionStatus.OK: "info", PerceptionStatus.SECOND_PERSON: "warning"}.get(self, "error")


_MESSAGES = {
    PerceptionStatus.OK: "Table and patient found.",
    PerceptionStatus.NO_DEPTH: (
        "The depth image is (almost) empty: check that the camera is uncovered and the room is lit."
    ),
    PerceptionStatus.NO_TABLE: (
        "No scanner table in view: no horizontal table-sized surface at table height. Check the camera's "
        "view and its calibration."
    ),
    PerceptionStatus.EMPTY_TABLE: "The table is empty: nobody is lying on it.",
    PerceptionStatus.SECOND_PERSON: (
        "Someone else is standing beside the table; step away so the patient can be measured reliably."
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerceptionNote:
    """Something perception noticed that may make its result wrong, with a stable code (it reaches the
    plan's ``checks`` as it is): a covered patient, an unusual table, sources that disagree.

    Attributes:
        code: stable code (e.g. ``PATIENT_COVERED``, ``TABLE_UNUSUAL``, ``ORIENTATION_DISAGREE``).
        severity: ``"info"``, ``"warning"`` or ``"error"``.
        message: one or two sentences for the technologist.
        details: measured values (JSON-friendly).
    """

    code: str
    severity: str
    message: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in ("info", "warning", "error"):
            raise ValueError(f"severity must be info, warning or error, got {self.severity!r}")


class NoDepthError(PerceptionError):
    """The frame has too little valid depth to find anything."""

    code = PerceptionStatus.NO_DEPTH.code
    status = PerceptionStatus.NO_DEPTH


class NoTableError(NoPatientError):
    """No scanner table in view (wrong view, wrong calibration, or a scene that is not a CT room)."""

    code = PerceptionStatus.NO_TABLE.code
    status = PerceptionStatus.NO_TABLE


class EmptyTableError(NoPatientError):
    """The table is in view but nobody lies on it."""

    code = PerceptionStatus.EMPTY_TABLE.code
    status = PerceptionStatus.EMPTY_TABLE


def error_for_status(status: PerceptionStatus, detail: str = "") -> PerceptionError | None:
    """The exception that a fatal status maps to (None for OK and SECOND_PERSON).

    Args:
        status: the status.
        detail: extra text appended to the status message (measured values, thresholds).
    """
    cls = {
        PerceptionStatus.NO_DEPTH: NoDepthError,
        PerceptionStatus.NO_TABLE: NoTableError,
        PerceptionStatus.EMPTY_TABLE: EmptyTableError,
    }.get(status)
    if cls is None:
        return None
    return cls(f"{status.message} {detail}".strip())
