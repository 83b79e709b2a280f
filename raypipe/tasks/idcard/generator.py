"""The synthetic dataset: Chinese resident ID cards drawn, degraded by a named profile, and labelled.

Each item is one card front (640x400 before any rotation) with a valid 18-digit ID number. Its
`ocr` column lists every printed word with its 4-point box, in reading order, labels included:

    姓名, <name>, 性别, <sex>, 民族, <ethnicity>, 出生, <1990年1月5日>, 住址, <address line>...,
    公民身份号码, <id number>

The address is wrapped as printed (11 characters a line), one word per line; `truth_address` is
the lines joined. `truth_text` is the words joined by "\\n": all the text on the card, the
reference of CER. Boxes follow rotation and skew, so they always describe the stored image.

Determinism: item i of (profile, seed) draws its identity from numpy's Generator seeded with
(seed, i) and its degradation from (seed, i, crc32(profile)); no clock, fixed PNG compression.
The same arguments give byte-identical Parquet, a larger n only appends items, and the same
(seed, i) shows the same person in every profile, so profiles can be compared item by item.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.identity import draw_identity
from raypipe.tasks.idcard.profiles import PROFILES, apply_attributes, draw_attributes, encode_image
from raypipe.tasks.idcard.render import draw_card
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA, truth_text

PARQUET_COMPRESSION = "zstd"
ROW_GROUP_SIZE = 256


def generate_dataset(profile: str, n: int, seed: int) -> pa.Table:
    """`n` synthetic cards degraded by `profile` (one of PROFILES), in the canonical schema."""
    if profile not in PROFILES:
        raise DatasetError(f"unknown data profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if n < 1 or seed < 0:
        raise DatasetError(f"a synthetic dataset needs n >= 1 and seed >= 0, got n={n}, seed={seed}")
    rows = [generate_item(profile, seed, index) for index in range(n)]
    return pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def generate_item(profile: str, seed: int, index: int) -> dict[str, object]:
    """Item `index` of the (profile, seed) dataset as one canonical row."""
    identity = draw_identity(np.random.default_rng([seed, index]))
    degradation_rng = np.random.default_rng([seed, index, zlib.crc32(profile.encode())])
    attributes = draw_attributes(profile, degradation_rng)
    image, words = draw_card(identity)
    image, words = apply_attributes(image, words, attributes, degradation_rng)
    data, extension = encode_image(image, attributes)
    item_id = f"{profile}-{seed}-{index:06d}"
    return {
        "item_id": item_id,
        "image": {"bytes": data, "path": f"{item_id}.{extension}"},
        "ocr": [word.as_row() for word in words],
        **{f"truth_{field}": value for field, value in identity.truth().items()},
        "truth_text": truth_text([word.word for word in words]),
        **attributes.as_row(),
    }


def write_dataset(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write `table` as Parquet atomically (raypipe.engine.datasets.write_table owns how)."""
    from raypipe.engine.datasets import write_table

    return Path(write_table(table, os.fspath(path)))
