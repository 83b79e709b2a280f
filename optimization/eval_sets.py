"""Evaluation sets no model here trained on: holdout cards in four quarter turns, and ID-number crops.

The orientation CNNs score 1.0 on held-out cards of the renderer they trained on, so no variant can show a
loss there. These sets come from the task's second, differently rendered holdout set (other fonts and
layouts, photographed cards), where the float models are well below their ceiling: skewed, blurred, dark
and photographed cards, each turned by 0, 90, 180 and 270 degrees. The ID-number crops add cards of the
standard renderer (its degradations), so the recognizers are compared on the digits they must read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from raypipe.tasks.idcard.stages.imaging import as_gray, decode_image
from raypipe.tasks.idcard.stages.orient_cnn import ROTATIONS, model_input

ORIENT_PROFILES = ("clean", "skewed", "blurred", "dark", "photo")
STANDARD_CROP_PROFILES = ("clean", "skewed", "blurred", "noisy", "jpeg", "dark")
# Distinct from the benchmark run's seeds (101, 102) and from every training stream.
SEED = 7
# Pixels kept around an ID number's box, so the recognizer sees the same context as after a detector.
CROP_MARGIN = 6


@dataclass(frozen=True)
class OrientSet:
    """CNN inputs (N, size, size) uint8 by input size, their classes (k = turned 90*k degrees ccw), the
    card each image came from (its four turns share it) and the card's holdout profile."""

    images: dict[int, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    profiles: np.ndarray


@dataclass(frozen=True)
class IdCrop:
    """The region around one card's ID number (gray), the number's box in it (4 corners), and its text."""

    gray: np.ndarray
    quad: list[list[float]]
    truth: str
    source: str  # "holdout-photo", "standard-blurred", ...


@dataclass(frozen=True)
class Card:
    gray: np.ndarray
    rotation: int
    profile: str
    row: dict


def cards(renderer: str, profile: str, n: int, seed: int = SEED) -> Iterator[Card]:
    """Cards of the idcard task's `renderer` ("standard" or "holdout"), decoded to gray one at a time."""
    from raypipe.spec.registry import resolve_task

    for row in resolve_task("idcard").generate(profile, n, seed, renderer=renderer).to_pylist():
        gray = as_gray(decode_image(row.pop("image")["bytes"]))  # the bytes are not needed again
        yield Card(gray, int(row["rotation"] or 0), profile, row)


def orient_set(holdout: dict[str, list[Card]], sizes: set[int]) -> OrientSet:
    """Every card of `holdout` (profile -> cards) in its four quarter turns, as inputs of each size."""
    images: dict[int, list[np.ndarray]] = {size: [] for size in sizes}
    labels, groups, profiles = [], [], []
    card_index = 0
    for profile, profile_cards in holdout.items():
        for card in profile_cards:
            for turns in range(len(ROTATIONS)):
                turned = np.ascontiguousarray(np.rot90(card.gray, k=turns))
                for size in sizes:
                    images[size].append(model_input(turned, size))
                labels.append((card.rotation // 90 + turns) % len(ROTATIONS))
                groups.append(card_index)
                profiles.append(profile)
            card_index += 1
    return OrientSet(
        {size: np.stack(stack) for size, stack in images.items()},
        np.array(labels, np.int64),
        np.array(groups, np.int64),
        np.array(profiles),
    )


def id_crop(card: Card, source: str) -> IdCrop | None:
    """The crop around the card's ID number (None when the number is not printed as one word)."""
    truth = card.row["truth_id_number"]
    word = next((w for w in card.row["ocr"] if w["word"] == truth and w["box"]), None)
    if word is None:
        return None
    points = np.array(word["box"], dtype=float)
    height, width = card.gray.shape
    left, top = np.maximum(np.floor(points.min(axis=0)).astype(int) - CROP_MARGIN, 0)
    right, bottom = np.ceil(points.max(axis=0)).astype(int) + CROP_MARGIN
    region = np.ascontiguousarray(card.gray[top : min(bottom, height), left : min(right, width)])
    quad = [[float(x - left), float(y - top)] for x, y in points]
    return IdCrop(region, quad, truth, source)


def id_crops(holdout: dict[str, list[Card]], standard_cards: int, seed: int = SEED) -> list[IdCrop]:
    """ID-number crops of the upright cards: the given holdout ones, and standard ones of each profile."""
    sources = [(f"holdout-{profile}", card) for profile, group in holdout.items() for card in group]
    for profile in STANDARD_CROP_PROFILES:
        sources += [
            (f"standard-{profile}", card) for card in cards("standard", profile, standard_cards, seed)
        ]
    crops = [id_crop(card, source) if card.rotation == 0 else None for source, card in sources]
    return [crop for crop in crops if crop is not None]


def holdout_cards(per_profile: int, seed: int = SEED) -> dict[str, list[Card]]:
    """`per_profile` holdout cards of each of ORIENT_PROFILES (drawn once, shared by both sets)."""
    return {profile: list(cards("holdout", profile, per_profile, seed)) for profile in ORIENT_PROFILES}
