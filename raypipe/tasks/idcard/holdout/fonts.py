"""The CJK fonts of holdout cards: installed faces other than the main generator's Noto Sans CJK."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageFont

from raypipe.errors import DatasetError


@dataclass(frozen=True)
class FontCandidate:
    """A face to look for: its family name, where Debian puts it, and the package that installs it."""

    family: str
    paths: tuple[str, ...]
    package: str


@dataclass(frozen=True)
class FontFace:
    """A face found on this machine: the file and the index of the face inside a collection."""

    family: str
    path: Path
    index: int


# The order is part of the dataset's definition: an item draws a position in this tuple.
FONT_CANDIDATES: tuple[FontCandidate, ...] = (
    FontCandidate(
        "Noto Serif CJK SC",
        (
            "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
            "/usr/share/fonts/noto-cjk/NotoSerifCJK-Regular.ttc",
        ),
        "fonts-noto-cjk",
    ),
    FontCandidate(
        "Noto Serif CJK SC",
        (
            "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
            "/usr/share/fonts/noto-cjk/NotoSerifCJK-Bold.ttc",
        ),
        "fonts-noto-cjk",
    ),
    FontCandidate("AR PL UKai CN", ("/usr/share/fonts/truetype/arphic/ukai.ttc",), "fonts-arphic-ukai"),
    FontCandidate("AR PL UMing CN", ("/usr/share/fonts/truetype/arphic/uming.ttc",), "fonts-arphic-uming"),
    FontCandidate("WenQuanYi Zen Hei", ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",), "fonts-wqy-zenhei"),
)
MAX_FACES_PER_FILE = 16


@functools.cache
def installed_faces() -> tuple[FontFace | None, ...]:
    """FONT_CANDIDATES as found on this machine: the face, or None where it is not installed."""
    return tuple(_find(candidate) for candidate in FONT_CANDIDATES)


def holdout_fonts() -> tuple[FontFace, ...]:
    """Every candidate face installed here, in FONT_CANDIDATES order; DatasetError when there is none."""
    faces = tuple(face for face in installed_faces() if face is not None)
    if not faces:
        packages = " ".join(dict.fromkeys(candidate.package for candidate in FONT_CANDIDATES))
        raise DatasetError(
            "no CJK font for the holdout renderer: it prints in Noto Serif CJK, AR PL UKai/UMing or "
            f"WenQuanYi Zen Hei, and found none; install them with `sudo apt-get install {packages}`"
        )
    return faces


def draw_face(rng: np.random.Generator) -> FontFace:
    """One installed face, drawn uniformly over FONT_CANDIDATES positions (a missing one falls to the next).

    The draw is the same on every machine; only where a face is missing does the item change.
    """
    holdout_fonts()  # fail with the install hint before drawing
    faces = installed_faces()
    position = int(rng.integers(len(faces)))
    return next(face for face in faces[position:] + faces[:position] if face is not None)


@functools.cache
def font(face: FontFace, size: int) -> ImageFont.FreeTypeFont:
    """The face at `size` pixels."""
    return ImageFont.truetype(str(face.path), size, index=face.index)


def _find(candidate: FontCandidate) -> FontFace | None:
    paths = [Path(p) for p in candidate.paths if Path(p).is_file()] or _fontconfig_files(candidate.family)
    for path in paths:
        index = _face_index(path, candidate.family)
        if index is not None:
            return FontFace(candidate.family, path, index)
    return None


def _face_index(path: Path, family: str) -> int | None:
    for index in range(MAX_FACES_PER_FILE):  # a .ttc holds several faces; the SC one is rarely the first
        try:
            face = ImageFont.truetype(str(path), 20, index=index)
        except OSError:
            return None
        if face.getname()[0] == family:
            return index
    return None


def _fontconfig_files(family: str) -> list[Path]:
    # Off Debian the files live elsewhere: ask fontconfig for the family by name, never for a fallback.
    if shutil.which("fc-list") is None:
        return []
    result = subprocess.run(["fc-list", family, "file"], capture_output=True, text=True, check=False)
    files = sorted({line.split(":")[0].strip() for line in result.stdout.splitlines() if line.strip()})
    return [Path(file) for file in files if Path(file).is_file()]
