"""Tesseract OCR through pytesseract, and the checks that Tesseract and its language packs are installed."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from raypipe.engine.models import engine_versions, file_identity
from raypipe.errors import StageError
from raypipe.spec.stage import Resources, Stage
from raypipe.tasks.idcard.stages.words import OcrResult, Word, rect_box, sort_reading_order


def limit_tesseract_threads() -> None:
    """Make Tesseract single-threaded unless the user chose otherwise.

    Tesseract's OpenMP threads fight each other on small images: one thread is 4-5x faster on 2 cores,
    and Ray already runs one actor per CPU. Tesseract reads the variable at each process start.
    """
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def apt_package_for_language(language: str) -> str:
    """The Debian package with Tesseract's data for `language` (chi_sim -> tesseract-ocr-chi-sim)."""
    return "tesseract-ocr-" + language.lower().replace("_", "-")


def require_tesseract(languages: list[str]) -> None:
    """Raise StageError saying what to install when pytesseract, Tesseract or a language pack is missing."""
    try:
        import pytesseract
    except ImportError as exc:
        raise StageError("Tesseract stages need pytesseract: pip install pytesseract") from exc
    try:
        installed = set(pytesseract.get_languages(config=""))
    except pytesseract.TesseractNotFoundError as exc:
        raise StageError(
            "the Tesseract binary was not found on PATH: apt-get install tesseract-ocr "
            "(or set pytesseract.pytesseract.tesseract_cmd)"
        ) from exc
    missing = [lang for lang in languages if lang not in installed]
    if missing:
        packages = " ".join(apt_package_for_language(lang) for lang in missing)
        raise StageError(
            f"Tesseract has no language data for {', '.join(missing)} "
            f"(installed: {', '.join(sorted(installed)) or 'none'}): apt-get install {packages}"
        )


@cache
def _tesseract_install(command: str, tessdata_prefix: str | None) -> tuple[str, str | None]:
    """(version, tessdata folder) of the Tesseract binary: two subprocesses per process and setting."""
    try:
        shown = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
        listed = subprocess.run([command, "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "absent", None
    first = (shown.stdout or shown.stderr).strip().splitlines()
    folder = re.search(r'"([^"]+)"', listed.stdout + listed.stderr)
    return (first[0] if first else "unknown"), (folder.group(1) if folder else None)


def tesseract_identity(languages: list[str]) -> dict[str, object]:
    """For cache keys: the Tesseract binary's version, pytesseract's, and the SHA-256 of each language's
    traineddata file (from the folder Tesseract itself reports, so TESSDATA_PREFIX counts)."""
    import pytesseract

    command = pytesseract.pytesseract.tesseract_cmd
    binary, folder = _tesseract_install(command, os.environ.get("TESSDATA_PREFIX"))
    data = {}
    for language in languages:
        path = Path(folder or "") / f"{language}.traineddata"
        data[language] = file_identity(path) if folder and path.is_file() else "missing"
    return {"tesseract": binary, "traineddata": data, "engines": engine_versions("pytesseract")}


def split_languages(lang: str) -> list[str]:
    """Tesseract's "chi_sim+eng" as ["chi_sim", "eng"]."""
    return [part for part in lang.split("+") if part]


# Tesseract's --psm and --oem values: psm 11 is sparse text (reads names psm 3 misreads), oem 1 is LSTM.
PageSegmentation = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
EngineMode = Literal[0, 1, 2, 3]


class TesseractOCR(Stage):
    """Words, boxes and confidences from `pytesseract.image_to_data`, in reading order.

    Tesseract often separates Chinese characters with spaces; words are kept as Tesseract gives them.
    """

    resources: ClassVar[Resources] = Resources(num_cpus=1)
    version: ClassVar[str] = "1"
    # Each call is a fresh tesseract process that loads its language data again: a first call costs what
    # the others do (on 8 cards, 2 % more at the median, -3 to +6 %, where the next three calls spread by
    # 3 %: benchmarks/first_call.py), and a warm-up would cost a whole OCR call in every actor.
    warm_up: ClassVar[bool] = False
    device: str = "cpu"

    def __init__(self, lang: str = "chi_sim+eng", psm: PageSegmentation = 11, oem: EngineMode = 1):
        self.preflight(lang=lang, psm=psm, oem=oem)
        self.lang = lang
        self.config = f"--psm {psm} --oem {oem}"
        limit_tesseract_threads()

    @classmethod
    def preflight(cls, lang: str = "chi_sim+eng", **_: object) -> None:
        require_tesseract(split_languages(lang))

    @classmethod
    def cache_identity(cls, lang: str = "chi_sim+eng", **_: object) -> dict[str, object]:
        return tesseract_identity(split_languages(lang))

    def __call__(self, image: np.ndarray) -> OcrResult:
        import pytesseract

        data = pytesseract.image_to_data(
            image, lang=self.lang, config=self.config, output_type=pytesseract.Output.DICT
        )
        return OcrResult(words=sort_reading_order(_words_from_data(data)))


def _words_from_data(data: dict[str, list]) -> list[Word]:
    """The non-empty words (level 5) of an image_to_data dictionary, confidence scaled to 0..1."""
    words = []
    for index, text in enumerate(data["text"]):
        text = str(text).strip()
        if data["level"][index] != 5 or not text:
            continue
        box = rect_box(data["left"][index], data["top"][index], data["width"][index], data["height"][index])
        confidence = max(float(data["conf"][index]), 0.0) / 100.0
        words.append(Word(text=text, box=box, confidence=confidence))
    return words
