"""Pixel operations on an 8x8 uint8 digit: moments, gaussian blur, threshold and the moment-based deskew."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 8
CENTRE = (SIZE - 1) / 2  # the middle of an 8-pixel axis, in pixel-centre coordinates
# The preprocess stages' defaults; the classifiers also learn from the training digits processed with them.
DEFAULT_BLUR_SIGMA = 0.5
DEFAULT_THRESHOLD = 128
_ROWS, _COLS = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


@dataclass(frozen=True)
class Moments:
    """Centre of mass (row, col) of the intensities and their second central moments."""

    row: float
    col: float
    var_row: float
    var_col: float
    cov: float

    @property
    def shear(self) -> float:
        """How far columns drift per row down (the slant a deskew removes); 0 when rows do not vary."""
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


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A gaussian blur of `sigma` px, black beyond the frame (a digit's background)."""
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    return to_uint8(blurred)


def threshold(image: np.ndarray, level: int) -> np.ndarray:
    """255 where the image is at least `level`, else 0."""
    return np.where(image >= level, np.uint8(255), np.uint8(0))


def deskew(image: np.ndarray) -> np.ndarray:
    """The classic MNIST deskew: the affine map that removes the slant (the shear of the moments) and
    moves the centre of mass to the centre of the frame. A blank image is returned as it is."""
    m = moments(image)
    if m is None:
        return image
    shear = m.shear
    # Output pixel (x=col, y=row) samples the input at x + shear * (y - c) + (col - c), y + (row - c).
    inverse = np.array([[1.0, shear, m.col - CENTRE - shear * CENTRE], [0.0, 1.0, m.row - CENTRE]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(
        image, inverse, (SIZE, SIZE), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def shift(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """`image` moved by whole pixels, zeros filling in (np.roll would wrap ink round to the other side)."""
    out = np.zeros_like(image)
    height, width = image.shape
    src_rows = slice(max(0, -rows), min(height, height - rows))
    dst_rows = slice(max(0, rows), min(height, height + rows))
    src_cols = slice(max(0, -cols), min(width, width - cols))
    dst_cols = slice(max(0, cols), min(width, width + cols))
    out[dst_rows, dst_cols] = image[src_rows, src_cols]
    return out
