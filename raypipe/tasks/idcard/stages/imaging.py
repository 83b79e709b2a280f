"""Image and word-box helpers shared by the built-in stages: colour conversions, rotations, reading order."""

from __future__ import annotations

import numpy as np

from raypipe.spec.stage import Resources

# Image stages are single images through OpenCV: half a CPU each leaves room for the OCR actors and Ray
# Data's own operators on small machines (a pool that takes every CPU can wait forever).
IMAGE_STAGE_RESOURCES = Resources(num_cpus=0.5)


def as_gray(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 luminance image (ITU-R 601 weights, as OpenCV); gray input comes back as is."""
    import cv2

    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image; RGB input comes back as is."""
    import cv2

    if image.ndim == 3:
        return image
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def rotate_expanded(image: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Rotate counter-clockwise by any angle, growing the canvas so no corner is cut.

    New border pixels repeat the edge, so the rotation adds no strong edges of its own.
    """
    import cv2

    height, width = image.shape[:2]
    center = (width / 2.0, height / 2.0)
    matrix = cv2.getRotationMatrix2D(center, degrees_ccw, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_width = round(height * sin + width * cos)
    new_height = round(height * cos + width * sin)
    matrix[0, 2] += new_width / 2.0 - center[0]
    matrix[1, 2] += new_height / 2.0 - center[1]
    return cv2.warpAffine(
        image,
        matrix,
        (new_width, new_height),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def rotate_quarter_turns(image: np.ndarray, degrees_clockwise: int) -> np.ndarray:
    """Rotate clockwise by a multiple of 90 degrees, losslessly."""
    if degrees_clockwise % 90:
        raise ValueError(f"not a multiple of 90 degrees: {degrees_clockwise}")
    turns_ccw = (-degrees_clockwise // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns_ccw))


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 array; raises ValueError for empty, corrupt or truncated data."""
    import cv2

    if not data:
        raise ValueError("empty image")
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise ValueError("corrupt or truncated image (cannot decode)")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
