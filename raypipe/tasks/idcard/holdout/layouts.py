"""Holdout card layouts: card size, where each field goes, label placement, date style, colours, surface."""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

LABEL_PLACEMENTS = ("before", "after", "none")  # "after": the value, then its label ("张三 姓名")
DATE_STYLES = (
    "joined",
    "split",
    "padded",
)  # 1990年1月5日, "1990 年 1 月 5 日" in separate pieces, 1990年01月05日
ID_STYLES = ("inline", "above", "after", "bare")  # label then number, label over number, number then label
SURFACES = ("guilloche", "mottled", "waves", "rosette", "gradient")


@dataclass(frozen=True)
class Layout:
    """Where a card prints its fields. Positions are baselines of text rows, in card pixels."""

    name: str
    size: tuple[int, int]
    labels: str
    date_style: str
    id_style: str
    origin: tuple[int, int]  # x of the text column and baseline of the name row
    value_column: int  # value x minus label x on a row with labels before values
    second_column: int  # x offset of the ethnicity pair on the sex row
    row_gap: int
    address_gap: int
    id_origin: tuple[int, int]  # x and baseline of the ID row (of its label, when above the number)
    label_size: int
    value_size: int
    id_size: int
    address_chars: int
    label_colour: RGB
    value_colour: RGB
    portrait: tuple[int, int, int, int]  # left, top, right, bottom
    surface: str
    watermark: bool


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        name="wide_classic",
        size=(856, 540),
        labels="before",
        date_style="joined",
        id_style="inline",
        origin=(48, 96),
        value_column=110,
        second_column=250,
        row_gap=62,
        address_gap=40,
        id_origin=(48, 486),
        label_size=24,
        value_size=30,
        id_size=34,
        address_chars=12,
        label_colour=(128, 58, 40),
        value_colour=(24, 24, 30),
        portrait=(610, 70, 810, 330),
        surface="guilloche",
        watermark=True,
    ),
    Layout(
        name="values_first",
        size=(800, 505),
        labels="after",
        date_style="joined",
        id_style="after",
        origin=(262, 88),
        value_column=0,
        second_column=150,
        row_gap=58,
        address_gap=36,
        id_origin=(40, 462),
        label_size=22,
        value_size=28,
        id_size=32,
        address_chars=11,
        label_colour=(70, 112, 92),
        value_colour=(30, 30, 30),
        portrait=(32, 60, 222, 300),
        surface="mottled",
        watermark=False,
    ),
    Layout(
        name="split_date",
        size=(856, 540),
        labels="before",
        date_style="split",
        id_style="above",
        origin=(56, 100),
        value_column=104,
        second_column=240,
        row_gap=60,
        address_gap=38,
        id_origin=(56, 444),
        label_size=22,
        value_size=28,
        id_size=36,
        address_chars=13,
        label_colour=(64, 72, 150),
        value_colour=(20, 26, 60),
        portrait=(620, 110, 800, 350),
        surface="waves",
        watermark=True,
    ),
    Layout(
        name="compact",
        size=(720, 454),
        labels="before",
        date_style="padded",
        id_style="inline",
        origin=(36, 72),
        value_column=84,
        second_column=200,
        row_gap=50,
        address_gap=32,
        id_origin=(36, 414),
        label_size=20,
        value_size=24,
        id_size=28,
        address_chars=14,
        label_colour=(20, 110, 120),
        value_colour=(16, 16, 16),
        portrait=(520, 44, 686, 262),
        surface="rosette",
        watermark=False,
    ),
    Layout(
        name="values_only",
        size=(856, 540),
        labels="none",
        date_style="joined",
        id_style="bare",
        origin=(60, 104),
        value_column=0,
        second_column=120,
        row_gap=64,
        address_gap=40,
        id_origin=(60, 484),
        label_size=24,
        value_size=30,
        id_size=36,
        address_chars=12,
        label_colour=(0, 0, 0),
        value_colour=(34, 30, 28),
        portrait=(600, 90, 800, 340),
        surface="gradient",
        watermark=True,
    ),
)
LAYOUTS_BY_NAME: dict[str, Layout] = {layout.name: layout for layout in LAYOUTS}


def check_layout(layout: Layout) -> None:
    """Raise ValueError for a layout whose styles are not known ones (a typo would fall to a default)."""
    for value, allowed in (
        (layout.labels, LABEL_PLACEMENTS),
        (layout.date_style, DATE_STYLES),
        (layout.id_style, ID_STYLES),
        (layout.surface, SURFACES),
    ):
        if value not in allowed:
            raise ValueError(f"layout {layout.name!r}: {value!r} is not one of {', '.join(allowed)}")
