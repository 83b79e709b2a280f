"""The digits dataset: scikit-learn's 8x8 digits split into training and held-out parts, tables, Parquet I/O.

`load_digits` ships inside scikit-learn (1797 images, values 0-16): nothing is downloaded. Every third
image (index % 3 == 2) is held out, the rest trains the classifiers; the rule needs no random numbers,
so the split is the same on every machine and library version, and each class keeps about a third.

Items are stored as 8x8 gray PNGs scaled to 0-255. Generated item i of (profile, seed) takes its digit
from numpy's Generator seeded with (seed, i), drawn from the held-out part with replacement, and its
degradation from (seed, i, crc32(profile)): the same arguments give the same bytes, a larger n only
appends items, and item i shows the same digit in every profile, so profiles compare item by item.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.errors import DatasetError
from raypipe.tasks.digits.profiles import Degradation, apply_degradation, check_profile, draw_degradation

SKLEARN_SOURCE = "sklearn:digits"
HELD_OUT_EVERY = 3
SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("image", pa.binary()),
        ("truth_label", pa.string()),
        ("profile", pa.string()),
        ("digit", pa.int64()),
        ("rotation", pa.float64()),
        ("noise", pa.float64()),
        ("ink", pa.float64()),
    ]
)
GENERATE_HINT = "write one with `raypipe data generate --task digits --profile mixed --n 300 --out {path}`"


@dataclass(frozen=True)
class Split:
    """One part of load_digits: images (n, 8, 8) uint8 on 0-255, labels (n,), their load_digits indices."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)  # 0-16 counts of a 4x4 block -> 0-255
    images.flags.writeable = False
    return images, bunch.target.astype(np.int64)


@cache
def _part(held_out: bool) -> Split:
    images, labels = _digits()
    indices = np.arange(len(labels))
    chosen = indices[(indices % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]
    split = Split(images[chosen], labels[chosen], chosen)
    for array in (split.images, split.labels, split.indices):
        array.flags.writeable = False  # cached and shared: a caller must copy before changing pixels
    return split


def training_part() -> Split:
    """The images the classifiers learn from (two thirds); never evaluated."""
    return _part(held_out=False)


def held_out_part() -> Split:
    """The images evaluation items are drawn from (one third); never trained on."""
    return _part(held_out=True)


def encode_png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image, dtype=np.uint8))
    if not ok:  # pragma: no cover - OpenCV refuses only malformed arrays
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> the 8x8 uint8 image; ValueError for empty, corrupt or wrongly shaped data."""
    if not data:
        raise ValueError("empty image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("corrupt or truncated image (cannot decode)")
    if image.shape != (8, 8):
        raise ValueError(f"a digit image is 8x8 pixels, this one is {image.shape[1]}x{image.shape[0]}")
    return image


def ink(image: np.ndarray) -> float:
    """Mean intensity on 0-1: how much ink (and noise) the image holds."""
    return round(float(image.mean()) / 255, 4)


def _row(item_id: str, image: np.ndarray, label: int, degradation: Degradation) -> dict[str, object]:
    return {
        "item_id": item_id,
        "image": encode_png(image),
        "truth_label": str(label),
        "profile": degradation.profile,
        "digit": int(label),
        "rotation": degradation.rotation,
        "noise": degradation.noise,
        "ink": ink(image),
    }


def held_out_table() -> pa.Table:
    """The held-out items as they are (profile "clean"), ids naming their load_digits index."""
    part = held_out_part()
    rows = [
        _row(f"digits-{index:04d}", image, label, Degradation())
        for image, label, index in zip(part.images, part.labels, part.indices, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def generate_table(profile: str, n: int, seed: int) -> pa.Table:
    """`n` held-out digits drawn with replacement and degraded by `profile`."""
    check_profile(profile)
    if n < 1 or seed < 0:
        raise DatasetError(f"a digits dataset needs n >= 1 and seed >= 0, got n={n}, seed={seed}")
    part = held_out_part()
    salt = zlib.crc32(profile.encode())
    rows = []
    for index in range(n):
        source = int(np.random.default_rng([seed, index]).integers(len(part.labels)))
        rng = np.random.default_rng([seed, index, salt])
        degradation = draw_degradation(profile, rng)
        image = apply_degradation(part.images[source], degradation, rng)
        rows.append(_row(f"digits-{profile}-{seed}-{index:06d}", image, part.labels[source], degradation))
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def load_table(source: str | os.PathLike[str], limit: int | None = None) -> pa.Table:
    """The first `limit` items of "sklearn:digits" (the held-out part) or of a generated Parquet file."""
    if limit is not None and limit < 1:
        raise DatasetError(f"dataset limit must be at least 1, got {limit}")
    source = os.fspath(source)
    table = held_out_table() if source == SKLEARN_SOURCE else _read_parquet(source)
    if table.num_rows == 0:
        raise DatasetError(f"dataset {source} is empty: it holds no digits to evaluate")
    return table if limit is None else table.slice(0, limit)


def _read_parquet(path: str) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"digits dataset not found: {path}. Use `{SKLEARN_SOURCE}` for the held-out digits, or "
            + GENERATE_HINT.format(path=path)
        ) from exc
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(
            f"digits dataset {path} is not a readable Parquet file ({exc}); "
            + GENERATE_HINT.format(path=path)
        ) from exc
    wrong = [
        f"{f.name} ({f.type})"
        for f in SCHEMA
        if f.name not in schema.names or not schema.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise DatasetError(
            f"digits dataset {path} lacks or mistypes the columns {', '.join(wrong)} (a file of another "
            f"task?); " + GENERATE_HINT.format(path=path)
        )
    return pq.read_table(path, columns=SCHEMA.names)


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> str:
    """Write `table` atomically at `path` (a path or filesystem URI) with the engine's dataset writer."""
    from raypipe.engine.datasets import write_table

    return write_table(table, os.fspath(path))
