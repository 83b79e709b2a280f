"""Image moments of an 8x8 digit and the label-free per-image features that drift monitoring compares."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CENTRE = 3.5  # the middle of an 8-pixel axis, in pixel-centre coordinates
INK_LEVEL = 128
FEATURES: dict[str, str] = {
    "mean_intensity": "continuous",
    "ink_fraction": "continuous",
    "centre_offset": "continuous",
    "slant": "continuous",
    "sharpness": "continuous",
}
_ROWS, _COLS = np.mgrid[0:8, 0:8].astype(np.float64)


@dataclass(frozen=True)
class Moments:
    """Centre of mass (row, col) of the intensities and their second central moments; None for a blank image."""

    row: float
    col: float
    var_row: float
    var_col: float
    cov: float

    @property
    def shear(self) -> float:
        """How far columns drift per row (the slant a deskew removes); 0 when rows do not vary."""
        return self.cov / self.var_row if self.var_row > 1e-6 else 0.0


def moments(image: np.ndarray) -> Moments | None:
    """The intensity moments of an 8x8 image, or None when it holds no ink at all."""
    weights = image.astype(np.float64)
    total = weights.sum()
    if total <= 0:
        return None
    row = float((_ROWS * weights).sum() / total)
    col = float((_COLS * weights).sum() / total)
    d_row, d_col = _ROWS - row, _COLS - col
    return Moments(
        row,
        col,
        float((d_row * d_row * weights).sum() / total),
        float((d_col * d_col * weights).sum() / total),
        float((d_row * d_col * weights).sum() / total),
    )


def image_features(image: np.ndarray) -> dict[str, float]:
    """Mean intensity and ink fraction (0-1), centre-of-mass offset (px), slant (degrees) and sharpness.

    Slant is the angle of the shear a deskew would remove (positive: the top leans left); sharpness is
    the mean absolute Laplacian on 0-1 intensities, which blur lowers and noise raises. All are finite,
    blank images included.
    """
    m = moments(image)
    laplacian = cv2.Laplacian(image.astype(np.float32) / 255.0, cv2.CV_32F, borderType=cv2.BORDER_CONSTANT)
    return {
        "mean_intensity": float(image.mean()) / 255.0,
        "ink_fraction": float((image >= INK_LEVEL).mean()),
        "centre_offset": 0.0 if m is None else math.hypot(m.row - CENTRE, m.col - CENTRE),
        "slant": 0.0 if m is None else math.degrees(math.atan(m.shear)),
        "sharpness": float(np.abs(laplacian).mean()),
    }
