"""An ID card's fields read from OCR text (the label-then-value parser), its checksum, the course assertion.

The parser reads raw OCR output: lines joined by "\\n", labels (姓名, 性别, 民族, 出生, 住址, 公民身份号码)
either glued to their values or on their own lines, spaces anywhere, full-width characters. Every
value it returns was read in the text; it never infers one field from another (the ID's embedded
birth date is compared by `birth_consistent`, never copied into `birth_date`).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from raypipe.engine.codec import plain

LABELS: tuple[str, ...] = ("公民身份号码", "姓名", "性别", "民族", "出生", "住址")
SEXES: tuple[str, ...] = ("男", "女")
# The 56 officially recognised ethnic groups, as printed on the card (without the trailing 族).
ETHNICITIES: tuple[str, ...] = (
    "汉", "蒙古", "回", "藏", "维吾尔", "苗", "彝", "壮", "布依", "朝鲜", "满", "侗", "瑶", "白",
    "土家", "哈尼", "哈萨克", "傣", "黎", "傈僳", "佤", "畲", "高山", "拉祜", "水", "东乡", "纳西",
    "景颇", "柯尔克孜", "土", "达斡尔", "仫佬", "羌", "布朗", "撒拉", "毛南", "仡佬", "锡伯", "阿昌",
    "普米", "塔吉克", "怒", "乌孜别克", "俄罗斯", "鄂温克", "德昂", "保安", "裕固", "京", "塔塔尔",
    "独龙", "鄂伦春", "赫哲", "门巴", "珞巴", "基诺",
)  # fmt: skip
FIELD_NAMES: tuple[str, ...] = ("name", "sex", "ethnicity", "birth_date", "year", "month", "day", "id_number")
ASSERTIONS: tuple[str, ...] = ("assert_name", "assert_year", "assert_month", "assert_day", "assert_id")
EXACT_FIELDS: tuple[str, ...] = ("name", "sex", "ethnicity", "birth_date", "id_number")
# Name, birth date and ID number all exactly right: what a card reader needs; the default objective.
KEY_FIELDS: tuple[str, ...] = ("name", "birth_date", "id_number")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"
ID_PATTERN = re.compile(r"(?<![0-9])([0-9]{17}[0-9X])(?![0-9X])")
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_NOISE_CHARS = re.compile(r"[\s:;|_'\"`]+")
_CJK_NAME_CHAR = re.compile(r"[\u4e00-\u9fff·]")
FULL_DATE = re.compile(r"(?<![0-9])([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日?")
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})年|出生([0-9]{4})(?![0-9])")
MONTH = re.compile(r"(?<![0-9])([0-9]{1,2})月")
DAY = re.compile(r"(?<![0-9])([0-9]{1,2})日")
_ETHNICITY_ALTERNATION = "|".join(sorted(ETHNICITIES, key=len, reverse=True))
_LABELLED_ETHNICITY = re.compile(rf"民族({_ETHNICITY_ALTERNATION})")
_LONE_ETHNICITY = re.compile(rf"({_ETHNICITY_ALTERNATION})族?")


@plain
@dataclass(frozen=True)
class CardFields:
    """What an extract stage read off one card: the fields (FIELD_NAMES), the OCR text they were read from
    (scored by CER) and the OCR engine's mean word confidence (None when it gives none)."""

    values: Mapping[str, str | None] = field(default_factory=dict)
    text: str = ""
    confidence: float | None = None

    def get(self, name: str) -> str | None:
        return self.values.get(name)


def normalise_line(line: str) -> str:
    """Full-width to ASCII (NFKC), upper-case latin, and no whitespace or separator punctuation."""
    return _NOISE_CHARS.sub("", unicodedata.normalize("NFKC", line)).upper()


def normalised_lines(text: str) -> list[str]:
    """The non-empty normalised lines of an OCR output."""
    lines = (normalise_line(line) for line in text.splitlines())
    return [line for line in lines if line]


def parse_fields(text: str) -> dict[str, str | None]:
    """Extract the card's fields from raw OCR text; a field not read in the text is None.

    birth_date is YYYY-MM-DD and only set for a real calendar date; year, month and day are the
    numbers as read (no leading zeros), each set on its own so that a half-read date still counts.
    """
    lines = normalised_lines(text)
    compact = "".join(lines)
    year, month, day = _birth_parts(compact)
    return {
        "name": _name(lines),
        "sex": _sex(lines, compact),
        "ethnicity": _ethnicity(lines, compact),
        "birth_date": iso_date(year, month, day),
        "year": year,
        "month": month,
        "day": day,
        "id_number": _id_number([normalise_line(token) for token in text.split()], lines, compact),
    }


def _name(lines: list[str]) -> str | None:
    for index, line in enumerate(lines):
        if "姓名" not in line:
            continue
        value = line.split("姓名", 1)[1].split("性别", 1)[0]
        if not value and index + 1 < len(lines) and not _looks_like_label_or_value(lines[index + 1]):
            value = lines[index + 1]
        return _clean_name(value, max_length=None)
    # No label read: the name is the card's first text, if that line looks like a name at all.
    if lines and not _looks_like_label_or_value(lines[0]):
        return _clean_name(lines[0], max_length=4)
    return None


def _clean_name(value: str, max_length: int | None) -> str | None:
    name = "".join(_CJK_NAME_CHAR.findall(value)).strip("·")
    if len(name) < 2 or (max_length is not None and len(name) > max_length):
        return None
    return name


def _looks_like_label_or_value(line: str) -> bool:
    if any(label in line for label in LABELS) or line in SEXES:
        return True
    return _LONE_ETHNICITY.fullmatch(line) is not None or any(char.isdigit() for char in line)


def _sex(lines: list[str], compact: str) -> str | None:
    if match := re.search(r"性别([男女])", compact):
        return match.group(1)
    if lone := [line for line in lines if line in SEXES]:
        return lone[0]
    if match := re.search(r"([男女])民族", compact):
        return match.group(1)
    return None


def _ethnicity(lines: list[str], compact: str) -> str | None:
    if match := _LABELLED_ETHNICITY.search(compact):
        return match.group(1)
    for line in lines:
        if match := _LONE_ETHNICITY.fullmatch(line):
            return match.group(1)
    return None


def _birth_parts(compact: str) -> tuple[str | None, str | None, str | None]:
    if match := FULL_DATE.search(compact):
        return tuple(str(int(part)) for part in match.groups())  # type: ignore[return-value]
    year = _YEAR.search(compact)
    month = MONTH.search(compact)
    day = DAY.search(compact)
    return (
        str(int(year.group(1) or year.group(2))) if year else None,
        str(int(month.group(1))) if month else None,
        str(int(day.group(1))) if day else None,
    )


def iso_date(year: str | None, month: str | None, day: str | None) -> str | None:
    """YYYY-MM-DD for a real calendar date, else None."""
    if year is None or month is None or day is None:
        return None
    try:
        return dt.date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        return None


def _id_number(tokens: list[str], lines: list[str], compact: str) -> str | None:
    # Whole words first, then lines, then everything: joining can glue a neighbour's digits to the ID's.
    candidates = [match for token in tokens for match in ID_PATTERN.findall(token)]
    candidates = candidates or [match for line in lines for match in ID_PATTERN.findall(line)]
    candidates = candidates or ID_PATTERN.findall(compact)
    valid = [candidate for candidate in candidates if id_checksum_valid(candidate)]
    return (valid or candidates or [None])[0]


def id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character ("0"-"9" or "X") of an ID's first 17 digits."""
    if not re.fullmatch(r"[0-9]{17}", first17):
        raise ValueError(f"an ID check digit needs exactly 17 digits, got {first17!r}")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def id_checksum_valid(id_number: str | None) -> bool:
    """True for an 18-character ID whose last character is its ISO 7064 MOD 11-2 check digit."""
    if not id_number or not _ID_SHAPE.fullmatch(id_number.upper()):
        return False
    return id_check_digit(id_number[:17]) == id_number[17].upper()


def birth_consistent(fields: Mapping[str, str | None]) -> bool:
    """True when the parsed birth date equals the date embedded in the parsed ID (digits 7-14)."""
    birth_date, id_number = fields.get("birth_date"), fields.get("id_number")
    if not birth_date or not id_number or not _ID_SHAPE.fullmatch(id_number.upper()):
        return False
    return birth_date.replace("-", "") == id_number[6:14]


def course_assertion(fields: Mapping[str, str | None]) -> dict[str, bool]:
    """The course's five checks: a name, a year 1900-2025, a month 1-12, a day 1-31, an 18-digit ID."""
    id_number = fields.get("id_number")
    return {
        "assert_name": bool(fields.get("name")),
        "assert_year": _in_range(fields.get("year"), 1900, 2025),
        "assert_month": _in_range(fields.get("month"), 1, 12),
        "assert_day": _in_range(fields.get("day"), 1, 31),
        "assert_id": bool(id_number) and _ID_SHAPE.fullmatch(id_number.upper()) is not None,
    }


def assertion_score(checks: Mapping[str, bool]) -> float:
    """The fraction of the course's five checks that pass."""
    return sum(bool(checks[name]) for name in ASSERTIONS) / len(ASSERTIONS)


def _in_range(value: str | None, low: int, high: int) -> bool:
    if value is None or not value.isdigit():
        return False
    return low <= int(value) <= high
