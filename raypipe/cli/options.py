"""What the command line's commands share: KEY=VALUE options and the error line."""

from __future__ import annotations

from typing import Any

from raypipe.errors import RaypipeError


def parse_pairs(values: list[str] | None, what: str) -> dict[str, Any]:
    """KEY=VALUE options as a dict; values parsed as YAML scalars (numbers, booleans, lists)."""
    import yaml

    found: dict[str, Any] = {}
    for value in values or []:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise RaypipeError(f"{what} '{value}': write it as KEY=VALUE")
        found[key] = yaml.safe_load(raw)
    return found
