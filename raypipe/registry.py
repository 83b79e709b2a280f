"""One registry of stage implementations by (kind, name), with lazy imports and plugins."""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from raypipe.errors import UnknownComponentError

ENTRY_POINT_GROUP = "raypipe.stages"

# Built-ins are "module:Class" strings so that naming a stage never imports its heavy library.
_BUILTINS: dict[str, dict[str, str]] = {
    "orient": {
        "none": "raypipe.stages.orient:NoOrient",
        "hough": "raypipe.stages.orient:HoughDeskew",
        "osd": "raypipe.stages.orient:TesseractOSD",
        "cnn": "raypipe.stages.orient_cnn:OrientCNN",
    },
    "enhance": {
        "none": "raypipe.stages.enhance:NoEnhance",
        "sharpen": "raypipe.stages.enhance:Sharpen",
        "brightness_contrast": "raypipe.stages.enhance:BrightnessContrast",
        "clahe": "raypipe.stages.enhance:Clahe",
        "denoise": "raypipe.stages.enhance:Denoise",
    },
    "channel": {
        "original": "raypipe.stages.channel:Original",
        "gray": "raypipe.stages.channel:Gray",
        "red": "raypipe.stages.channel:Red",
        "green": "raypipe.stages.channel:Green",
        "blue": "raypipe.stages.channel:Blue",
    },
    "ocr": {
        "tesseract": "raypipe.stages.ocr_tesseract:TesseractOCR",
        "rapidocr": "raypipe.stages.ocr_rapid:RapidOCR",
        "easyocr": "raypipe.stages.ocr_easyocr:EasyOCR",
    },
}
_REGISTERED: dict[str, dict[str, type | str]] = {}

T = TypeVar("T", bound=type)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make `cls` the implementation of choice `name` for stages of `kind`."""

    def decorate(cls: T) -> T:
        _REGISTERED.setdefault(kind, {})[name] = cls
        cls.registered_as = (kind, name)
        return cls

    return decorate


def register_lazy(kind: str, name: str, target: str) -> None:
    """Register `target` ("package.module:Class") without importing it yet."""
    _REGISTERED.setdefault(kind, {})[name] = target


@cache
def _plugins() -> dict[str, dict[str, str]]:
    """Entry points in group raypipe.stages, named "kind.name" and pointing at "module:Class"."""
    found: dict[str, dict[str, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        if name:
            found.setdefault(kind, {})[name] = ep.value
    return found


def _entries(kind: str) -> dict[str, type | str]:
    return {**_BUILTINS.get(kind, {}), **_plugins().get(kind, {}), **_REGISTERED.get(kind, {})}


def available(kind: str) -> list[str]:
    """Names that resolve for stages of `kind`, sorted."""
    return sorted(_entries(kind))


def kinds() -> list[str]:
    """Every stage kind that has at least one implementation."""
    return sorted({*_BUILTINS, *_plugins(), *_REGISTERED})


def import_target(target: str) -> type:
    """Import "package.module:Class"; the error names the target and what failed."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise UnknownComponentError(f"'{target}' is not an import path: write it as 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownComponentError(f"cannot import '{module_name}' for '{target}': {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UnknownComponentError(f"module '{module_name}' has no '{attr}' (from '{target}')") from exc


def resolve(kind: str, name: str) -> type:
    """The implementation class for choice `name` of a `kind` stage; "module:Class" names import directly."""
    if ":" in name:
        return import_target(name)
    entry = _entries(kind).get(name)
    if entry is None:
        raise UnknownComponentError(unknown_message(kind, name))
    return import_target(entry) if isinstance(entry, str) else entry


def unknown_message(kind: str, name: str) -> str:
    names = available(kind)
    if not names:
        return f"Unknown stage kind '{kind}'. Known kinds: {', '.join(kinds())}."
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} '{name}'.{hint} Available: {', '.join(names)}."


def params_model(cls: type) -> type[BaseModel]:
    """A pydantic model (extra="forbid") built from the keyword parameters of `cls.__init__`."""
    fields: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        hints = {}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{cls.__name__}Params", __config__=config, **fields)
