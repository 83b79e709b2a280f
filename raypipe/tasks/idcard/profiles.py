"""Named distribution profiles: the degradations applied to a clean card, and the attributes recorded."""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.render import PlacedWord

PROFILES: tuple[str, ...] = ("clean", "rotated", "skewed", "dark", "blurred", "noisy", "jpeg", "mixed")
# A mixed dataset is mostly clean cards with every degradation represented.
MIXED_WEIGHTS: dict[str, float] = {
    "clean": 0.3,
    "rotated": 0.1,
    "skewed": 0.12,
    "dark": 0.12,
    "blurred": 0.12,
    "noisy": 0.12,
    "jpeg": 0.12,
}
PNG_COMPRESS_LEVEL = 6
FILL = (255, 255, 255)


@dataclass(frozen=True)
class SliceAttributes:
    """How one item was degraded; the defaults mean "not at all". Rotation is counter-clockwise."""

    profile: str = "clean"
    rotation: int = 0
    skew_angle: float = 0.0
    blur: float = 0.0
    brightness: float = 1.0
    noise: float = 0.0
    jpeg_quality: int = 0

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def draw_attributes(profile: str, rng: np.random.Generator) -> SliceAttributes:
    """The degradation of one item of `profile`; a mixed item records the profile it drew."""
    if profile == "mixed":
        names = list(MIXED_WEIGHTS)
        weights = np.array(list(MIXED_WEIGHTS.values()))
        profile = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    base = SliceAttributes(profile=profile)
    draws = {
        "clean": lambda: base,
        "rotated": lambda: replace(base, rotation=int(rng.choice([90, 180, 270]))),
        "skewed": lambda: replace(base, skew_angle=round(float(rng.choice([-1, 1]) * rng.uniform(3, 10)), 2)),
        "dark": lambda: replace(base, brightness=round(float(rng.uniform(0.3, 0.6)), 2)),
        "blurred": lambda: replace(base, blur=round(float(rng.uniform(1.5, 3.0)), 2)),
        "noisy": lambda: replace(base, noise=round(float(rng.uniform(15, 35)), 1)),
        "jpeg": lambda: replace(base, jpeg_quality=int(rng.integers(10, 31))),
    }
    if profile not in draws:
        raise DatasetError(f"unknown data profile {profile!r}: choose one of {', '.join(PROFILES)}")
    return draws[profile]()


def apply_attributes(
    image: Image.Image, words: list[PlacedWord], attributes: SliceAttributes, rng: np.random.Generator
) -> tuple[Image.Image, list[PlacedWord]]:
    """Degrade a clean card as `attributes` say: geometry first (boxes follow), then pixels."""
    if attributes.rotation:
        image, words = _rotate(image, words, attributes.rotation)
    if attributes.skew_angle:
        image, words = _rotate(image, words, attributes.skew_angle)
    if attributes.brightness != 1.0:
        image = ImageEnhance.Brightness(image).enhance(attributes.brightness)
    if attributes.blur:
        image = image.filter(ImageFilter.GaussianBlur(radius=attributes.blur))
    if attributes.noise:
        image = _add_noise(image, attributes.noise, rng)
    return image, words


def encode_image(image: Image.Image, attributes: SliceAttributes) -> tuple[bytes, str]:
    """The image's file bytes and extension: JPEG at the recorded quality, else PNG (lossless)."""
    buffer = io.BytesIO()
    if attributes.jpeg_quality:
        image.save(buffer, format="JPEG", quality=attributes.jpeg_quality)
        return buffer.getvalue(), "jpg"
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue(), "png"


def _rotate(
    image: Image.Image, words: list[PlacedWord], degrees: float
) -> tuple[Image.Image, list[PlacedWord]]:
    """Rotate counter-clockwise about the centre, growing the canvas, and move each box with it."""
    if degrees % 90 == 0:
        quarter = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180}
        rotated = image.transpose(quarter.get(int(degrees) % 360, Image.Transpose.ROTATE_270))
    else:
        rotated = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=FILL)
    moved = [
        PlacedWord(w.word, [_rotate_point(p, degrees, image.size, rotated.size) for p in w.box])
        for w in words
    ]
    return rotated, moved


def _rotate_point(
    point: list[float], degrees: float, old_size: tuple[int, int], new_size: tuple[int, int]
) -> list[float]:
    radians = math.radians(degrees)
    cos, sin = round(math.cos(radians), 12), round(math.sin(radians), 12)
    dx, dy = point[0] - old_size[0] / 2, point[1] - old_size[1] / 2
    x = new_size[0] / 2 + dx * cos + dy * sin
    y = new_size[1] / 2 - dx * sin + dy * cos
    return [round(x, 2), round(y, 2)]


def _add_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(sigma)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8))
