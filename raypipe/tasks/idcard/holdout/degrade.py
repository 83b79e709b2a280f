"""The holdout profiles: each item's degradation, applied so that every word box follows the image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.holdout.card import PrintedWord
from raypipe.tasks.idcard.holdout.geometry import in_plane_angle, map_points, rotate
from raypipe.tasks.idcard.holdout.photo import Shot, draw_shot, photograph, placement
from raypipe.tasks.idcard.profiles import SliceAttributes, encode_image

HOLDOUT_PROFILES: tuple[str, ...] = (
    "clean",
    "rotated",
    "upside_down",
    "skewed",
    "dark",
    "blurred",
    "photo",
    "mixed",
)
QUARTER_TURNS: tuple[int, ...] = (90, 180, 270)
# A mixed holdout is a blend of every other profile, photos weighted up: they are what users send.
MIXED_WEIGHTS: dict[str, float] = {
    "clean": 0.2,
    "rotated": 0.12,
    "upside_down": 0.08,
    "skewed": 0.15,
    "dark": 0.1,
    "blurred": 0.1,
    "photo": 0.25,
}
PNG_COMPRESS_LEVEL = 6


def draw_holdout_attributes(profile: str, rng: np.random.Generator, index: int) -> SliceAttributes:
    """The degradation of item `index` of `profile`; a mixed item records the profile it drew.

    A "rotated" dataset turns its items 90, 180, 270, 90, ... by index, so the three turns have equal shares.
    """
    if profile not in HOLDOUT_PROFILES:
        raise DatasetError(
            f"unknown holdout profile {profile!r}: choose one of {', '.join(HOLDOUT_PROFILES)}"
        )
    turn = QUARTER_TURNS[index % len(QUARTER_TURNS)]
    if profile == "mixed":
        names = list(MIXED_WEIGHTS)
        weights = np.array(list(MIXED_WEIGHTS.values()))
        profile = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        turn = QUARTER_TURNS[int(rng.integers(len(QUARTER_TURNS)))]
    base = SliceAttributes(profile=profile)
    if profile == "rotated":
        return replace(base, rotation=turn)
    if profile == "upside_down":
        return replace(base, rotation=180)
    if profile == "skewed":
        return replace(base, skew_angle=round(float(rng.choice([-1, 1]) * rng.uniform(3, 12)), 2))
    if profile == "dark":
        return replace(base, brightness=round(float(rng.uniform(0.3, 0.6)), 2))
    if profile == "blurred":
        return replace(base, blur=round(float(rng.uniform(1.5, 3.0)), 2))
    if profile == "photo":
        shot = draw_shot(rng)
        return replace(
            base, blur=shot.blur, brightness=shot.brightness, noise=shot.noise, jpeg_quality=shot.jpeg_quality
        )
    return base


def degrade(
    image: Image.Image, words: list[PrintedWord], attributes: SliceAttributes, rng: np.random.Generator
) -> tuple[Image.Image, list[PrintedWord], SliceAttributes]:
    """Apply `attributes` to a clean card: geometry first (every box corner follows), then pixels.

    A photo's in-plane angle is only known once the card is placed, so it comes back in `skew_angle`.
    """
    if attributes.profile == "photo":
        matrix = placement(image.size, rng)
        shot = Shot(attributes.brightness, attributes.blur, attributes.noise, attributes.jpeg_quality)
        angle = round(in_plane_angle(matrix, image.size), 2) + 0.0  # never -0.0
        return (
            photograph(image, matrix, shot, rng),
            _moved(words, matrix),
            replace(attributes, skew_angle=angle),
        )
    for degrees in (attributes.rotation, attributes.skew_angle):
        if degrees:
            fill = tuple(int(v) for v in rng.integers(200, 256, size=1).repeat(3))  # the scanner lid
            image, matrix = rotate(image, degrees, fill)  # type: ignore[arg-type]
            words = _moved(words, matrix)
    if attributes.profile == "dark":
        image = ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.4, 0.7)))  # dim light is also flat
        image = ImageEnhance.Brightness(image).enhance(attributes.brightness)
    if attributes.blur:
        image = image.filter(ImageFilter.GaussianBlur(radius=attributes.blur))
    return image, words, attributes


def encode(image: Image.Image, attributes: SliceAttributes) -> tuple[bytes, str]:
    """The stored file: JPEG at the recorded quality for photos, lossless PNG otherwise (as ever)."""
    return encode_image(image, attributes)


def _moved(words: list[PrintedWord], matrix: np.ndarray) -> list[PrintedWord]:
    return [PrintedWord(word.word, map_points(matrix, word.box)) for word in words]
