"""What the patient looks like to the colour camera: skin tone and clothing.

Skin tones span the Fitzpatrick scale (types I to VI); the patient wears a hospital gown (trunk and upper
arms), their own clothes (a top over the trunk and arms, trousers over the legs) or nothing over the trunk
(a bare trunk with shorts). The depth camera does not see colour, but its projector's infrared is
returned weakly by dark surfaces (see the session's depth dropouts), so colour matters to depth too.

Convention: albedos are linear RGB in [0, 1], one per mesh vertex.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from positioning.sim.body import BodyModel

__all__ = [
    "FITZPATRICK_SKIN",
    "SKIN_TONES",
    "GOWN_COLORS",
    "CLOTHING",
    "Appearance",
    "patient_colors",
]

RGB = tuple[float, float, float]

#: Skin albedos of the Fitzpatrick types I (lightest) to VI (darkest).
FITZPATRICK_SKIN: dict[str, RGB] = {
    "I": (0.93, 0.76, 0.65),
    "II": (0.87, 0.67, 0.54),
    "III": (0.78, 0.58, 0.44),
    "IV": (0.66, 0.47, 0.33),
    "V": (0.52, 0.36, 0.25),
    "VI": (0.38, 0.26, 0.18),
}

#: The skin tones in Fitzpatrick order (what scenarios draw from by default).
SKIN_TONES: tuple[RGB, ...] = tuple(FITZPATRICK_SKIN.values())

#: Hospital gown colours (light blue, off-white, green, lilac).
GOWN_COLORS: tuple[RGB, ...] = (
    (0.62, 0.75, 0.85), (0.85, 0.85, 0.82), (0.55, 0.70, 0.62), (0.80, 0.72, 0.80),
)  # fmt: skip

#: What the patient wears over the trunk.
CLOTHING: tuple[str, ...] = ("gown", "clothes", "bare")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Appearance:
    """Skin and clothing of the patient.

    Attributes:
        skin_rgb: skin albedo (see :data:`FITZPATRICK_SKIN`).
        clothing: ``"gown"`` (a sleeveless gown over the trunk in ``top_rgb``), ``"clothes"`` (a top in
            ``top_rgb`` over the trunk and upper arms, trousers in ``bottom_rgb`` over the legs) or ``"bare"``
            (skin over the trunk, shorts in ``bottom_rgb`` over the hips).
        top_rgb: gown or top albedo.
        bottom_rgb: trousers or shorts albedo.
    """

    skin_rgb: RGB = SKIN_TONES[1]
    clothing: str = "gown"
    top_rgb: RGB = GOWN_COLORS[0]
    bottom_rgb: RGB = (0.15, 0.18, 0.28)

    def __post_init__(self) -> None:
        if self.clothing not in CLOTHING:
            raise ValueError(f"clothing must be one of {CLOTHING}, got {self.clothing!r}")
        for name in ("skin_rgb", "top_rgb", "bottom_rgb"):
            v = getattr(self, name)
            if len(v) != 3 or not all(0.0 <= c <= 1.0 for c in v):
                raise ValueError(f"{name} must be three albedos in [0, 1], got {v!r}")


def patient_colors(model: BodyModel, appearance: Appearance, vertices_mm: np.ndarray) -> np.ndarray:
    """``(V, 3)`` float32 vertex albedos of a posed body.

    Args:
        model: the body model (its part masks).
        appearance: skin and clothing.
        vertices_mm: ``(V, 3)`` the body's vertices in anny's body frame (z superior), to place the hem of
            the shorts: everything of the legs within 250 mm below the hip joints' height.
    """
    colors = np.tile(np.asarray(appearance.skin_rgb, np.float32), (len(vertices_mm), 1))
    torso = model.part_mask("torso")
    upper_arms = model.part_mask("left_upper_arm", "right_upper_arm")
    legs = model.part_mask("left_leg", "right_leg")
    top = np.asarray(appearance.top_rgb, np.float32)
    bottom = np.asarray(appearance.bottom_rgb, np.float32)
    if appearance.clothing == "gown":
        colors[torso] = top
    elif appearance.clothing == "clothes":
        colors[torso | upper_arms] = top
        feet_z = np.quantile(vertices_mm[legs, 2], 0.04)
        colors[legs & (vertices_mm[:, 2] > feet_z + 60.0)] = bottom  # trousers down to the ankles
    else:
        hip_z = np.quantile(vertices_mm[torso, 2], 0.08)
        shorts = (torso & (vertices_mm[:, 2] < hip_z + 120.0)) | (legs & (vertices_mm[:, 2] > hip_z - 250.0))
        colors[shorts] = bottom
    return colors
