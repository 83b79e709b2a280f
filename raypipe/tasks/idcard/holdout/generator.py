"""generate_holdout: ID cards in the canonical schema, drawn and degraded independently of generate_dataset.

Item i of (profile, seed) draws its identity, layout and fonts from numpy Generators seeded with
(seed, i, HOLDOUT_SALT), so the same (seed, i) shows the same card in every profile, and its degradation
from (seed, i, HOLDOUT_SALT, crc32(profile)). No clock; PNG and JPEG settings are fixed: the same
arguments give byte-identical rows on a machine with the same fonts installed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.holdout.card import PrintedWord, Typefaces, render_card
from raypipe.tasks.idcard.holdout.degrade import HOLDOUT_PROFILES, degrade, draw_holdout_attributes, encode
from raypipe.tasks.idcard.holdout.fonts import draw_face
from raypipe.tasks.idcard.holdout.identities import HoldoutIdentity, draw_holdout_identity
from raypipe.tasks.idcard.holdout.layouts import LAYOUTS, Layout
from raypipe.tasks.idcard.profiles import SliceAttributes
from raypipe.tasks.idcard.schema import CANONICAL_SCHEMA, truth_text

HOLDOUT_SALT = zlib.crc32(b"raypipe-holdout")
ITEM_PREFIX = "holdout"


@dataclass(frozen=True)
class HoldoutItem:
    """One rendered holdout card with what drew it: the row's content plus its layout and fonts."""

    item_id: str
    identity: HoldoutIdentity
    layout: Layout
    faces: Typefaces
    image: Image.Image
    words: list[PrintedWord]
    attributes: SliceAttributes

    def as_row(self) -> dict[str, object]:
        """The item in the canonical schema."""
        data, extension = encode(self.image, self.attributes)
        return {
            "item_id": self.item_id,
            "image": {"bytes": data, "path": f"{self.item_id}.{extension}"},
            "ocr": [word.as_row() for word in self.words],
            **{f"truth_{field}": value for field, value in self.identity.truth().items()},
            "truth_text": truth_text([word.word for word in self.words]),
            **self.attributes.as_row(),
        }


def generate_holdout(profile: str, n: int, seed: int) -> pa.Table:
    """`n` holdout cards degraded by `profile` (one of HOLDOUT_PROFILES), in the canonical schema."""
    if profile not in HOLDOUT_PROFILES:
        raise DatasetError(
            f"unknown holdout profile {profile!r}: choose one of {', '.join(HOLDOUT_PROFILES)}"
        )
    if n < 1 or seed < 0:
        raise DatasetError(f"a holdout dataset needs n >= 1 and seed >= 0, got n={n}, seed={seed}")
    rows = [render_holdout_item(profile, seed, index).as_row() for index in range(n)]
    return pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def render_holdout_item(profile: str, seed: int, index: int) -> HoldoutItem:
    """Item `index` of the (profile, seed) holdout set."""
    card_rng = np.random.default_rng([seed, index, HOLDOUT_SALT])
    identity = draw_holdout_identity(card_rng)
    layout = LAYOUTS[int(card_rng.integers(len(LAYOUTS)))]
    faces = Typefaces(label=draw_face(card_rng), value=draw_face(card_rng))
    image, words = render_card(identity, layout, faces, card_rng)
    degradation_rng = np.random.default_rng([seed, index, HOLDOUT_SALT, zlib.crc32(profile.encode())])
    attributes = draw_holdout_attributes(profile, degradation_rng, index)
    image, words, attributes = degrade(image, words, attributes, degradation_rng)
    return HoldoutItem(
        item_id=f"{ITEM_PREFIX}-{profile}-{seed}-{index:06d}",
        identity=identity,
        layout=layout,
        faces=faces,
        image=image,
        words=words,
        attributes=attributes,
    )
