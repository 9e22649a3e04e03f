"""One exception hierarchy for the whole package.

Every error a user or an integrating system can meet derives from :class:`PositioningError`, so the CLI
and (later) the gRPC layer map errors to exit codes and status codes in exactly one place.
"""

from __future__ import annotations

__all__ = [
    "PositioningError",
    "RecordingError",
    "RecordingNotFoundError",
    "CorruptRecordingError",
    "MissingStreamError",
    "CalibrationError",
    "ScenarioError",
    "NoPatientError",
    "PerceptionError",
    "ProtocolError",
]


class PositioningError(Exception):
    """Base class of every error raised on purpose by this package."""

    #: Short stable code, used by the CLI's JSON output and by the service's status mapping.
    code: str = "POSITIONING_ERROR"


class RecordingError(PositioningError):
    """A recording cannot be read or written."""

    code = "RECORDING_ERROR"


class RecordingNotFoundError(RecordingError):
    """The recording file does not exist."""

    code = "RECORDING_NOT_FOUND"


class CorruptRecordingError(RecordingError):
    """The file exists but is not a readable RealSense recording (truncated, wrong format, empty)."""

    code = "RECORDING_CORRUPT"


class MissingStreamError(RecordingError):
    """The recording or device has no stream of the kind that is needed (e.g. no depth)."""

    code = "STREAM_MISSING"


class CalibrationError(PositioningError):
    """A calibration file is missing, malformed or physically implausible."""

    code = "CALIBRATION_ERROR"


class ScenarioError(PositioningError):
    """A simulation scenario is unknown or malformed."""

    code = "SCENARIO_ERROR"


class PerceptionError(PositioningError):
    """Perception could not produce a patient state from a frame."""

    code = "PERCEPTION_ERROR"


class NoPatientError(PerceptionError):
    """No patient on the table (empty table, table not in view, ...)."""

    code = "NO_PATIENT"


class ProtocolError(PositioningError):
    """A scan protocol is unknown or malformed."""

    code = "PROTOCOL_ERROR"
