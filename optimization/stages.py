"""Spec choices for EasyOCR with a choice of recognizer network (the built-in stage's `recognizer`)."""

from __future__ import annotations

from typing import Any


def easyocr_choice(recognizer: str, recognizer_dir: str) -> dict[str, Any]:
    """A spec choice for raypipe's EasyOCR stage running `recognizer` from `recognizer_dir`, on the CPU."""
    params = {"recognizer": recognizer, "recognizer_dir": recognizer_dir, "gpu": False}
    return {"name": "easyocr", "label": f"easyocr-{recognizer}", "params": params}
