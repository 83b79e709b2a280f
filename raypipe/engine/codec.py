"""A plain serialization of stage outputs for the cache: JSON for structure, .npy for arrays, no pickles.

A cache folder may be shared, so reading it must never run code. Values are arrays, strings, numbers,
booleans, None, lists, dicts and dataclasses that a stage module declared with `@plain`; decoding builds
only those classes, from their fields, and loads arrays with `allow_pickle=False`. Anything else is not
cached (`encode` returns None) rather than pickled.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T", bound=type)
_PLAIN: dict[str, type] = {}
_MAGIC = b"RPC1"


class CodecError(ValueError):
    """A value that cannot be stored plainly, or a stored blob that is not what raypipe wrote."""


def plain(cls: T) -> T:
    """Class decorator: instances of this dataclass may be stored in the cache (by their fields)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    _PLAIN[_type_name(cls)] = cls
    return cls


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def encode(value: Any, meta: dict[str, Any] | None = None) -> bytes | None:
    """The value (and a JSON-able `meta`) as bytes; None when the value is not plain."""
    arrays: list[np.ndarray] = []
    try:
        tree = _to_tree(value, arrays)
    except CodecError:
        return None
    header = json.dumps({"value": tree, "meta": meta or {}}, separators=(",", ":")).encode()
    chunks = [_MAGIC, struct.pack("<II", len(header), len(arrays)), header]
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        chunks += [struct.pack("<Q", buffer.tell()), buffer.getvalue()]
    return b"".join(chunks)


def decode(blob: bytes) -> tuple[Any, dict[str, Any]]:
    """(value, meta) from `encode`'s bytes; CodecError for anything else."""
    if not blob.startswith(_MAGIC):
        raise CodecError("not a raypipe cache value")
    header_len, n_arrays = struct.unpack_from("<II", blob, 4)
    offset = 12 + header_len
    header = json.loads(blob[12:offset])
    arrays = []
    for _ in range(n_arrays):
        (size,) = struct.unpack_from("<Q", blob, offset)
        offset += 8
        arrays.append(np.load(io.BytesIO(blob[offset : offset + size]), allow_pickle=False))
        offset += size
    return _from_tree(header["value"], arrays), header["meta"]


def _to_tree(value: Any, arrays: list[np.ndarray]) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise CodecError("object arrays are not plain")
        arrays.append(value)
        return {"$nd": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        items = [_to_tree(v, arrays) for v in value]
        return items if isinstance(value, list) else {"$tuple": items}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CodecError("dict keys must be strings")
        return {"$dict": {k: _to_tree(v, arrays) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and _type_name(type(value)) in _PLAIN:
        fields = {f.name: _to_tree(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}
        return {"$dc": _type_name(type(value)), "fields": fields}
    raise CodecError(f"{type(value).__name__} is not plain")


def _from_tree(tree: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(tree, list):
        return [_from_tree(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "$nd" in tree:
        return arrays[tree["$nd"]]
    if "$tuple" in tree:
        return tuple(_from_tree(v, arrays) for v in tree["$tuple"])
    if "$dict" in tree:
        return {k: _from_tree(v, arrays) for k, v in tree["$dict"].items()}
    if "$dc" in tree:
        cls = _PLAIN.get(tree["$dc"])
        if cls is None:  # only classes this process declared plain: a stored name imports nothing
            raise CodecError(f"{tree['$dc']} is not a plain class here")
        return cls(**{k: _from_tree(v, arrays) for k, v in tree["fields"].items()})
    raise CodecError("unknown node in a cache value")
