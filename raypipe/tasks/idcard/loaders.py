"""Load a dataset from any supported source into the canonical schema (`raypipe.tasks.idcard.schema`).

Sources: a Parquet file; a folder of Parquet files (`data/train-*.parquet`, the layout of a
downloaded copy of the HF dataset lansinuote/ocr_id_card, or `*.parquet`); `hf:<repo_id>`
through the `datasets` library; a folder of images with JSON labels (`<stem>.png|jpg` beside
`<stem>.json` holding {"ocr": [{"word", "box"}], optional "truth": {...}, optional slice attributes}).
Columns a source lacks are filled: item ids from the row index, truth fields derived from the
words (`raypipe.tasks.idcard.truth`), profile "real" and null attributes. A malformed label file fails
its own item at load, with the file's path; the rest of the folder runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.errors import DatasetError
from raypipe.tasks.idcard.schema import (
    CANONICAL_SCHEMA,
    IMAGE_TYPE,
    REAL_PROFILE,
    SLICE_ATTRIBUTES,
    TRUTH_FIELDS,
    normalise_ocr,
    truth_text,
    words_of,
)
from raypipe.tasks.idcard.truth import derive_truth

HF_PREFIX = "hf:"
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
READ_BATCH_ROWS = 512
GENERATE_HINT = (
    "make a synthetic one with `raypipe data generate --task idcard --profile clean --n 200 --out {path}`"
)


def load_dataset(source: str | os.PathLike[str], limit: int | None = None) -> pa.Table:
    """The first `limit` items (all when None) of `source`, in the canonical schema."""
    source = os.fspath(source)
    if limit is not None and limit < 1:
        raise DatasetError(f"dataset limit must be at least 1, got {limit}")
    if source.startswith(HF_PREFIX):
        raw = _read_hub(source[len(HF_PREFIX) :], limit)
    else:
        raw = _read_path(Path(source), limit)
    if raw.num_rows == 0:
        raise DatasetError(f"dataset {source} is empty: it holds no items to evaluate")
    return to_canonical(raw)


def _read_path(path: Path, limit: int | None) -> pa.Table:
    if not path.exists():
        raise DatasetError(
            f"dataset not found: {path}. Pass a Parquet file, a folder of Parquet files or of labelled "
            f"images, or hf:<repo_id>; or {GENERATE_HINT.format(path=path)}"
        )
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"dataset {path} is not a Parquet file (.parquet) or a folder")
        return _read_parquet_files([path], limit)
    if files := parquet_files(path):
        return _read_parquet_files(files, limit)
    if labelled := labelled_images(path):
        return _read_labelled_images(labelled[:limit])
    raise DatasetError(
        f"dataset folder {path} holds no data/train-*.parquet, no *.parquet and no <stem>.png|jpg with "
        f"<stem>.json labels; {GENERATE_HINT.format(path=path / 'cards.parquet')}"
    )


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files of a dataset folder, in a stable order: HF's data/train-* split first."""
    for pattern in ("data/train-*.parquet", "*.parquet", "data/*.parquet"):
        if files := sorted(folder.glob(pattern)):
            return files
    return []


def _read_parquet_files(files: list[Path], limit: int | None) -> pa.Table:
    batches = list(_parquet_batches(files, limit))
    if not batches:
        return pa.table({})
    return pa.Table.from_batches(batches).slice(0, limit)


def _parquet_batches(files: list[Path], limit: int | None) -> Iterator[pa.RecordBatch]:
    """Batches of the files in order, stopping once `limit` rows are read: images are large."""
    remaining = limit
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read Parquet file {file}: {exc}") from exc
        schema = parquet.schema_arrow.remove_metadata()
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            if remaining is not None:
                remaining -= batch.num_rows
                if remaining <= 0:
                    return


def labelled_images(folder: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a folder: every <stem>.json that has an image beside it, by stem."""
    pairs = []
    for label in sorted(folder.glob("*.json")):
        images = [label.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
        if image := next((candidate for candidate in images if candidate.is_file()), None):
            pairs.append((image, label))
    return pairs


def _read_labelled_images(pairs: list[tuple[Path, Path]]) -> pa.Table:
    """One row per pair; a pair whose label file is malformed becomes a row that fails at load with what is
    wrong and the file's path (an error row for that item in every configuration), the others run. A folder
    whose every label file is malformed is refused."""
    rows, problems = [], []
    for image, label in pairs:
        try:
            rows.append(_labelled_image_row(image, label))
        except DatasetError as exc:
            problems.append(str(exc))
            rows.append(_label_error_row(image, str(exc)))
    if problems and len(problems) == len(rows):
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DatasetError(f"every label file is malformed: {'; '.join(problems[:3])}{more}")
    return pa.Table.from_pylist(rows)


# The input of an item whose label file is malformed: the task's decode raises with the message after it,
# so the item's rows carry it as their error (`load: ValueError: label file ...`).
LABEL_ERROR = b"raypipe: malformed label file\n"


def _label_error_row(image: Path, message: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "item_id": image.stem,
        "image": {"bytes": LABEL_ERROR + message.encode("utf-8"), "path": image.name},
        "ocr": [],
    }
    row.update({f"truth_{field}": None for field in TRUTH_FIELDS})
    row.update({name: None for name in SLICE_ATTRIBUTES})
    row["profile"] = REAL_PROFILE
    return row


def raise_label_error(data: bytes) -> None:
    """Raise the load error of an item whose label file was malformed (`data` is its input); else nothing."""
    if data and data[: len(LABEL_ERROR)] == LABEL_ERROR:
        raise ValueError(data[len(LABEL_ERROR) :].decode("utf-8"))


def _labelled_image_row(image: Path, label: Path) -> dict[str, Any]:
    try:
        content = json.loads(label.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read label file {label}: {exc}") from exc
    if not isinstance(content, dict) or not isinstance(content.get("ocr"), list):
        raise DatasetError(f'label file {label} needs an "ocr" list of {{"word": ..., "box": ...}}')
    truth = content.get("truth") or {}
    row: dict[str, Any] = {
        "item_id": image.stem,
        "image": {"bytes": image.read_bytes(), "path": image.name},
        "ocr": _checked_ocr(content["ocr"], label),
    }
    # Every row gets every key: pyarrow infers a table's columns from its first row alone.
    row.update({f"truth_{field}": truth.get(field, truth.get(f"truth_{field}")) for field in TRUTH_FIELDS})
    row.update({name: content.get(name) for name in SLICE_ATTRIBUTES})
    row["profile"] = row["profile"] or REAL_PROFILE
    return row


def _checked_ocr(entries: list[Any] | str | None, where: Path | str) -> list[dict[str, Any]]:
    try:
        # Some exports keep the word list as a JSON string; json.loads errors are ValueErrors.
        return normalise_ocr(json.loads(entries) if isinstance(entries, str) else entries)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f'{where}: malformed "ocr" entry: {exc}') from exc


def _read_hub(repo_id: str, limit: int | None) -> pa.Table:
    try:
        import datasets  # optional and heavy: imported only for this source
    except ImportError as exc:
        raise DatasetError(
            f"reading hf:{repo_id} needs the `datasets` package: `pip install datasets`, or download the "
            "dataset's Parquet files and pass their folder"
        ) from exc
    split = "train" if limit is None else f"train[:{limit}]"
    try:
        loaded = datasets.load_dataset(repo_id, split=split)
    except Exception as exc:  # the hub raises many kinds; all mean "cannot get it here"
        raise DatasetError(
            f"cannot load hf:{repo_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); this machine "
            "may be offline: download the dataset's Parquet files elsewhere and pass their folder"
        ) from exc
    return loaded.with_format("arrow")[:]


def to_canonical(raw: pa.Table) -> pa.Table:
    """Convert a table from any source to the canonical schema, filling what it lacks."""
    if "image" not in raw.column_names or "ocr" not in raw.column_names:
        raise DatasetError(f"a dataset needs `image` and `ocr` columns; this one has {raw.column_names}")
    ocr = [_checked_ocr(entries, "ocr column") for entries in raw.column("ocr").to_pylist()]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "item_id": _item_ids(raw),
        "image": _image_column(raw.column("image")),
        "ocr": pa.array(ocr, type=CANONICAL_SCHEMA.field("ocr").type),
    }
    columns.update(_truth_columns(raw, ocr))
    columns.update(_slice_columns(raw))
    return pa.table({name: columns[name] for name in CANONICAL_SCHEMA.names}).cast(CANONICAL_SCHEMA)


def _item_ids(raw: pa.Table) -> pa.Array | pa.ChunkedArray:
    if "item_id" in raw.column_names:
        ids = raw.column("item_id").cast(pa.string())
        if ids.null_count or len(set(ids.to_pylist())) != raw.num_rows:
            raise DatasetError(
                "the dataset's item_id column has nulls or duplicates: item ids must be unique"
            )
        return ids
    return pa.array([f"row-{index:06d}" for index in range(raw.num_rows)], type=pa.string())


def _image_column(images: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_struct(images.type):
        return images.cast(IMAGE_TYPE)
    if pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type):
        data = images.cast(pa.binary()).combine_chunks()
        return pa.StructArray.from_arrays([data, pa.nulls(len(data), pa.string())], fields=list(IMAGE_TYPE))
    raise DatasetError(f"the dataset's image column is {images.type}: expected struct<bytes, path> or binary")


def _truth_columns(raw: pa.Table, ocr: list[list[dict[str, Any]]]) -> dict[str, pa.Array]:
    words = [words_of(entries) for entries in ocr]
    given = {field: _strings(raw, f"truth_{field}") for field in TRUTH_FIELDS}
    derived: list[dict[str, str | None]] | None = None
    if any(values is None or any(value is None for value in values) for values in given.values()):
        derived = [derive_truth(item_words) for item_words in words]
    columns = {}
    for field, values in given.items():
        values = values or [None] * raw.num_rows
        if derived is not None:
            values = [
                value if value is not None else truth[field]
                for value, truth in zip(values, derived, strict=True)
            ]
        columns[f"truth_{field}"] = pa.array(values, type=pa.string())
    text = _strings(raw, "truth_text") or [truth_text(item_words) for item_words in words]
    columns["truth_text"] = pa.array(text, type=pa.string())
    return columns


def _strings(raw: pa.Table, name: str) -> list[str | None] | None:
    if name not in raw.column_names:
        return None
    return [None if value is None else str(value) for value in raw.column(name).to_pylist()]


def _slice_columns(raw: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray]:
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in SLICE_ATTRIBUTES:
        field_type = CANONICAL_SCHEMA.field(name).type
        if name in raw.column_names:
            columns[name] = raw.column(name).cast(field_type)
        elif name == "profile":
            columns[name] = pa.array([REAL_PROFILE] * raw.num_rows, type=field_type)
        else:
            columns[name] = pa.nulls(raw.num_rows, field_type)
    return columns
