"""Photographed holdout cards: warped onto a desk by a random homography, lit unevenly, shot, compressed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from raypipe.tasks.idcard.holdout.geometry import Point, homography, warp

CANVAS = (1000, 750)  # the photo; the card covers 55-80 % of its width
MARGIN = 24
DESK_TONES: tuple[tuple[int, int, int], ...] = (
    (150, 108, 72),
    (188, 160, 122),
    (96, 98, 104),
    (210, 206, 198),
    (62, 70, 58),
)


@dataclass(frozen=True)
class Shot:
    """How one photo is taken; the lighting gain's mean is what `brightness` records."""

    brightness: float
    blur: float
    noise: float
    jpeg_quality: int


def draw_shot(rng: np.random.Generator) -> Shot:
    """Camera and lighting settings of one photo."""
    return Shot(
        brightness=round(float(rng.uniform(0.7, 1.05)), 2),
        blur=round(float(rng.uniform(0.5, 1.3)), 2),
        noise=round(float(rng.uniform(3, 9)), 1),
        jpeg_quality=int(rng.integers(50, 86)),
    )


def placement(card_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random homography putting the card on the canvas: scaled, turned up to 10 degrees, in perspective."""
    width, height = card_size
    scale = float(rng.uniform(0.55, 0.8)) * CANVAS[0] / width
    angle = math.radians(float(rng.uniform(-10, 10)))
    corners = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) * scale / 2
    turned = corners @ np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = turned + rng.uniform(-0.05, 0.05, size=(4, 2)) * width * scale  # each corner alone: perspective
    span = target.max(axis=0) - target.min(axis=0)
    room = np.array(CANVAS) - 2 * MARGIN
    target = target * min(1.0, float(np.min(room / span)))
    span = target.max(axis=0) - target.min(axis=0)
    offset = MARGIN + rng.uniform(0, 1, size=2) * (room - span) - target.min(axis=0)
    source: list[Point] = [(0.0, 0.0), (width, 0.0), (width, height), (0.0, height)]
    return homography(source, [(float(x), float(y)) for x, y in target + offset])


def photograph(card: Image.Image, matrix: np.ndarray, shot: Shot, rng: np.random.Generator) -> Image.Image:
    """The card placed by `matrix` on a desk, with a soft shadow, uneven light, blur and sensor noise."""
    card_mask = np.asarray(warp(_rounded_mask(card.size), matrix, CANVAS, 0), np.float32)[..., None] / 255.0
    scene = _desk(rng) * _shadow(card_mask, rng)
    placed = np.asarray(warp(card, matrix, CANVAS, _edge_colour(card)), np.float32)
    scene = scene * (1 - card_mask) + placed * card_mask
    scene = scene * _lighting(shot.brightness, rng)
    image = Image.fromarray(np.clip(scene, 0, 255).round().astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(shot.blur))
    noisy = np.asarray(image, np.float32) + rng.standard_normal(
        (CANVAS[1], CANVAS[0], 3), dtype=np.float32
    ) * np.float32(shot.noise)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def _rounded_mask(size: tuple[int, int]) -> Image.Image:
    """The card's outline with rounded corners, drawn at twice the size and reduced for a smooth edge."""
    width, height = size
    radius = round(min(size) * 0.1)
    large = Image.new("L", (2 * width, 2 * height), 0)
    ImageDraw.Draw(large).rounded_rectangle((0, 0, 2 * width - 1, 2 * height - 1), radius=radius, fill=255)
    return large.resize(size, Image.Resampling.BOX)


def _edge_colour(card: Image.Image) -> tuple[int, ...]:
    # Resampling blends the fill into the card's edge pixels: a fill like the edge leaves no dark fringe.
    pixels = np.asarray(card, np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0).round())


def _desk(rng: np.random.Generator) -> np.ndarray:
    """A table top: a base tone with wood-like grain or low-frequency mottling, at canvas size."""
    width, height = CANVAS
    base = np.array(DESK_TONES[int(rng.integers(len(DESK_TONES)))], np.float32)
    coarse = rng.standard_normal((height // 50 + 2, width // 50 + 2)).astype(np.float32)
    warp_field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    if rng.random() < 0.5:
        ys = np.arange(height, dtype=np.float32)[:, None]
        shade = 0.08 * np.sin((ys + 25 * warp_field) * float(rng.uniform(0.08, 0.2)))  # wood grain
    else:
        shade = 0.05 * warp_field
    grain = rng.standard_normal((height, width)).astype(np.float32) * np.float32(0.02)
    return base * (1 + shade + grain)[..., None]


def _shadow(card_mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The desk's light multiplier: dimmed under a blurred, offset copy of the card's outline."""
    offset = rng.integers(6, 22, size=2)
    shifted = np.roll(card_mask[..., 0], shift=(int(offset[1]), int(offset[0])), axis=(0, 1))
    soft = Image.fromarray((shifted * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(14))
    depth = float(rng.uniform(0.3, 0.55))
    return (1 - depth * np.asarray(soft, np.float32) / 255.0)[..., None]


def _lighting(brightness: float, rng: np.random.Generator) -> np.ndarray:
    """A light gradient from one side, a vignette and a slight colour cast, averaging `brightness`."""
    width, height = CANVAS
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = xs / width - 0.5, ys / height - 0.5
    angle = float(rng.uniform(0, 2 * math.pi))
    slope = float(rng.uniform(0.15, 0.35))
    gain = 1 + slope * (xs * math.cos(angle) + ys * math.sin(angle))
    gain = gain * (1 - float(rng.uniform(0.25, 0.55)) * (xs**2 + ys**2))
    gain = gain * (brightness / float(gain.mean()))
    cast = 1 + rng.uniform(-0.05, 0.05, size=3).astype(np.float32)
    return gain[..., None] * cast
