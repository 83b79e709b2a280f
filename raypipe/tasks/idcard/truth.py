"""Truth fields derived from a card's OCR words, for sources (such as the public dataset) that carry none.

Words may come with their labels (姓名, 张三, 性别, 男, ... as the generator writes them), with
labels glued to values (姓名张三), or as bare values in card order (张三, 男, 汉, 1990, 1, 5, ...).
Fields are read with `raypipe.tasks.idcard.fields.parse_fields`, the parser predictions are scored with, on
the clean words; the address, which the parser does not need, is read here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from raypipe.tasks.idcard.fields import LABELS, normalise_line, parse_fields
from raypipe.tasks.idcard.schema import TRUTH_FIELDS

_ID_WORD = re.compile(r".*[0-9]{17}[0-9X]")
_BIRTH_END_WORD = re.compile(r".*[0-9]日")


def derive_truth(words: Sequence[str]) -> dict[str, str | None]:
    """The truth fields (TRUTH_FIELDS) that the words state; a field they do not state is None."""
    cleaned = [word for word in (normalise_line(w) for w in words) if word]
    fields = parse_fields("\n".join(words))
    derived = {
        "name": fields["name"],
        "sex": fields["sex"],
        "ethnicity": fields["ethnicity"],
        "birth_date": fields["birth_date"] or _numeric_birth_date(cleaned),
        "id_number": fields["id_number"],
        "address": derive_address(cleaned),
    }
    return {field: derived[field] for field in TRUTH_FIELDS}


def derive_address(words: Sequence[str]) -> str | None:
    """The address: the words after 住址 up to the next label or the ID number, joined.

    Without a 住址 label, the words between the birth date and the ID number (bare-values layout).
    """
    for index, word in enumerate(words):
        if "住址" not in word:
            continue
        head = word.split("住址", 1)[1]
        parts = [head] if head else []
        for following in words[index + 1 :]:
            if _ends_address(following):
                break
            parts.append(following)
        return "".join(parts) or None
    return _unlabelled_address(words)


def _ends_address(word: str) -> bool:
    return any(label in word for label in LABELS) or _ID_WORD.match(word) is not None


def _unlabelled_address(words: Sequence[str]) -> str | None:
    id_index = next((i for i, word in enumerate(words) if _ID_WORD.match(word)), None)
    birth_end = _birth_end(words)
    if id_index is None or birth_end is None or birth_end >= id_index:
        return None
    parts = [word for word in words[birth_end:id_index] if not any(label in word for label in LABELS)]
    return "".join(parts) or None


def _birth_end(words: Sequence[str]) -> int | None:
    """The index just after the words of the birth date, None when no date is found."""
    for index, word in enumerate(words):
        if _BIRTH_END_WORD.match(word):
            return index + 1
    triple = _numeric_triple_index(words)
    return None if triple is None else triple + 3


def _numeric_birth_date(words: Sequence[str]) -> str | None:
    """A date written as three bare numbers (1990, 1, 5), the layout of words without 年月日."""
    index = _numeric_triple_index(words)
    if index is None:
        return None
    year, month, day = (words[index + offset] for offset in range(3))
    fields = parse_fields(f"{year}年{month}月{day}日")
    return fields["birth_date"]


def _numeric_triple_index(words: Sequence[str]) -> int | None:
    for index in range(len(words) - 2):
        year, month, day = words[index : index + 3]
        if (
            re.fullmatch(r"[0-9]{4}", year)
            and re.fullmatch(r"[0-9]{1,2}", month)
            and re.fullmatch(r"[0-9]{1,2}", day)
        ):
            return index
    return None
