"""An ID card's fields read by where its words lie, whatever order the OCR engine returned them in.

`read_fields(words)` keeps the contract of `fields.parse_fields` (the keys of FIELD_NAMES, None for a field
not read, every value read on the card) but pairs labels with values by geometry. It reads cards turned by
any quarter turn or skewed, lines in any order, labels glued to their values or split over two words,
labels printed after their values, values split over words, and cards with no labels at all.

How: the words are turned into the card's upright frame (see `layout_geometry`) and grouped into lines, top
to bottom. Each line is cut into labels (姓名 性别 民族 出生 住址 公民身份号码, looked for in the line's text,
so a label split over words or glued to a value is found) and value pieces (the text between labels, cut
where the OCR put a space or the words leave a gap wider than a line's height). Whether the card prints
values after or before their labels is a vote over all its labels. A label's value is the text on that side
of it up to the next label; else the text on the other side; else the next line when that has no label.

Candidates for each field, most trusted first: the values next to its label; then any value piece, then any
line, of the field's shape (a lone 男/女, a lone ethnicity, a date 1990年1月5日, 17 digits and a digit or X).
A name not read next to 姓名 comes only from the top line, when that line has no label and holds 2-4
Chinese characters that are no other field's value.

Arbitration, always between candidates that were read, never filling in a field that was not:
- ID number: the candidates that pass the ISO 7064 MOD 11-2 checksum, preferring one whose birth date
  (digits 7-14) equals a date read on the card, then one whose sex digit (the 17th, odd = 男) agrees with a
  sex read, then the most trusted; with no valid candidate, the most trusted candidate as read.
- Birth date, when the ID chosen is checksum-valid: the most trusted full date equal to the ID's date;
  else one that differs from it in exactly one digit (compared as YYYYMMDD), corrected to the ID's date,
  since one misread digit is likelier than a wrong ID that passes its checksum; else the most trusted date.
  With no full date read, year, month and day are each the first read on its own: the ID never supplies a
  part, so a card whose date was not read has birth_date None even when its ID is valid.
- Sex: the candidate that agrees with a checksum-valid ID's sex digit, else the most trusted one; a single
  sex read is kept even when it disagrees (it is one character, not a misread digit).
- Name and ethnicity: the most trusted candidate; nothing else on the card checks them.
When any word has no box there is no geometry to go by: the text goes to `parse_fields`, a word a line.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from raypipe.tasks.idcard.fields import (
    DAY,
    ETHNICITIES,
    FULL_DATE,
    ID_PATTERN,
    MONTH,
    id_checksum_valid,
    iso_date,
    normalise_line,
    parse_fields,
)
from raypipe.tasks.idcard.layout_geometry import upright_words
from raypipe.tasks.idcard.stages.words import Word, group_lines

ID_LABEL = "公民身份号码"
# The ID label's usual partial readings count as the label.
_LABEL = re.compile(r"公民身份号码|公民身份号|身份号码|姓名|性别|民族|出生|住址")
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})年")  # stricter than the text parser's: the label is read separately
_ETHNICITY = re.compile("({})族?".format("|".join(sorted(ETHNICITIES, key=len, reverse=True))))
_SEX = re.compile(r"[男女]")
_NAME_CHAR = re.compile(r"[\u4e00-\u9fff·]")
_LEADING_NOISE = re.compile(r"^[^\u4e00-\u9fff0-9]+")
# Words farther apart than this many line heights hold separate values ("女" and "汉" on an unlabelled card).
VALUE_GAP_HEIGHTS = 1.0
UNLABELLED_NAME_MAX = 4

Date = tuple[str, str, str]


@dataclass(frozen=True)
class Token:
    """A label (spelled as in LABELS) or a value piece, on one line of the upright card."""

    text: str
    is_label: bool


@dataclass
class CardReading:
    """What was read where: values next to each label, every value piece, every line's values joined."""

    labelled: dict[str, list[str]] = field(default_factory=dict)
    pieces: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    top_line: str | None = None

    def near(self, label: str) -> list[str]:
        return self.labelled.get(label, [])


def read_fields(words: Sequence[Word]) -> dict[str, str | None]:
    """The card's fields (FIELD_NAMES) from an OCR engine's words; None for a field not read."""
    if not words or any(word.box is None for word in words):
        return parse_fields("\n".join(word.text for word in words))
    lines = [line_tokens(line) for line in group_lines(upright_words(words))]
    return fields_of(card_reading(lines))


def fields_of(reading: CardReading) -> dict[str, str | None]:
    """The fields of a card reading, arbitrated as the module docstring says."""
    dates, sexes = date_candidates(reading), sex_candidates(reading)
    id_number = choose_id(id_candidates(reading), dates, sexes)
    year, month, day = choose_date(dates, id_number) if dates else partial_date(reading)
    return {
        "name": choose_name(reading),
        "sex": choose_sex(sexes, id_number),
        "ethnicity": choose_ethnicity(reading),
        "birth_date": iso_date(year, month, day),
        "year": year,
        "month": month,
        "day": day,
        "id_number": id_number,
    }


def line_tokens(line: Sequence[Word]) -> list[Token]:
    """One line's words (upright, left to right) as labels and value pieces."""
    chars = line_chars(line)
    text = "".join(char for char, _ in chars)
    tokens: list[Token] = []
    cursor = 0
    for match in _LABEL.finditer(text):
        tokens += value_tokens(chars[cursor : match.start()])
        tokens.append(Token(ID_LABEL if "身份号" in match.group() else match.group(), True))
        cursor = match.end()
    return tokens + value_tokens(chars[cursor:])


def line_chars(line: Sequence[Word]) -> list[tuple[str, bool]]:
    """The line's normalised characters, each with whether a new value piece may start there."""
    height = statistics.median(_extent(word, 1) for word in line)
    chars: list[tuple[str, bool]] = []
    previous_right: float | None = None
    for word in line:
        left = min(u for u, _ in word.box)
        starts = previous_right is None or left - previous_right > VALUE_GAP_HEIGHTS * height
        for raw in word.text:
            starts = starts or raw.isspace()
            for char in normalise_line(raw):
                chars.append((char, starts))
                starts = False
        previous_right = max(u for u, _ in word.box)
    return chars


def value_tokens(chars: Sequence[tuple[str, bool]]) -> list[Token]:
    """A run of value characters cut into pieces where a piece may start."""
    pieces: list[str] = []
    for index, (char, starts) in enumerate(chars):
        if starts or index == 0:
            pieces.append("")
        pieces[-1] += char
    return [Token(piece, False) for piece in pieces]


def card_reading(lines: Sequence[list[Token]]) -> CardReading:
    """Pair each label with its value (module docstring) and collect every value piece and line."""
    labels_first = values_follow_labels(lines)
    reading = CardReading()
    for index, tokens in enumerate(lines):
        below = lines[index + 1] if index + 1 < len(lines) else []
        for position, token in enumerate(tokens):
            if token.is_label and (value := label_value(tokens, position, labels_first, below)):
                reading.labelled.setdefault(token.text, []).append(value)
        values = [token.text for token in tokens if not token.is_label]
        reading.pieces += values
        reading.lines.append("".join(values))
    with_values = [tokens for tokens in lines if any(not token.is_label for token in tokens)]
    if with_values and not any(token.is_label for token in with_values[0]):
        reading.top_line = "".join(token.text for token in with_values[0])
    return reading


def values_follow_labels(lines: Iterable[list[Token]]) -> bool:
    """Whether more labels have a value right after them than right before them (ties: after)."""
    after = before = 0
    for tokens in lines:
        for index, token in enumerate(tokens):
            if token.is_label:
                after += index + 1 < len(tokens) and not tokens[index + 1].is_label
                before += index > 0 and not tokens[index - 1].is_label
    return after >= before


def label_value(tokens: Sequence[Token], position: int, labels_first: bool, below: Sequence[Token]) -> str:
    """The value of the label at `position`: its side of the line, else the other side, else the line below
    when that has no label."""
    after = "".join(_values_up_to_label(tokens[position + 1 :]))
    before = "".join(reversed(_values_up_to_label(list(reversed(tokens[:position])))))
    value = (after or before) if labels_first else (before or after)
    if not value and below and not any(token.is_label for token in below):
        value = "".join(token.text for token in below)
    return value


def _values_up_to_label(tokens: Sequence[Token]) -> list[str]:
    values = []
    for token in tokens:
        if token.is_label:
            break
        values.append(token.text)
    return values


def id_candidates(reading: CardReading) -> list[str]:
    """18-character ID numbers: next to the ID label, then in any piece, then in any line."""
    texts = [*reading.near(ID_LABEL), *reading.pieces, *reading.lines]
    return _unique(match for text in texts for match in ID_PATTERN.findall(text))


def date_candidates(reading: CardReading) -> list[Date]:
    """Full dates (year, month, day without leading zeros): next to 出生, then in any piece or line."""
    texts = [*reading.near("出生"), *reading.pieces, *reading.lines]
    found = (match for text in texts for match in FULL_DATE.findall(text))
    return _unique(tuple(str(int(part)) for part in match) for match in found)


def sex_candidates(reading: CardReading) -> list[str]:
    """男 or 女: starting the value next to 性别, then any piece that is only that."""
    near = (_without_leading_noise(text) for text in reading.near("性别"))
    labelled = [match.group() for text in near if (match := _SEX.match(text))]
    return _unique([*labelled, *(piece for piece in reading.pieces if _SEX.fullmatch(piece))])


def choose_id(candidates: Sequence[str], dates: Sequence[Date], sexes: Sequence[str]) -> str | None:
    """The checksum-valid candidate that the dates and sexes read support best, else the first read."""
    valid = [candidate for candidate in candidates if id_checksum_valid(candidate)]
    if not valid:
        return candidates[0] if candidates else None
    read_dates = {_compact_date(date) for date in dates}
    return max(valid, key=lambda id_number: (id_number[6:14] in read_dates, _id_sex(id_number) in sexes))


def choose_date(dates: Sequence[Date], id_number: str | None) -> Date:
    """The date read that a checksum-valid ID confirms, or corrects in one digit; else the first read."""
    if id_checksum_valid(id_number):
        embedded = id_number[6:14]
        for date in dates:
            if _compact_date(date) == embedded:
                return date
        for date in dates:
            if sum(a != b for a, b in zip(_compact_date(date), embedded, strict=True)) == 1:
                return (str(int(embedded[:4])), str(int(embedded[4:6])), str(int(embedded[6:])))
    return dates[0]


def partial_date(reading: CardReading) -> tuple[str | None, str | None, str | None]:
    """Year, month and day each read on its own (near 出生 first, then any line), when no full date was."""
    texts = [*reading.near("出生"), *reading.lines]
    return tuple(_first_number(pattern, texts) for pattern in (_YEAR, MONTH, DAY))  # type: ignore[return-value]


def choose_sex(sexes: Sequence[str], id_number: str | None) -> str | None:
    """The sex read that agrees with a checksum-valid ID, else the first read."""
    if id_checksum_valid(id_number) and _id_sex(id_number) in sexes:
        return _id_sex(id_number)
    return sexes[0] if sexes else None


def choose_ethnicity(reading: CardReading) -> str | None:
    """An ethnicity starting the value next to 民族, else the first piece that is only an ethnicity."""
    for text in reading.near("民族"):
        if match := _ETHNICITY.match(_without_leading_noise(text)):
            return match.group(1)
    for piece in reading.pieces:
        if match := _ETHNICITY.fullmatch(piece):
            return match.group(1)
    return None


def choose_name(reading: CardReading) -> str | None:
    """The name next to 姓名; else the top line when it has no label and reads as nothing but a name."""
    for text in reading.near("姓名"):
        if name := _name_text(text):
            return name
    top = reading.top_line
    if not top or re.search(r"[0-9]", top) or _SEX.fullmatch(top) or _ETHNICITY.fullmatch(top):
        return None
    name = _name_text(top)
    return name if name and len(name) <= UNLABELLED_NAME_MAX else None


def _without_leading_noise(text: str) -> str:
    # Stray marks read before a value (RapidOCR reads "」女" on cards turned by 270 degrees).
    return _LEADING_NOISE.sub("", text)


def _name_text(text: str) -> str | None:
    name = "".join(_NAME_CHAR.findall(text)).strip("·")
    return name if len(name) >= 2 else None


def _id_sex(id_number: str) -> str:
    return "男" if int(id_number[16]) % 2 else "女"


def _compact_date(date: Date) -> str:
    year, month, day = date
    return f"{int(year):04d}{int(month):02d}{int(day):02d}"


def _first_number(pattern: re.Pattern[str], texts: Iterable[str]) -> str | None:
    for text in texts:
        if match := pattern.search(text):
            return str(int(match.group(1)))
    return None


def _extent(word: Word, axis: int) -> float:
    values = [corner[axis] for corner in word.box]
    return max(values) - min(values)


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))
