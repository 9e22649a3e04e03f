"""Build the BlazePose ``PoseLandmarker`` model bundle (``.task``) at set-up time.

MediaPipe 1.x has only the Tasks API and ships no model. The BlazePose detector and landmark models ship
inside PyPI's ``mediapipe==0.10.21`` wheel (the last release with the legacy solutions); this module
downloads that wheel with pip (cached under ``~/.cache/positioning/wheels``), extracts the two ``.tflite``
files, adds the image-input metadata the Tasks API needs, and zips them into a ``.task`` bundle:

* ``pose_detector.tflite``: ``mediapipe/modules/pose_detection/pose_detection.tflite``, 224x224 float
  input in [-1, 1] (normalisation mean 127.5, std 127.5, as in MediaPipe's ``pose_detection_cpu.pbtxt``);
* ``pose_landmarks_detector.tflite``: ``mediapipe/modules/pose_landmark/pose_landmark_<variant>.tflite``,
  256x256 float input in [0, 1] (mean 0, std 255, as in ``pose_landmark_by_roi_cpu.pbtxt``).

The metadata is written with MediaPipe's own ``metadata_writer``. In mediapipe 1.x that module cannot be
imported because ``metadata.py`` imports a compiled helper, ``mediapipe.tasks.cc.metadata.python.
_pywrap_metadata_version``, that the wheel no longer contains. The helper has one function,
``GetMinimumMetadataParserVersion(metadata_buffer) -> str``; :func:`minimum_metadata_parser_version` is a
Python port of it (``mediapipe/tasks/cc/metadata/metadata_version.cc``), installed as a stand-in module in
``sys.modules`` only for the duration of the import and only when the real module is missing.

Example:
    ``python -m positioning.perception.landmarks.model_build`` (writes ``models/pose_landmarker_full.task``;
    ``--force`` rebuilds, ``--out PATH`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from positioning import resources
from positioning.errors import PositioningError

__all__ = [
    "MEDIAPIPE_WHEEL_VERSION",
    "VARIANTS",
    "BUNDLE_DETECTOR_ENTRY",
    "BUNDLE_LANDMARKS_ENTRY",
    "DETECTOR_NORM_MEAN_STD",
    "LANDMARKS_NORM_MEAN_STD",
    "ModelBuildError",
    "default_task_path",
    "default_wheel_dir",
    "download_mediapipe_wheel",
    "extract_pose_models",
    "minimum_metadata_parser_version",
    "add_image_input_metadata",
    "read_image_input_normalization",
    "is_valid_pose_task",
    "build_pose_landmarker_task",
    "main",
]

_log = logging.getLogger(__name__)

#: The last mediapipe release whose wheel carries the BlazePose ``.tflite`` files.
MEDIAPIPE_WHEEL_VERSION = "0.10.21"
#: BlazePose landmark model variants; the 0.10.21 wheel contains only ``full`` (the others were fetched on
#: demand by the legacy solution API).
VARIANTS = ("lite", "full", "heavy")
#: Entry names the Tasks ``PoseLandmarker`` looks for inside a ``.task`` bundle.
BUNDLE_DETECTOR_ENTRY = "pose_detector.tflite"
BUNDLE_LANDMARKS_ENTRY = "pose_landmarks_detector.tflite"
#: Input normalisation ``(mean, std)``: ``tensor = (pixel - mean) / std`` with pixels in [0, 255].
#: Detector: [-1, 1] (output_tensor_float_range in mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt).
DETECTOR_NORM_MEAN_STD = (127.5, 127.5)
#: Landmark model: [0, 1] (mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu.pbtxt).
LANDMARKS_NORM_MEAN_STD = (0.0, 255.0)

_WHEEL_DETECTOR_PATH = "mediapipe/modules/pose_detection/pose_detection.tflite"
_WHEEL_LANDMARKS_PATH = "mediapipe/modules/pose_landmark/pose_landmark_{variant}.tflite"
# The .tflite files are platform independent; pin one wheel that exists for every host.
_PIP_PLATFORM_ARGS = (
    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
    "--platform", "manylinux_2_28_x86_64",
    "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64",
)  # fmt: skip
_PIP_TIMEOUT_S = 900.0
_TFLITE_IDENTIFIER = b"TFL3"
_METADATA_NAME = b"TFLITE_METADATA"
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that the bundle's bytes are reproducible
_PYWRAP_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


class ModelBuildError(PositioningError):
    """The model bundle cannot be built (no network for the download, unexpected wheel content, ...)."""

    code = "MODEL_BUILD_ERROR"


def default_task_path(variant: str = "full") -> Path:
    """``<repo>/models/pose_landmarker_<variant>.task``, where the backend looks for the model."""
    return resources.models_dir() / f"pose_landmarker_{variant}.task"


def default_wheel_dir() -> Path:
    """``$XDG_CACHE_HOME/positioning/wheels`` (``~/.cache/positioning/wheels`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "positioning" / "wheels"


# --------------------------------------------------------------------------------------------------- wheel


def _cached_wheel(wheel_dir: Path, version: str) -> Path | None:
    for path in sorted(wheel_dir.glob(f"mediapipe-{version}-*.whl")):
        if zipfile.is_zipfile(path):
            return path
        _log.warning("removing corrupt cached wheel %s", path)
        path.unlink(missing_ok=True)
    return None


def download_mediapipe_wheel(
    wheel_dir: Path | None = None,
    *,
    version: str = MEDIAPIPE_WHEEL_VERSION,
    timeout_s: float = _PIP_TIMEOUT_S,
) -> Path:
    """Return the ``mediapipe==version`` wheel, downloading it with pip into ``wheel_dir`` if not cached.

    Args:
        wheel_dir: cache folder (created if needed); ``None`` means :func:`default_wheel_dir`. A wheel
            dropped there by hand (for an offline set-up) is used as is.
        version: the mediapipe release to fetch.
        timeout_s: limit for the pip run, in seconds.

    Returns:
        Path of the cached ``.whl`` file.

    Raises:
        ModelBuildError: pip is missing, fails (typically: no network) or produces no wheel.
    """
    wheel_dir = Path(wheel_dir) if wheel_dir is not None else default_wheel_dir()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached_wheel(wheel_dir, version)
    if cached is not None:
        _log.info("using cached wheel %s", cached)
        return cached
    with tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".download-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", *_PIP_PLATFORM_ARGS, f"mediapipe=={version}", "-d", tmp,
        ]  # fmt: skip
        _log.info("downloading mediapipe==%s with pip", version)
        offline_hint = (
            f"The model build downloads PyPI's mediapipe=={version} wheel (about 36 MB) once. Check the "
            f"network or proxy settings, or download the wheel elsewhere (pip download --no-deps "
            f"--only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 "
            f"mediapipe=={version}) and put it in {wheel_dir}."
        )
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as e:
            raise ModelBuildError(f"pip download timed out after {timeout_s:.0f} s. {offline_hint}") from e
        except OSError as e:
            raise ModelBuildError(f"cannot run pip ({e}). {offline_hint}") from e
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
            raise ModelBuildError(
                f"pip download of mediapipe=={version} failed (exit code {proc.returncode}):\n{tail}\n"
                f"{offline_hint}"
            )
        wheels = sorted(Path(tmp).glob(f"mediapipe-{version}-*.whl"))
        if not wheels:
            raise ModelBuildError(f"pip download left no mediapipe wheel in {tmp}. {offline_hint}")
        target = wheel_dir / wheels[0].name
        shutil.move(str(wheels[0]), target)
    return target


def extract_pose_models(wheel: Path, *, variant: str = "full") -> tuple[bytes, bytes]:
    """Read the pose detector and the landmark model of ``variant`` from a mediapipe wheel.

    Args:
        wheel: path of a ``mediapipe-0.10.x`` wheel.
        variant: one of :data:`VARIANTS`.

    Returns:
        ``(detector_tflite, landmarks_tflite)`` bytes, without metadata.

    Raises:
        ValueError: unknown variant.
        ModelBuildError: the wheel is unreadable or lacks the files.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    landmarks_path = _WHEEL_LANDMARKS_PATH.format(variant=variant)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = [p for p in (_WHEEL_DETECTOR_PATH, landmarks_path) if p not in names]
            if missing:
                present = sorted(n for n in names if n.startswith("mediapipe/modules/pose_landmark/"))
                raise ModelBuildError(
                    f"{wheel.name} has no {', '.join(missing)}; pose landmark files present: {present}"
                )
            detector, landmarks = zf.read(_WHEEL_DETECTOR_PATH), zf.read(landmarks_path)
    except zipfile.BadZipFile as e:
        raise ModelBuildError(f"{wheel} is not a readable wheel: {e}") from e
    for name, data in ((_WHEEL_DETECTOR_PATH, detector), (landmarks_path, landmarks)):
        if data[4:8] != _TFLITE_IDENTIFIER:
            raise ModelBuildError(f"{name} in {wheel.name} is not a TFLite model")
    return detector, landmarks


# ------------------------------------------------------------------------------------------------ metadata


def minimum_metadata_parser_version(metadata_buffer: bytes | bytearray) -> str:
    """The minimum metadata parser version a TFLite metadata flatbuffer needs.

    A Python port of ``GetMinimumMetadataParserVersion`` (``mediapipe/tasks/cc/metadata/metadata_version
    .cc``): ``"1.0.0"`` plus the version in which each schema member used by the metadata was introduced.

    Args:
        metadata_buffer: a ``ModelMetadata`` flatbuffer (file identifier ``M001``).

    Returns:
        A semantic version string such as ``"1.0.0"`` or ``"1.5.0"``.
    """
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytes(metadata_buffer), 0))
    found: list[tuple[int, int, int]] = [(1, 0, 0)]

    def files(items: list[Any] | None) -> None:
        for f in items or []:
            if f.type == fb.AssociatedFileType.VOCABULARY:
                found.append((1, 0, 1))
            if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                found.append((1, 4, 0))
            if f.version is not None:
                found.append((1, 4, 1))

    def units(items: list[Any] | None) -> None:
        introduced = {
            fb.ProcessUnitOptions.BertTokenizerOptions: (1, 1, 0),
            fb.ProcessUnitOptions.SentencePieceTokenizerOptions: (1, 1, 0),
            fb.ProcessUnitOptions.RegexTokenizerOptions: (1, 2, 1),
        }
        for u in items or []:
            if u.optionsType in introduced:
                found.append(introduced[u.optionsType])

    for sg in md.subgraphMetadata or []:
        for t in (sg.inputTensorMetadata or []) + (sg.outputTensorMetadata or []):
            files(t.associatedFiles)
            units(t.processUnits)
            content = t.content
            if content is not None and content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                found.append((1, 3, 0))
        files(sg.associatedFiles)
        for process_units in (sg.inputProcessUnits, sg.outputProcessUnits):
            if process_units is not None:
                found.append((1, 1, 0))
                units(process_units)
        if sg.inputTensorGroups is not None or sg.outputTensorGroups is not None:
            found.append((1, 2, 0))
        if sg.customMetadata is not None:
            found.append((1, 5, 0))
    files(md.associatedFiles)
    return ".".join(str(x) for x in max(found))


@contextlib.contextmanager
def _stand_in_version_module() -> Iterator[None]:
    """Provide ``_pywrap_metadata_version`` in ``sys.modules`` while importing, then remove it again."""
    added: list[str] = []
    parts = _PYWRAP_VERSION_MODULE.split(".")
    try:
        for i in range(3, len(parts)):  # mediapipe.tasks.cc, ...cc.metadata, ...cc.metadata.python, leaf
            name = ".".join(parts[: i + 1])
            if name in sys.modules:
                continue
            module = types.ModuleType(name)
            if i < len(parts) - 1:
                module.__path__ = []  # a package with nothing else in it
            else:
                module.GetMinimumMetadataParserVersion = minimum_metadata_parser_version  # type: ignore[attr-defined]
            sys.modules[name] = module
            added.append(name)
        yield
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


def _metadata_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """Import mediapipe's ``metadata_writer`` and ``metadata`` modules, working around the missing helper."""
    writer_name = "mediapipe.tasks.python.metadata.metadata_writers.metadata_writer"
    try:
        writer = importlib.import_module(writer_name)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("mediapipe.tasks.cc"):
            raise ModelBuildError(f"cannot import mediapipe's metadata writer: {e}") from e
        with _stand_in_version_module():
            writer = importlib.import_module(writer_name)
    return writer, importlib.import_module("mediapipe.tasks.python.metadata.metadata")


def add_image_input_metadata(
    model: bytes, *, norm_mean: float, norm_std: float, name: str, description: str
) -> bytes:
    """Add (or replace) image-input metadata in a single-input float TFLite model.

    Args:
        model: the ``.tflite`` bytes.
        norm_mean: normalisation mean, applied to all three RGB channels.
        norm_std: normalisation std: the model sees ``(pixel - norm_mean) / norm_std``.
        name: model name recorded in the metadata.
        description: model description recorded in the metadata.

    Returns:
        The model bytes with a ``TFLITE_METADATA`` entry: an RGB image input with the normalisation, and a
        plain feature entry for each output tensor.

    Raises:
        ModelBuildError: mediapipe's metadata writer is unavailable or rejects the model.
    """
    writer_mod, _ = _metadata_modules()
    from mediapipe.tasks.python.metadata.metadata_writers import writer_utils

    buf = bytearray(model)
    writer = None
    try:
        writer = writer_mod.MetadataWriter.create(buf)
        writer.add_general_info(name, description)
        writer.add_image_input(norm_mean=[float(norm_mean)], norm_std=[float(norm_std)])
        for tensor_name in writer_utils.get_output_tensor_names(buf):
            writer.add_feature_output(name=tensor_name)
        out, _json = writer.populate()
    except (ValueError, RuntimeError) as e:
        raise ModelBuildError(f"writing metadata for {name} failed: {e}") from e
    finally:
        # The writer's __del__ removes its temporary folder and fails if that runs at interpreter exit
        # (mediapipe keeps this frame alive): clean up now and drop the reference.
        if writer is not None:
            writer._temp_folder.cleanup()
        writer = None
    return bytes(out)


def read_image_input_normalization(model: bytes) -> tuple[list[float], list[float]]:
    """The ``(mean, std)`` lists of a model's image-input metadata.

    Raises:
        ModelBuildError: the model has no metadata or no normalisation on its first input.
    """
    _, metadata = _metadata_modules()
    try:
        md = json.loads(metadata.MetadataDisplayer.with_model_buffer(bytearray(model)).get_metadata_json())
        units = md["subgraph_metadata"][0]["input_tensor_metadata"][0]["process_units"]
        opts = next(u["options"] for u in units if u["options_type"] == "NormalizationOptions")
    except (ValueError, KeyError, IndexError, StopIteration) as e:
        raise ModelBuildError(f"model has no image-input normalisation metadata ({e!r})") from e
    return [float(x) for x in opts["mean"]], [float(x) for x in opts["std"]]


# -------------------------------------------------------------------------------------------------- bundle


def is_valid_pose_task(path: Path) -> bool:
    """Cheap structural check: a zip with both entries, each a TFLite model carrying metadata."""
    try:
        with zipfile.ZipFile(path) as zf:
            for entry in (BUNDLE_DETECTOR_ENTRY, BUNDLE_LANDMARKS_ENTRY):
                data = zf.read(entry)
                if data[4:8] != _TFLITE_IDENTIFIER or _METADATA_NAME not in data:
                    return False
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return True


def _write_bundle(entries: dict[str, bytes], out_path: Path) -> None:
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import AlignZipFile

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # Stored (uncompressed) and 4-byte aligned, like MediaPipe's create_model_asset_bundle, so that the
        # runtime can mmap the models; fixed timestamps so that rebuilding gives identical bytes.
        with AlignZipFile(tmp, mode="w", alignment=4) as zf:
            for name, data in entries.items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _smoke_test(path: Path) -> None:
    """Load the bundle with the Tasks API and run it once on a blank image."""
    import numpy as np
    from mediapipe import Image, ImageFormat
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)), running_mode=vision.RunningMode.IMAGE
    )
    try:
        with vision.PoseLandmarker.create_from_options(options) as landmarker:
            landmarker.detect(Image(image_format=ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8)))
    except Exception as e:  # mediapipe raises RuntimeError/ValueError with the C++ status text
        raise ModelBuildError(f"the built bundle {path} does not load in MediaPipe: {e}") from e


def build_pose_landmarker_task(
    out_path: Path,
    *,
    variant: str = "full",
    wheel_dir: Path | None = None,
    force: bool = False,
    verify: bool = True,
) -> Path:
    """Build a MediaPipe Tasks ``PoseLandmarker`` bundle from the BlazePose models in PyPI's wheel.

    Idempotent: an existing valid bundle is kept unless ``force``.

    Args:
        out_path: where to write the ``.task`` file (folders are created; written atomically).
        variant: landmark model variant, one of :data:`VARIANTS` (the 0.10.21 wheel has only ``"full"``).
        wheel_dir: wheel cache folder; ``None`` means ``~/.cache/positioning/wheels``.
        force: rebuild even if ``out_path`` already holds a valid bundle.
        verify: load the result with MediaPipe and run it once before returning.

    Returns:
        ``out_path``.

    Raises:
        ValueError: unknown variant.
        ModelBuildError: download, extraction, metadata or verification failed (the message says how to
            fix it; an existing file is left untouched).

    Example:
        >>> build_pose_landmarker_task(Path("models/pose_landmarker_full.task"))  # doctest: +SKIP
    """
    out_path = Path(out_path)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not force and out_path.is_file() and is_valid_pose_task(out_path):
        _log.info("%s exists and is valid; not rebuilding (use --force to rebuild)", out_path)
        return out_path
    wheel = download_mediapipe_wheel(wheel_dir)
    detector, landmarks = extract_pose_models(wheel, variant=variant)
    entries = {
        BUNDLE_DETECTOR_ENTRY: add_image_input_metadata(
            detector,
            norm_mean=DETECTOR_NORM_MEAN_STD[0],
            norm_std=DETECTOR_NORM_MEAN_STD[1],
            name="BlazePose detector",
            description=f"Person detector from mediapipe=={MEDIAPIPE_WHEEL_VERSION}: {_WHEEL_DETECTOR_PATH}",
        ),
        BUNDLE_LANDMARKS_ENTRY: add_image_input_metadata(
            landmarks,
            norm_mean=LANDMARKS_NORM_MEAN_STD[0],
            norm_std=LANDMARKS_NORM_MEAN_STD[1],
            name=f"BlazePose GHUM 3D ({variant})",
            description=(
                f"33 pose landmarks from mediapipe=={MEDIAPIPE_WHEEL_VERSION} "
                f"({_WHEEL_LANDMARKS_PATH.format(variant=variant)})."
            ),
        ),
    }
    if not verify:
        _write_bundle(entries, out_path)
        return out_path
    # Verify a temporary copy first so that a broken build never replaces a working file.
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / out_path.name
        _write_bundle(entries, candidate)
        _smoke_test(candidate)
    _write_bundle(entries, out_path)
    return out_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m positioning.perception.landmarks.model_build [--out PATH] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m positioning.perception.landmarks.model_build",
        description="Build the BlazePose PoseLandmarker .task bundle from PyPI's mediapipe==0.10.21 wheel.",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output .task (default: models/pose_landmarker_VARIANT.task)"
    )
    parser.add_argument("--variant", choices=VARIANTS, default="full", help="landmark model (default: full)")
    parser.add_argument(
        "--wheel-dir", type=Path, default=None, help=f"wheel cache (default: {default_wheel_dir()})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the output exists and is valid")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out if args.out is not None else default_task_path(args.variant)
    t0 = time.perf_counter()
    try:
        build_pose_landmarker_task(out, variant=args.variant, wheel_dir=args.wheel_dir, force=args.force)
    except ModelBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size_mb = out.stat().st_size / 1e6
    print(f"{out}: {size_mb:.1f} MB, sha256 {_sha256(out)} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
