"""Writing a task's dataset (generated items) to a path or filesystem URI, atomically."""

from __future__ import annotations

import posixpath
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.engine.rundir import filesystem

ROW_GROUP_SIZE = 256


def write_table(table: pa.Table, location: str) -> str:
    """Write `table` as Parquet at `location` (a path or URI) via a temporary name; returns the path."""
    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, filesystem=fs, compression="zstd", row_group_size=ROW_GROUP_SIZE)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pa.fs.FileType.NotFound:
            fs.delete_file(tmp)
        raise
    return path
