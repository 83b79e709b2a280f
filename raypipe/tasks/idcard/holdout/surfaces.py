"""A holdout card's printed surface: gradient, guilloche or wave pattern, mottling, faint emblem, portrait."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

# Pale paper tones, none of them the main generator's flat (236, 241, 246).
PAPER_TONES: tuple[RGB, ...] = (
    (246, 238, 226),
    (232, 242, 236),
    (240, 234, 246),
    (250, 244, 232),
    (228, 238, 248),
    (246, 232, 234),
)
INK_TONES: tuple[RGB, ...] = (
    (196, 120, 110),
    (110, 150, 190),
    (120, 170, 130),
    (170, 130, 190),
    (200, 160, 90),
)


def card_surface(
    size: tuple[int, int], surface: str, watermark: bool, rng: np.random.Generator
) -> Image.Image:
    """A blank card of `size` with the `surface` pattern (layouts.SURFACES) and, if asked, an emblem."""
    start, end = _pick(PAPER_TONES, rng), _pick(PAPER_TONES, rng)
    image = Image.fromarray(_gradient(size, start, end, float(rng.uniform(0, math.pi))))
    # Dense wave lines are printed fainter than the sparse guilloche bands, as on real security stock.
    strength = rng.uniform(0.28, 0.4) if surface == "waves" else rng.uniform(0.45, 0.6)
    ink = _pale(_pick(INK_TONES, rng), float(strength))
    draw = ImageDraw.Draw(image)
    if surface == "guilloche":
        _guilloche_bands(draw, size, ink, rng)
    elif surface == "waves":
        _wave_lines(draw, size, ink, rng)
    elif surface == "rosette":
        _rosette(draw, (size[0] * 0.62, size[1] * 0.55), min(size) * 0.42, ink, rng)
    elif surface == "mottled":
        image = _mottle(image, rng)
    if watermark:
        image = _emblem(image, rng)
    return image


def draw_portrait(image: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """A stylised head-and-shoulders photo in `box`: a tinted backdrop, hair, face, collar; no text."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    backdrop = _gradient(
        (width, height),
        (250, 250, 252),
        _pick(((190, 214, 240), (236, 236, 236), (214, 70, 70)), rng),
        math.pi / 2,
    )
    photo = Image.fromarray(backdrop)
    draw = ImageDraw.Draw(photo)
    skin = _pick(((236, 204, 178), (222, 184, 150), (198, 156, 120), (242, 218, 196)), rng)
    hair = _pick(((30, 26, 24), (58, 42, 30), (90, 88, 86), (200, 200, 204)), rng)
    cloth = _pick(((40, 44, 60), (230, 230, 232), (70, 40, 40), (40, 70, 60)), rng)
    cx = width / 2 + float(rng.uniform(-0.05, 0.05)) * width
    head_w, head_h = width * 0.42, height * 0.42
    head_top = height * float(rng.uniform(0.14, 0.2))
    chin = head_top + head_h
    draw.ellipse((cx - width * 0.52, chin + height * 0.06, cx + width * 0.52, height * 1.4), fill=cloth)
    draw.rectangle(
        (cx - head_w * 0.18, chin - head_h * 0.2, cx + head_w * 0.18, chin + height * 0.1), fill=skin
    )
    draw.ellipse(
        (cx - head_w / 2 - 5, head_top - 10, cx + head_w / 2 + 5, head_top + head_h * 0.7), fill=hair
    )
    draw.ellipse((cx - head_w / 2, head_top + head_h * 0.1, cx + head_w / 2, chin), fill=skin)
    image.paste(photo.filter(ImageFilter.GaussianBlur(0.8)), (left, top))


def _gradient(size: tuple[int, int], start: RGB, end: RGB, angle: float) -> np.ndarray:
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    t = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
    start_a, end_a = np.array(start, np.float32), np.array(end, np.float32)
    return (start_a + t[..., None] * (end_a - start_a)).round().astype(np.uint8)


def _guilloche_bands(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], ink: RGB, rng: np.random.Generator
) -> None:
    # Interlaced sine envelopes, as on banknotes: many thin phase-shifted curves in two bands.
    width, height = size
    xs = np.linspace(0, width, 220)
    for band_y in (height * float(rng.uniform(0.2, 0.35)), height * float(rng.uniform(0.65, 0.8))):
        amplitude, waves = height * float(rng.uniform(0.06, 0.1)), float(rng.uniform(2.5, 5))
        for k in range(18):
            phase = k * math.pi / 9
            envelope = 1 + 0.45 * np.sin(2 * math.pi * xs / width * 1.5 + phase / 3)
            ys = band_y + amplitude * envelope * np.sin(2 * math.pi * waves * xs / width + phase)
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=ink, width=1)


def _wave_lines(draw: ImageDraw.ImageDraw, size: tuple[int, int], ink: RGB, rng: np.random.Generator) -> None:
    width, height = size
    xs = np.linspace(0, width, 160)
    spacing, amplitude = int(rng.integers(9, 14)), float(rng.uniform(3, 7))
    waves = float(rng.uniform(3, 6))
    for row, base in enumerate(range(-spacing, height + spacing, spacing)):
        ys = base + amplitude * np.sin(2 * math.pi * waves * xs / width + row * 0.35)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=ink, width=1)


def _rosette(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, ink: RGB, rng: np.random.Generator
) -> None:
    petals = int(rng.integers(7, 13))
    angles = np.linspace(0, 2 * math.pi, 400)
    for k in range(16):
        r = radius * (0.55 + 0.35 * np.sin(petals * angles + k * math.pi / 8) ** 2) * (0.7 + 0.02 * k)
        points = zip(
            (centre[0] + r * np.cos(angles)).tolist(), (centre[1] + r * np.sin(angles)).tolist(), strict=True
        )
        draw.line(list(points), fill=ink, width=1)


def _mottle(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    # Low-frequency blotches plus fine grain: printed stock seen up close, not a flat fill.
    width, height = image.size
    coarse = rng.standard_normal((height // 24 + 2, width // 24 + 2)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.standard_normal((height, width)).astype(np.float32)
    shade = (blotches * 5.0 + grain * 2.5)[..., None]
    pixels = np.asarray(image, dtype=np.float32) + shade
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _emblem(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A faint seal (rings, rays, a five-pointed star) blended into the surface at 10-16 % opacity."""
    width, height = image.size
    radius = min(width, height) * float(rng.uniform(0.22, 0.3))
    cx, cy = width * float(rng.uniform(0.35, 0.6)), height * float(rng.uniform(0.4, 0.6))
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for scale in (1.0, 0.93, 0.62):
        r = radius * scale
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=3)
    for ray in range(36):
        angle = ray * math.pi / 18
        inner, outer = radius * 0.65, radius * 0.9
        draw.line(
            (
                cx + inner * math.cos(angle),
                cy + inner * math.sin(angle),
                cx + outer * math.cos(angle),
                cy + outer * math.sin(angle),
            ),
            fill=255,
            width=2,
        )
    star = [
        (cx + radius * (0.55 if i % 2 == 0 else 0.22) * math.cos(-math.pi / 2 + i * math.pi / 5),
         cy + radius * (0.55 if i % 2 == 0 else 0.22) * math.sin(-math.pi / 2 + i * math.pi / 5))
        for i in range(10)
    ]  # fmt: skip
    draw.polygon(star, fill=255)
    opacity = float(rng.uniform(0.10, 0.16))
    alpha = (np.asarray(mask, dtype=np.float32) / 255.0 * opacity)[..., None]
    colour = np.array(_pick(INK_TONES, rng), np.float32)
    pixels = np.asarray(image, dtype=np.float32) * (1 - alpha) + colour * alpha
    return Image.fromarray(pixels.round().astype(np.uint8))


def _pick(options: tuple[RGB, ...], rng: np.random.Generator) -> RGB:
    return options[int(rng.integers(len(options)))]


def _pale(colour: RGB, strength: float) -> RGB:
    """`colour` mixed with white; strength 1 is the colour itself."""
    return tuple(round(255 - (255 - c) * strength) for c in colour)  # type: ignore[return-value]
