"""Orientation stages: leave the image, deskew small angles (Hough), or undo quarter turns (Tesseract OSD).

A stage that decides no correction is needed returns its input object unchanged, so identical images keep
identical bytes (the runner deduplicates them by content hash).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from raypipe.engine.models import engine_versions
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.imaging import (
    IMAGE_STAGE_RESOURCES,
    as_gray,
    rotate_expanded,
    rotate_quarter_turns,
)
from raypipe.tasks.idcard.stages.ocr_tesseract import (
    limit_tesseract_threads,
    require_tesseract,
    tesseract_identity,
)


class NoOrient(Stage):
    """The image as it is."""

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


class HoughDeskew(Stage):
    """Estimate the dominant small skew from straight edges (card borders, text lines) and rotate it away.

    Lines come from a probabilistic Hough transform over Canny edges of the image and of its text merged
    into line-shaped blobs; the skew is the length-weighted median angle of lines within `max_angle` of
    horizontal or vertical. Skews under `min_angle` are left alone.
    """

    resources: ClassVar[Resources] = IMAGE_STAGE_RESOURCES

    def __init__(self, max_angle: float = 15.0, min_angle: float = 0.5):
        self.max_angle = max_angle
        self.min_angle = min_angle

    @classmethod
    def cache_identity(cls, **_: object) -> dict[str, object]:
        return {"engines": engine_versions("cv2")}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        angle = self.estimate_skew(image)
        if abs(angle) < self.min_angle:
            return image
        return rotate_expanded(image, angle)

    def estimate_skew(self, image: np.ndarray) -> float:
        """Degrees by which the content is turned clockwise (positive) or counter-clockwise; 0 if unknown."""
        import cv2

        # Without the blur, sensor noise becomes edges: 5x slower and wrong by degrees on noisy cards.
        gray = cv2.GaussianBlur(as_gray(image), (5, 5), 0)
        edges = cv2.Canny(gray, 50, 150) | cv2.Canny(_text_line_blobs(gray), 50, 150)
        shorter_side = min(gray.shape)
        lines = cv2.HoughLinesP(
            edges,
            rho=1,
            theta=np.pi / 720,  # 0.25 degree bins: 4x faster than 0.1, and the median refines it
            threshold=max(30, shorter_side // 8),
            minLineLength=max(20, shorter_side // 5),
            maxLineGap=max(3, shorter_side // 60),
        )
        if lines is None:
            return 0.0
        return _dominant_angle(lines.reshape(-1, 4).astype(np.float64), self.max_angle)


def _text_line_blobs(gray: np.ndarray) -> np.ndarray:
    """Dark text merged horizontally into one white blob per line, whose long edges follow the baseline."""
    import cv2

    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    kernel_width = max(9, gray.shape[1] // 40)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_width, 3))
    return cv2.morphologyEx(ink, cv2.MORPH_CLOSE, kernel)


def _dominant_angle(segments: np.ndarray, max_angle: float) -> float:
    """Length-weighted median of the segments' deviations from the nearest axis, within `max_angle`."""
    dx = segments[:, 2] - segments[:, 0]
    dy = segments[:, 3] - segments[:, 1]
    angles = np.degrees(np.arctan2(dy, dx))  # image y points down: positive means turned clockwise
    deviation = (angles + 45.0) % 90.0 - 45.0  # from the nearest horizontal or vertical axis
    keep = np.abs(deviation) <= max_angle
    if not keep.any():
        return 0.0
    deviation, lengths = deviation[keep], np.hypot(dx, dy)[keep]
    order = np.argsort(deviation)
    cumulative = np.cumsum(lengths[order])
    median_index = int(np.searchsorted(cumulative, cumulative[-1] / 2.0))
    return float(deviation[order][median_index])


class TesseractOSD(Stage):
    """Quarter-turn orientation from Tesseract's orientation and script detection (OSD).

    OSD reads a gray copy resized so its shorter side is `short_side` pixels: on 640x400 cards, doubling
    the size lifted OSD's confidence from 0.3-0.8 to 1.4-2.5. The image is rotated only when the
    confidence reaches `min_confidence` (a 7 degree skew once fooled OSD into "180" at 0.43); images OSD
    cannot judge (too few characters) pass through unchanged.
    """

    resources: ClassVar[Resources] = Resources(num_cpus=1)
    warm_up: ClassVar[bool] = False  # a fresh tesseract process per call, as TesseractOCR

    def __init__(self, min_confidence: float = 1.0, short_side: int = 800):
        self.preflight()
        self.min_confidence = min_confidence
        self.short_side = short_side
        limit_tesseract_threads()

    @classmethod
    def preflight(cls, **_: object) -> None:
        require_tesseract(["osd"])

    @classmethod
    def cache_identity(cls, **_: object) -> dict[str, object]:
        """Tesseract, its osd data, and OpenCV (the resize before OSD)."""
        identity = tesseract_identity(["osd"])
        identity["engines"] = {**identity["engines"], **engine_versions("cv2")}
        return identity

    def __call__(self, image: np.ndarray) -> np.ndarray:
        rotate = self.clockwise_correction(image)
        if rotate % 360 == 0:
            return image
        return rotate_quarter_turns(image, rotate)

    def clockwise_correction(self, image: np.ndarray) -> int:
        """Degrees (0, 90, 180, 270) to turn the image clockwise to make it upright; 0 when unsure."""
        import pytesseract

        try:
            osd = pytesseract.image_to_osd(self._osd_input(image), output_type=pytesseract.Output.DICT)
        except pytesseract.TesseractError:
            return 0  # too few characters to judge: not an error, just nothing to do
        if float(osd.get("orientation_conf", 0.0)) < self.min_confidence:
            return 0
        return int(osd.get("rotate", 0)) % 360

    def _osd_input(self, image: np.ndarray) -> np.ndarray:
        import cv2

        gray = as_gray(image)
        factor = self.short_side / min(gray.shape)
        if abs(factor - 1.0) < 0.05:
            return gray
        interpolation = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
        return cv2.resize(gray, None, fx=factor, fy=factor, interpolation=interpolation)
