"""The label-free per-image features of an 8x8 digit that drift monitoring compares."""

from __future__ import annotations

import math

import cv2
import numpy as np

from raypipe.tasks.digits.imaging import CENTRE, moments
from raypipe.tasks.digits.models import features_of, upright_model

INK_LEVEL = 128
FEATURES: dict[str, str] = {
    "mean_intensity": "continuous",
    "ink_fraction": "continuous",
    "centre_offset": "continuous",
    "slant": "continuous",
    "sharpness": "continuous",
    "upright": "continuous",
}


def image_features(image: np.ndarray) -> dict[str, float]:
    """Mean intensity and ink fraction (0-1), centre-of-mass offset (px), slant (degrees), sharpness and
    uprightness (0-1).

    Slant is the angle of the shear a deskew would remove (positive: the bottom leans right); sharpness
    is the mean absolute Laplacian on 0-1 intensities, which blur lowers and noise raises; uprightness is
    a classifier's probability that the digit is not turned half round (`models.upright_model`), the
    only one of them that an upside-down digit changes. All are finite, blank images included.
    """
    m = moments(image)
    laplacian = cv2.Laplacian(image.astype(np.float32) / 255.0, cv2.CV_32F, borderType=cv2.BORDER_CONSTANT)
    return {
        "mean_intensity": float(image.mean()) / 255.0,
        "ink_fraction": float((image >= INK_LEVEL).mean()),
        "centre_offset": 0.0 if m is None else math.hypot(m.row - CENTRE, m.col - CENTRE),
        "slant": 0.0 if m is None else math.degrees(math.atan(m.shear)),
        "sharpness": float(np.abs(laplacian).mean()),
        "upright": float(upright_model().predict_proba(features_of(image))[0, 1]),
    }
