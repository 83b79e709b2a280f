"""The label-free per-card features that drift monitoring compares: light, focus, noise, compression, pose."""

from __future__ import annotations

import cv2
import numpy as np

from raypipe.tasks.idcard.stages.imaging import as_gray

FEATURES: dict[str, str] = {
    "brightness": "continuous",
    "contrast": "continuous",
    "sharpness": "continuous",
    "noise": "continuous",
    "blockiness": "continuous",
    "skew": "continuous",
    "quarter_turn": "categorical",
    "ink_offset_x": "continuous",
    "ink_offset_y": "continuous",
    "width": "continuous",
    "height": "continuous",
    "aspect": "continuous",
}
# Ink is the few percent of pixels most darker than their surroundings (a black-hat transform at half
# resolution): thin print, not the portrait's large silhouette, which a heavy blur makes as dark as text.
INK_PERCENTILE = 3.0
STROKE_KERNEL = 9
BLOCK = 8  # JPEG's block size
# Skew and ink are found at half resolution: the Hough transform is 4x cheaper there and still within
# about a degree.
HALF = 0.5
MIN_SIDE = 16


def card_features(image: np.ndarray) -> dict[str, float | str]:
    """Every feature of FEATURES for one decoded card (RGB or gray, uint8)."""
    gray = as_gray(image)
    height, width = gray.shape
    offset_x, offset_y = ink_offsets(gray)
    return {
        "brightness": float(gray.mean()) / 255.0,
        "contrast": float(gray.std()) / 255.0,
        "sharpness": sharpness(gray),
        "noise": noise_sigma(gray),
        "blockiness": blockiness(gray),
        "skew": skew_degrees(gray),
        "quarter_turn": quarter_turn(width, height, offset_x, offset_y),
        "ink_offset_x": offset_x,
        "ink_offset_y": offset_y,
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
    }


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian on 0-1 intensities: blur lowers it, noise raises it."""
    return float(cv2.Laplacian(gray.astype(np.float32) / 255.0, cv2.CV_32F).var())


def noise_sigma(gray: np.ndarray) -> float:
    """Gaussian noise sigma (0-255 scale) from the median absolute diagonal Haar detail (Donoho's MAD).

    Text edges are sparse, so the median sees the flat card and the noise on it, not the print."""
    g = gray[: gray.shape[0] // 2 * 2, : gray.shape[1] // 2 * 2].astype(np.float32)
    detail = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(detail)) / 0.6745)


def blockiness(gray: np.ndarray) -> float:
    """How much larger steps are across 8x8 block boundaries than inside blocks (1: no JPEG blocking).

    Low JPEG qualities quantise each block on its own, so their edges step; a lossless image has no grid."""
    g = gray.astype(np.float32)
    across_cols = np.abs(np.diff(g, axis=1)).mean(axis=0)
    across_rows = np.abs(np.diff(g, axis=0)).mean(axis=1)
    ratios = []
    for steps in (across_cols, across_rows):
        on_grid = np.arange(steps.size) % BLOCK == BLOCK - 1
        if on_grid.any() and not on_grid.all():  # an image under two blocks wide has no grid to see
            ratios.append((steps[on_grid].mean() + 1e-3) / (steps[~on_grid].mean() + 1e-3))
    return float(np.mean(ratios)) if ratios else 1.0


def skew_degrees(gray: np.ndarray) -> float:
    """The small turn of the text lines, degrees counter-clockwise (the deskew stage's Hough estimate)."""
    from raypipe.tasks.idcard.stages.orient import HoughDeskew

    return -HoughDeskew(max_angle=15.0).estimate_skew(_half(gray)) + 0.0  # + 0.0: no negative zero


def _half(gray: np.ndarray) -> np.ndarray:
    if min(gray.shape) < 2 * MIN_SIDE:
        return gray
    return cv2.resize(gray, None, fx=HALF, fy=HALF, interpolation=cv2.INTER_AREA)


def ink_offsets(gray: np.ndarray) -> tuple[float, float]:
    """Where the ink's centre of mass lies from the image centre, as fractions of width and height."""
    small = _half(gray)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (STROKE_KERNEL, STROKE_KERNEL))
    strokes = cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, kernel)
    ink = strokes >= max(1.0, np.percentile(strokes, 100.0 - INK_PERCENTILE))
    if not ink.any():  # a blank image has no print
        return 0.0, 0.0
    rows, cols = np.nonzero(ink)
    height, width = small.shape
    return float(cols.mean() / width - 0.5), float(rows.mean() / height - 0.5)


def quarter_turn(width: int, height: int, offset_x: float, offset_y: float) -> str:
    """The quarter turn (degrees counter-clockwise: "0", "90", "180", "270") that would explain the layout.

    An upright card is landscape with its text left of centre (the portrait sits on the right); turned 90
    degrees counter-clockwise, that left side ends at the bottom."""
    if width >= height:
        return "0" if offset_x <= 0 else "180"
    return "90" if offset_y >= 0 else "270"
