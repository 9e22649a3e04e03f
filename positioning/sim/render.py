"""Ray-cast depth, colour and label images of the simulated room with Open3D.

Convention:
    Depth is z in the camera optical frame (not ray length), float32 millimetres, NaN where a ray hits
    nothing. Pixel ``(u, v)`` has its centre at integer coordinates and looks along
    ``R @ [(u - ppx) / fx, (v - ppy) / fy, 1]`` from the camera centre (``R``, ``t`` from
    ``scanner_from_camera``), so the hit distance along that direction *is* the z-depth. Colour is rendered
    from the same camera as depth, so it is pixel-aligned to depth.

Shading: Lambertian albedo under a ceiling light beside the camera (and optionally a second, coloured
light elsewhere in the room) plus an ambient term, with smooth (barycentric-interpolated) vertex normals;
a mild vignette makes the image camera-like (sensor noise and exposure are applied by the session).
:class:`Lighting` sets the lights' positions, colours (warm to cold) and strengths (dim to bright).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import open3d as o3d

from positioning.frames import Intrinsics
from positioning.sim.room import Mesh

#: rays per pixel side on printed patterns (see :func:`_texture_over_pixels`)
TEXTURE_SAMPLES = 4

__all__ = ["Lighting", "RenderResult", "camera_rays", "render", "vertex_normals"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lighting:
    """The room's light as the colour camera sees it (before its auto-exposure).

    Attributes:
        key_offset_mm: the main ceiling light's position relative to the camera (scanner frame).
        key_rgb: its colour and strength per channel (1 = the reference white light; warm light has less
            blue, cold light less red; a dim room scales all three down).
        fill_mm: position of a second light (scanner frame), or None.
        fill_rgb: its colour and strength (uneven light: a window or a lamp to one side).
        ambient_rgb: ambient light per channel.
    """

    key_offset_mm: tuple[float, float, float] = (300.0, 300.0, 0.0)
    key_rgb: tuple[float, float, float] = (0.65, 0.65, 0.65)
    fill_mm: tuple[float, float, float] | None = None
    fill_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ambient_rgb: tuple[float, float, float] = (0.35, 0.35, 0.35)


@dataclasses.dataclass(frozen=True)
class RenderResult:
    """Ideal images of one view.

    Attributes:
        depth_mm: ``(H, W)`` float32 z-depth in mm, NaN where nothing is hit.
        color_rgb: ``(H, W, 3)`` uint8 shaded colour, aligned to depth.
        label: ``(H, W)`` uint8 :class:`~positioning.sim.room.Label` of each pixel.
        albedo: ``(H, W)`` float32 mean albedo of what each pixel sees (0 where nothing; the depth noise
            uses it: dark surfaces return little of the projector's infrared).
    """

    depth_mm: np.ndarray
    color_rgb: np.ndarray
    label: np.ndarray
    albedo: np.ndarray | None = None


@functools.lru_cache(maxsize=8)
def _camera_rays_cached(intrinsics: Intrinsics, pose_key: bytes) -> np.ndarray:
    pose = np.frombuffer(pose_key, dtype=np.float64).reshape(4, 4)
    u = np.arange(intrinsics.width, dtype=np.float64)
    v = np.arange(intrinsics.height, dtype=np.float64)
    uu, vv = np.meshgrid(u, v)
    d_cam = np.stack(
        [(uu - intrinsics.ppx) / intrinsics.fx, (vv - intrinsics.ppy) / intrinsics.fy, np.ones_like(uu)],
        axis=-1,
    )
    d = d_cam @ pose[:3, :3].T
    o = np.broadcast_to(pose[:3, 3], d.shape)
    rays = np.concatenate([o, d], axis=-1).astype(np.float32)
    rays.setflags(write=False)
    return rays


def camera_rays(intrinsics: Intrinsics, scanner_from_camera: np.ndarray) -> np.ndarray:
    """``(H, W, 6)`` float32 rays (origin, direction) in the scanner frame; direction has camera z = 1.

    The result is cached per (intrinsics, pose) and read-only.
    """
    pose = np.ascontiguousarray(scanner_from_camera, dtype=np.float64)
    return _camera_rays_cached(intrinsics, pose.tobytes())


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a triangle mesh."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(norm, 1e-12)


def _texture_over_pixels(
    scene: o3d.t.geometry.RaycastingScene,
    texture: Callable[[np.ndarray], np.ndarray],
    geometry_id: int,
    pixels_vu: np.ndarray,
    centre_points_mm: np.ndarray,
    intrinsics: Intrinsics,
    scanner_from_camera: np.ndarray,
) -> np.ndarray:
    """A printed pattern's colour averaged over each pixel's area (``TEXTURE_SAMPLES``² rays per pixel), as
    a camera's pixel integrates the light falling on it: one ray through the pixel's centre would give
    edges quantised to whole pixels (corners found 0.4 px RMS off, where real images give about 0.1)."""
    s = TEXTURE_SAMPLES
    offsets = (np.arange(s) + 0.5) / s - 0.5
    du, dv = (a.ravel() for a in np.meshgrid(offsets, offsets))
    u = pixels_vu[:, 1:2] + du[None, :]  # (N, s*s)
    v = pixels_vu[:, 0:1] + dv[None, :]
    d_cam = np.stack([(u - intrinsics.ppx) / intrinsics.fx, (v - intrinsics.ppy) / intrinsics.fy,
                      np.ones_like(u)], axis=-1).reshape(-1, 3)  # fmt: skip
    d = d_cam @ np.asarray(scanner_from_camera)[:3, :3].T
    o = np.broadcast_to(np.asarray(scanner_from_camera)[:3, 3], d.shape)
    hit = scene.cast_rays(o3d.core.Tensor(np.concatenate([o, d], axis=1).astype(np.float32)))
    t = hit["t_hit"].numpy()
    on = np.isfinite(t) & (hit["geometry_ids"].numpy().astype(np.int64) == geometry_id)
    values = np.zeros((len(t), 3), np.float32)
    values[on] = texture(o[on] + d[on] * t[on, None])
    counts = on.reshape(-1, s * s).sum(1)
    mean = values.reshape(-1, s * s, 3).sum(1) / np.maximum(counts, 1)[:, None]
    if (none := counts == 0).any():  # a sliver of the pattern between the samples: its centre's colour
        mean[none] = texture(centre_points_mm[none])
    return mean.astype(np.float32)


def render(
    meshes: list[Mesh],
    intrinsics: Intrinsics,
    scanner_from_camera: np.ndarray,
    *,
    light_mm: np.ndarray | None = None,
    ambient: float = 0.35,
    lighting: Lighting | None = None,
) -> RenderResult:
    """Ray-cast a depth, colour and label image of ``meshes`` from the camera.

    Args:
        meshes: scene meshes in the scanner frame (mm).
        intrinsics: depth intrinsics (the colour image uses the same, i.e. it is aligned).
        scanner_from_camera: ``(4, 4)`` camera pose.
        light_mm: point light position (default: 300 mm beside the camera); ignored with ``lighting``.
        ambient: ambient light fraction; ignored with ``lighting``.
        lighting: the lights (default: one white light at ``light_mm`` and ``ambient``).

    Returns:
        The ideal (noise-free) images.
    """
    scene = o3d.t.geometry.RaycastingScene()
    for m in meshes:
        scene.add_triangles(
            o3d.core.Tensor(m.vertices_mm.astype(np.float32)), o3d.core.Tensor(m.faces.astype(np.uint32))
        )
    rays = camera_rays(intrinsics, scanner_from_camera)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    t = hit["t_hit"].numpy()
    valid = np.isfinite(t)
    depth = np.where(valid, t, np.nan).astype(np.float32)

    # Per-hit attributes from all meshes at once (offsets into concatenated arrays).
    v_off = np.cumsum([0] + [len(m.vertices_mm) for m in meshes])
    f_off = np.cumsum([0] + [len(m.faces) for m in meshes])
    faces = np.concatenate([m.faces.astype(np.int64) + v_off[k] for k, m in enumerate(meshes)])
    colors = np.concatenate([m.colors_rgb for m in meshes]).astype(np.float32)
    normals = np.concatenate([vertex_normals(m.vertices_mm, m.faces) for m in meshes]).astype(np.float32)
    labels = np.array([int(m.label) for m in meshes], np.uint8)
    gid = hit["geometry_ids"].numpy()[valid].astype(np.int64)
    f = faces[f_off[gid] + hit["primitive_ids"].numpy()[valid].astype(np.int64)]
    uvs = hit["primitive_uvs"].numpy()[valid]
    b1, b2 = uvs[:, 0:1], uvs[:, 1:2]
    b0 = 1.0 - b1 - b2
    albedo_v = b0 * colors[f[:, 0]] + b1 * colors[f[:, 1]] + b2 * colors[f[:, 2]]
    n = b0 * normals[f[:, 0]] + b1 * normals[f[:, 1]] + b2 * normals[f[:, 2]]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    label = np.zeros(t.shape, np.uint8)
    label[valid] = labels[gid]

    h, w = intrinsics.height, intrinsics.width
    ray_v = rays[valid]
    points = ray_v[:, :3] + ray_v[:, 3:] * t[valid][:, None]
    pixels_vu = np.argwhere(valid)
    for k, m in enumerate(meshes):
        if m.texture is not None and (on := gid == k).any():
            albedo_v[on] = _texture_over_pixels(
                scene, m.texture, k, pixels_vu[on], points[on], intrinsics, scanner_from_camera
            )
    if lighting is None:
        offset = (
            (300.0, 300.0, 0.0)
            if light_mm is None
            else tuple(np.asarray(light_mm) - scanner_from_camera[:3, 3])
        )
        lighting = Lighting(
            key_offset_mm=offset,  # type: ignore[arg-type]
            key_rgb=(1.0 - ambient,) * 3,  # type: ignore[arg-type]
            ambient_rgb=(ambient,) * 3,  # type: ignore[arg-type]
        )
    # normals face the camera (meshes may be seen from either side)
    facing = np.where((n * ray_v[:, 3:]).sum(1, keepdims=True) > 0, -1.0, 1.0)
    n_f = n * facing
    lights = [(scanner_from_camera[:3, 3] + np.asarray(lighting.key_offset_mm), lighting.key_rgb)]
    if lighting.fill_mm is not None:
        lights.append((np.asarray(lighting.fill_mm, np.float64), lighting.fill_rgb))
    shade = np.tile(np.asarray(lighting.ambient_rgb, np.float32), (len(points), 1))
    for position, rgb in lights:
        to_light = np.asarray(position, dtype=np.float32) - points
        to_light /= np.maximum(np.linalg.norm(to_light, axis=1, keepdims=True), 1e-9)
        lambert = np.clip((n_f * to_light).sum(1, keepdims=True), 0.0, 1.0)
        shade = shade + lambert * np.asarray(rgb, np.float32)
    uu, vv = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
    vignette = (1.0 - 0.18 * (uu**2 + vv**2))[valid][:, None]
    color = np.zeros((h, w, 3), np.float32)
    color[valid] = np.clip(albedo_v * shade * vignette, 0.0, 1.0)
    albedo = np.zeros((h, w), np.float32)
    albedo[valid] = albedo_v.mean(axis=1)
    return RenderResult(
        depth_mm=depth, color_rgb=(color * 255.0 + 0.5).astype(np.uint8), label=label, albedo=albedo
    )
