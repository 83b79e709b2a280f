"""The generator's distribution profiles: how one 8x8 digit is rotated, shifted, blurred or noised."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from raypipe.errors import DatasetError
from raypipe.tasks.digits.imaging import CENTRE, SIZE, shift, to_uint8

PROFILE_DESCRIPTIONS: dict[str, str] = {
    "clean": "the held-out digits as scanned",
    "noisy": "gaussian pixel noise of sigma 30-60 (on the 0-255 scale)",
    "rotated": "turned by 10-30 degrees either way about the centre",
    "blurred": "gaussian blur of sigma 0.6-1.0 px",
    "shifted": "translated by 1-2 px along one or both axes (what leaves the frame is lost)",
    "mixed": "30 % clean, the rest spread evenly over the four degradations",
}
PROFILES: tuple[str, ...] = tuple(PROFILE_DESCRIPTIONS)
MIXED_WEIGHTS: dict[str, float] = {
    "clean": 0.3,
    "noisy": 0.175,
    "rotated": 0.175,
    "blurred": 0.175,
    "shifted": 0.175,
}


@dataclass(frozen=True)
class Degradation:
    """How one item was degraded; the defaults mean "not at all". Rotation is counter-clockwise, degrees."""

    profile: str = "clean"
    rotation: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    shift: tuple[int, int] = (0, 0)  # (rows, columns); positive moves down / right


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise DatasetError(f"unknown digits profile {profile!r}: choose one of {', '.join(PROFILES)}")


def draw_degradation(profile: str, rng: np.random.Generator) -> Degradation:
    """The degradation of one item of `profile`; a mixed item records the profile it drew."""
    check_profile(profile)
    if profile == "mixed":
        weights = np.array(list(MIXED_WEIGHTS.values()))
        profile = list(MIXED_WEIGHTS)[int(rng.choice(len(weights), p=weights / weights.sum()))]
    if profile == "noisy":
        return Degradation(profile, noise=round(float(rng.uniform(30, 60)), 1))
    if profile == "rotated":
        return Degradation(profile, rotation=round(float(rng.choice([-1, 1]) * rng.uniform(10, 30)), 1))
    if profile == "blurred":
        return Degradation(profile, blur=round(float(rng.uniform(0.6, 1.0)), 2))
    if profile == "shifted":
        return Degradation(profile, shift=_draw_shift(rng))
    return Degradation(profile)


def _draw_shift(rng: np.random.Generator) -> tuple[int, int]:
    steps = [-2, -1, 0, 1, 2]
    while True:  # (0, 0) is no shift at all: draw again (expected 1.04 draws)
        rows, cols = (int(v) for v in rng.choice(steps, size=2))
        if rows or cols:
            return rows, cols


def apply_degradation(image: np.ndarray, degradation: Degradation, rng: np.random.Generator) -> np.ndarray:
    """`image` (8x8, 0-255) degraded: rotate, shift, blur, then noise; a new uint8 array."""
    out = image.astype(np.float32)
    if degradation.rotation:
        matrix = cv2.getRotationMatrix2D((CENTRE, CENTRE), degradation.rotation, 1.0)
        out = cv2.warpAffine(out, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if degradation.shift != (0, 0):
        out = shift(out, *degradation.shift)
    if degradation.blur:
        out = cv2.GaussianBlur(out, (0, 0), degradation.blur, borderType=cv2.BORDER_CONSTANT)
    if degradation.noise:
        out = out + rng.normal(0.0, degradation.noise, out.shape)
    return to_uint8(out)
