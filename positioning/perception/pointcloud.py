"""Depth images to point clouds: camera-frame deprojection, scanner-frame clouds that remember their pixels,
and an Open3D cleaning step (voxel downsampling plus statistical outlier removal).

Every cloud here keeps, for each point, the ``(v, u)`` pixel it came from, so a selection made in 3-D
(table inliers, the patient) can be drawn back onto the depth or colour image.

Convention:
    * Millimetres. Depth is ``uint16`` z-depth in mm (distance along the optical axis, not ray length),
      0 = invalid.
    * Camera frame: RealSense depth optical frame, x right, y down, z forward.
    * Pixel centres at integer coordinates: ``u = fx * x / z + ppx``, ``v = fy * y / z + ppy``; ``u`` is
      the column, ``v`` the row; images are ``(H, W)`` row-major.
    * Scanner frame: IEC 61217 fixed system (+x lateral, +y into the gantry, +z up, origin at isocenter),
      reached with ``Calibration.scanner_from_camera``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import open3d as o3d

from positioning.frames import Calibration, Intrinsics, RGBDFrame

__all__ = [
    "project_points",
    "ScannerCloud",
    "deproject",
    "scanner_image",
    "scanner_points",
    "cloud_from_image",
    "voxel_downsample",
    "remove_outliers",
    "clean",
    "to_open3d",
]

#: Default voxel edge for :func:`clean` (mm): about two depth pixels at 1.8 m with a D435 at 848x480.
DEFAULT_VOXEL_MM = 8.0


def _check_intrinsics_shape(depth_mm: np.ndarray, intrinsics: Intrinsics) -> None:
    if not isinstance(depth_mm, np.ndarray) or depth_mm.ndim != 2:
        raise ValueError(
            f"depth_mm must be a (H, W) array, got {type(depth_mm).__name__} "
            f"{getattr(depth_mm, 'shape', None)}"
        )
    if not (np.issubdtype(depth_mm.dtype, np.integer) or np.issubdtype(depth_mm.dtype, np.floating)):
        raise ValueError(f"depth_mm must be numeric (uint16 mm), got dtype {depth_mm.dtype}")
    if depth_mm.shape != intrinsics.shape:
        raise ValueError(f"depth_mm shape {depth_mm.shape} != intrinsics (H, W) {intrinsics.shape}")


def deproject(depth_mm: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Back-project a z-depth image to camera-frame points.

    Convention: depth is z-depth in mm (0 = invalid), pixel centres at integer coordinates,
    ``x = (u - ppx) * z / fx``, ``y = (v - ppy) * z / fy``; output ``[v, u] = (x, y, z)`` in the camera
    optical frame (x right, y down, z forward), mm. Distortion is ignored (RealSense depth is rectified).

    Args:
        depth_mm: ``(H, W)`` z-depth in mm, usually ``uint16``; 0 (and, for float input, NaN or
            negative values) marks an invalid pixel.
        intrinsics: intrinsics of the depth stream, ``(height, width) == depth_mm.shape``.

    Returns:
        ``(H, W, 3)`` float64 camera-frame points in mm, NaN where the depth is invalid.

    Raises:
        ValueError: ``depth_mm`` is not a 2-D numeric array of the intrinsics' shape.

    Example:
        >>> k = Intrinsics(width=4, height=2, fx=2.0, fy=4.0, ppx=1.0, ppy=0.5)
        >>> deproject(np.full((2, 4), 1000, np.uint16), k)[0, 3].tolist()
        [1000.0, -125.0, 1000.0]
    """
    _check_intrinsics_shape(depth_mm, intrinsics)
    z = depth_mm.astype(np.float64)
    z[~(z > 0)] = np.nan  # also catches NaN in float input
    h, w = depth_mm.shape
    x_over_z = (np.arange(w, dtype=np.float64) - intrinsics.ppx) / intrinsics.fx
    y_over_z = (np.arange(h, dtype=np.float64) - intrinsics.ppy) / intrinsics.fy
    out = np.empty((h, w, 3), dtype=np.float64)
    np.multiply(z, x_over_z[None, :], out=out[..., 0])
    np.multiply(z, y_over_z[:, None], out=out[..., 1])
    out[..., 2] = z
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannerCloud:
    """Scanner-frame points with the depth pixels they came from.

    Convention: scanner frame (IEC 61217), mm; ``pixels_vu[i] = (v, u)`` is the full-resolution pixel
    (row, column) of point ``i``, pixel centres at integer coordinates. After :func:`voxel_downsample` a
    point is a voxel centroid and its pixel is that of one member of the voxel.

    Attributes:
        points_mm: ``(N, 3)`` float64 scanner-frame points, all finite.
        pixels_vu: ``(N, 2)`` int32 pixel rows and columns.
        image_shape: ``(H, W)`` of the depth image the pixels index.
        stride: sampling step of the depth image the points were taken at (1 = every pixel).
    """

    points_mm: np.ndarray
    pixels_vu: np.ndarray
    image_shape: tuple[int, int]
    stride: int = 1

    def __post_init__(self) -> None:
        p, px = self.points_mm, self.pixels_vu
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points_mm must be (N, 3), got {p.shape}")
        if px.shape != (len(p), 2):
            raise ValueError(f"pixels_vu must be ({len(p)}, 2), got {px.shape}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    def __len__(self) -> int:
        return len(self.points_mm)

    def subset(self, index: np.ndarray) -> ScannerCloud:
        """The points selected by a boolean mask or an index array, with their pixels."""
        return dataclasses.replace(self, points_mm=self.points_mm[index], pixels_vu=self.pixels_vu[index])

    def mask(self, index: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` bool image, True at the pixels of the (selected) points.

        With ``stride > 1`` each point marks its ``stride x stride`` block, so the mask covers the image
        region the points sample.
        """
        px = self.pixels_vu if index is None else self.pixels_vu[index]
        h, w = self.image_shape
        s = self.stride
        small = np.zeros(((h + s - 1) // s, (w + s - 1) // s), dtype=bool)
        small[px[:, 0] // s, px[:, 1] // s] = True
        if s == 1:
            return small
        return np.repeat(np.repeat(small, s, axis=0), s, axis=1)[:h, :w]


@functools.lru_cache(maxsize=8)
def _scanner_rays(intrinsics: Intrinsics, rotation_bytes: bytes, stride: int) -> np.ndarray:
    """``(h, w, 3)`` float32 scanner-frame directions ``R @ ((u - ppx) / fx, (v - ppy) / fy, 1)`` of the
    sampled pixels, so that a pixel's scanner point is ``z * ray + t`` (read-only, cached)."""
    r = np.frombuffer(rotation_bytes, dtype=np.float64).reshape(3, 3)
    u = np.arange(0, intrinsics.width, stride, dtype=np.float64)
    v = np.arange(0, intrinsics.height, stride, dtype=np.float64)
    xn = (u - intrinsics.ppx) / intrinsics.fx
    yn = (v - intrinsics.ppy) / intrinsics.fy
    rays = r[:, 0] * xn[None, :, None] + r[:, 1] * yn[:, None, None] + r[:, 2]
    rays = rays.astype(np.float32)
    rays.setflags(write=False)
    return rays


def _check_stride(stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")


def scanner_image(frame: RGBDFrame, calibration: Calibration, *, stride: int = 1) -> np.ndarray:
    """Every sampled depth pixel as a scanner-frame point, on the (strided) pixel grid.

    Convention: see :func:`deproject`; ``out[i, j]`` is the point of pixel ``(v, u) = (i * stride,
    j * stride)`` mapped with ``calibration.scanner_from_camera`` (camera -> scanner), mm; NaN where the
    depth is invalid. The per-pixel ray directions are cached per (intrinsics, rotation, stride).

    Args:
        frame: an RGB-D frame (depth ``uint16`` mm).
        calibration: the room's camera-to-scanner calibration.
        stride: take every ``stride``-th row and column (1 = full resolution).

    Returns:
        ``(ceil(H / stride), ceil(W / stride), 3)`` float32 scanner-frame points (mm).

    Raises:
        ValueError: ``stride`` is not a positive integer.
    """
    _check_stride(stride)
    m = calibration.scanner_from_camera
    rays = _scanner_rays(frame.intrinsics, np.ascontiguousarray(m[:3, :3]).tobytes(), int(stride))
    z = frame.depth_mm[::stride, ::stride].astype(np.float32)
    z[z == 0] = np.nan
    out = z[..., None] * rays
    out += m[:3, 3].astype(np.float32)
    return out


def cloud_from_image(
    points_image: np.ndarray, *, image_shape: tuple[int, int], stride: int = 1
) -> ScannerCloud:
    """The finite points of a :func:`scanner_image` as a :class:`ScannerCloud` (row-major order).

    Args:
        points_image: ``(h, w, 3)`` scanner-frame points on the pixel grid sampled with ``stride``.
        image_shape: ``(H, W)`` of the full-resolution depth image.
        stride: the sampling step the grid was taken with.
    """
    _check_stride(stride)
    h, w = image_shape
    expected = ((h + stride - 1) // stride, (w + stride - 1) // stride, 3)
    if points_image.shape != expected:
        raise ValueError(
            f"points_image shape {points_image.shape} != {expected} for {image_shape} / {stride}"
        )
    valid = np.isfinite(points_image[..., 2])
    vv, uu = np.nonzero(valid)
    pixels = np.stack([vv * stride, uu * stride], axis=1).astype(np.int32)
    pts = points_image[vv, uu].astype(np.float64)
    return ScannerCloud(points_mm=pts, pixels_vu=pixels, image_shape=(h, w), stride=int(stride))


def scanner_points(frame: RGBDFrame, calibration: Calibration, *, stride: int = 1) -> ScannerCloud:
    """The valid depth pixels of a frame as scanner-frame points.

    Convention: see :func:`deproject`; points are mapped with ``calibration.scanner_from_camera``
    (camera -> scanner, mm) and ordered row-major over the sampled pixels ``(v, u) = (i * stride,
    j * stride)``.

    Args:
        frame: an RGB-D frame (depth ``uint16`` mm).
        calibration: the room's camera-to-scanner calibration.
        stride: take every ``stride``-th row and column (1 = full resolution).

    Returns:
        A :class:`ScannerCloud` (empty when the frame has no valid depth).

    Raises:
        ValueError: ``stride`` is not a positive integer.

    Example:
        >>> cloud = scanner_points(frame, calibration, stride=2)  # doctest: +SKIP
        >>> cloud.points_mm.shape, cloud.pixels_vu.shape  # doctest: +SKIP
        ((98444, 3), (98444, 2))
    """
    image = scanner_image(frame, calibration, stride=stride)
    return cloud_from_image(image, image_shape=frame.intrinsics.shape, stride=stride)


def to_open3d(points_mm: np.ndarray) -> o3d.geometry.PointCloud:
    """An Open3D point cloud of ``(N, 3)`` points (mm, frame unchanged)."""
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points_mm, np.float64)))


def voxel_downsample(cloud: ScannerCloud, voxel_mm: float = DEFAULT_VOXEL_MM) -> ScannerCloud:
    """Replace the points of each occupied voxel by their centroid.

    Convention: voxels are axis-aligned cubes of edge ``voxel_mm`` in the cloud's frame, anchored at the
    origin; the kept pixel of a voxel is that of its first member in the cloud's order, so results can
    still be drawn on the image. Output order follows the voxels' first members.

    Args:
        cloud: the cloud to thin.
        voxel_mm: voxel edge in mm, > 0.

    Returns:
        One point per occupied voxel.

    Raises:
        ValueError: ``voxel_mm`` is not positive and finite.
    """
    if not (np.isfinite(voxel_mm) and voxel_mm > 0):
        raise ValueError(f"voxel_mm must be positive, got {voxel_mm}")
    if len(cloud) == 0:
        return cloud
    keys = np.floor(cloud.points_mm / voxel_mm).astype(np.int64)
    keys -= keys.min(axis=0)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # voxels in the order of their first members
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    group = rank[inverse]
    counts = np.bincount(group, minlength=len(order)).astype(np.float64)
    pts = np.stack(
        [np.bincount(group, weights=cloud.points_mm[:, c], minlength=len(order)) for c in range(3)], axis=1
    )
    pts /= counts[:, None]
    return dataclasses.replace(cloud, points_mm=pts, pixels_vu=cloud.pixels_vu[first[order]])


def remove_outliers(cloud: ScannerCloud, *, neighbours: int = 16, std_ratio: float = 2.0) -> ScannerCloud:
    """Drop isolated points (flying pixels, speckle) with Open3D's statistical outlier removal.

    A point is dropped when its mean distance to its ``neighbours`` nearest neighbours exceeds the cloud's
    mean of that distance by more than ``std_ratio`` standard deviations.

    Convention: frame and units unchanged (mm); the pixels of kept points are kept.

    Args:
        cloud: the cloud to filter (best after :func:`voxel_downsample`, for speed and even density).
        neighbours: neighbourhood size, >= 1.
        std_ratio: threshold in standard deviations, > 0.

    Returns:
        The kept points, in their original order.
    """
    if neighbours < 1 or not std_ratio > 0:
        raise ValueError(f"need neighbours >= 1 and std_ratio > 0, got {neighbours}, {std_ratio}")
    if len(cloud) <= neighbours:
        return cloud
    _, kept = to_open3d(cloud.points_mm).remove_statistical_outlier(neighbours, std_ratio)
    return cloud.subset(np.asarray(kept, dtype=np.int64))


def clean(
    cloud: ScannerCloud,
    *,
    voxel_mm: float = DEFAULT_VOXEL_MM,
    neighbours: int = 16,
    std_ratio: float = 2.0,
) -> ScannerCloud:
    """Voxel-downsample, then remove statistical outliers (see :func:`voxel_downsample`,
    :func:`remove_outliers`).

    Convention: frame and units unchanged (mm); each kept point keeps one pixel of its voxel.

    Example:
        >>> cloud = clean(scanner_points(frame, calibration, stride=2))  # doctest: +SKIP
    """
    return remove_outliers(voxel_downsample(cloud, voxel_mm), neighbours=neighbours, std_ratio=std_ratio)


def project_points(points_mm: np.ndarray, calibration: Calibration, intrinsics: Intrinsics) -> np.ndarray:
    """Project scanner-frame points to depth-image pixels.

    Convention: scanner frame (IEC 61217) mm in; depth-image pixels ``(u, v)`` out (pixel centres at
    integer coordinates, ``u = fx x / z + ppx``); points behind the camera give NaN.

    Args:
        points_mm: ``(N, 3)`` scanner-frame points.
        calibration: camera-to-scanner calibration.
        intrinsics: depth-stream intrinsics.

    Returns:
        ``(N, 2)`` float ``(u, v)``.

    Raises:
        ValueError: ``points_mm`` is not ``(N, 3)``.
    """
    p = np.asarray(points_mm, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points_mm must be (N, 3), got {p.shape}")
    return intrinsics.project(calibration.to_camera(p))
