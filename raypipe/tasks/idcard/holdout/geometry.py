"""Projective geometry for holdout cards: one 3x3 matrix moves both the image and every word's corners."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

Point = tuple[float, float]
# Coordinates are continuous: pixel (i, j) covers [i, i+1) x [j, j+1), as PIL's transforms sample it.


def rotation(degrees: float, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """The counter-clockwise turn about the centre on a canvas grown to fit, and that canvas's size."""
    width, height = size
    radians = math.radians(degrees)
    cos, sin = round(math.cos(radians), 12), round(math.sin(radians), 12)
    new_size = (
        math.ceil(round(width * abs(cos) + height * abs(sin), 6)),
        math.ceil(round(width * abs(sin) + height * abs(cos), 6)),
    )
    to_origin = _translation(-width / 2, -height / 2)
    turn = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return _translation(new_size[0] / 2, new_size[1] / 2) @ turn @ to_origin, new_size


def homography(source: list[Point], target: list[Point]) -> np.ndarray:
    """The 3x3 projective map sending four `source` points to four `target` points."""
    rows, values = [], []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    solution = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(values, dtype=np.float64))
    return np.append(solution, 1.0).reshape(3, 3)


def map_points(matrix: np.ndarray, points: list[Point] | tuple[Point, ...]) -> tuple[Point, ...]:
    """`points` moved by the projective `matrix`."""
    array = np.column_stack([np.asarray(points, dtype=np.float64), np.ones(len(points))])
    moved = array @ matrix.T
    return tuple((float(x / w), float(y / w)) for x, y, w in moved)


def warp(
    image: Image.Image, matrix: np.ndarray, size: tuple[int, int], fill: tuple[int, ...] | int = 0
) -> Image.Image:
    """`image` moved by `matrix` onto a canvas of `size`; uncovered pixels take `fill`."""
    inverse = np.linalg.inv(matrix)
    inverse = inverse / inverse[2, 2]
    coefficients = tuple(float(c) for c in inverse.flatten()[:8])
    return image.transform(
        size, Image.Transform.PERSPECTIVE, coefficients, resample=Image.Resampling.BICUBIC, fillcolor=fill
    )


def rotate(image: Image.Image, degrees: float, fill: tuple[int, int, int]) -> tuple[Image.Image, np.ndarray]:
    """`image` rotated counter-clockwise (canvas grown) and the matrix that moves its points the same way."""
    matrix, size = rotation(degrees, image.size)
    quarter_turns = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }
    if degrees % 90 == 0 and int(degrees) % 360 in quarter_turns:
        return image.transpose(quarter_turns[int(degrees) % 360]), matrix  # exact, no resampling
    if degrees % 360 == 0:
        return image.copy(), matrix
    return warp(image, matrix, size, fill), matrix


def in_plane_angle(matrix: np.ndarray, size: tuple[int, int]) -> float:
    """The counter-clockwise angle in degrees of the card's top edge after `matrix` (image y points down)."""
    (x0, y0), (x1, y1) = map_points(matrix, [(0.0, 0.0), (float(size[0]), 0.0)])
    return math.degrees(math.atan2(-(y1 - y0), x1 - x0))


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
