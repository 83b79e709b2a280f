"""A run's directory and its saved request: the one owner of every path and file a run writes.

`RunDir` takes a local path or any pyarrow filesystem URI (file://, s3://, gs://, hdfs://); every file is
written to a temporary name and moved into place, so a reader never sees a torn file. `Request` is the
typed, saved form of what was asked (`run.json`), so resuming a run is `evaluate(Request.load(run_dir))`.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from raypipe.errors import RaypipeError
from raypipe.spec.schema import PipelineSpec

REQUEST = "run.json"
ITEMS, CONFIGS, SLICES, MANIFEST = "items.parquet", "configs.parquet", "slices.parquet", "manifest.json"
SEARCH, CALIBRATION, LOG = "search.parquet", "calibration.parquet", "run.log"
PARTS = "parts"
_STRICT = ConfigDict(extra="forbid")


def is_uri(location: str) -> bool:
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a local path or URI; local paths become absolute."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise RaypipeError(f"cannot open {location}: {exc}") from exc


class RunDir:
    """The files of one run, wherever they live."""

    def __init__(self, location: str | os.PathLike[str]):
        self.location = os.fspath(location)
        self.fs, self.root = filesystem(self.location)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"RunDir({self.location!r})"

    def __str__(self) -> str:
        return self.root if self.is_local else self.location

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def make(self) -> RunDir:
        self.fs.create_dir(self.path(PARTS), recursive=True)
        return self

    # -- whole files ----------------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> None:
        """Write to a temporary name beside the target, then move it into place."""
        target = self.path(name)
        parent = posixpath.dirname(target)
        tmp = posixpath.join(parent, f".{posixpath.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        self.fs.move(tmp, target)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read()

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def write_parquet(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.write_bytes(name, buffer.getvalue())

    def read_parquet(self, name: str) -> pl.DataFrame:
        return pl.from_arrow(pq.read_table(self.path(name), filesystem=self.fs))

    # -- streamed parts -------------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        selector = pafs.FileSelector(self.path(PARTS), allow_not_found=True)
        names = [posixpath.basename(i.path) for i in self.fs.get_file_info(selector)]
        return sorted(n for n in names if n.startswith("part-") and n.endswith(".parquet"))

    def next_part_index(self) -> int:
        return max((int(n.split("-")[1].split(".")[0]) for n in self.part_names()), default=-1) + 1

    def write_part(self, batch: pa.Table, index: int) -> None:
        """Persist one streamed batch of result rows as it arrives (a crash loses at most that batch)."""
        self.write_parquet(posixpath.join(PARTS, f"part-{index:06d}.parquet"), batch)

    def read_parts(self, columns: list[str] | None = None) -> pl.DataFrame | None:
        names = self.part_names()
        if not names:
            return None
        frames = [
            pl.from_arrow(
                pq.read_table(self.path(posixpath.join(PARTS, n)), filesystem=self.fs, columns=columns)
            )
            for n in names
        ]
        return pl.concat(frames, how="diagonal_relaxed")

    def drop_from_parts(self, item_ids: set[str]) -> int:
        """Remove these items' rows from every part (a resumed run runs them again, every configuration), so
        that each (item, configuration) has one row and finalizing need not deduplicate, which held every
        row in memory. Each part is rewritten in place (temporary file, then a move), so a crash leaves
        either part whole; running it again is harmless. Returns the rows removed."""
        removed = 0
        wanted = pa.array(sorted(item_ids), pa.string())
        for name in self.part_names():
            path = self.path(posixpath.join(PARTS, name))
            ids = pq.read_table(path, filesystem=self.fs, columns=["item_id"]).column("item_id")
            drop = pc.is_in(ids, value_set=wanted)
            hits = pc.sum(drop).as_py() or 0
            if not hits:
                continue
            removed += hits
            if hits == len(ids):
                self.fs.delete_file(path)
                continue
            table = pq.read_table(path, filesystem=self.fs)
            self.write_parquet(posixpath.join(PARTS, name), table.filter(pc.invert(drop)))
        return removed

    def scan_parts(self) -> pl.LazyFrame | None:
        """Every streamed part as one lazy frame (nothing is read until it is collected or sunk)."""
        names = self.part_names()
        if not names:
            return None
        paths = [self.path(posixpath.join(PARTS, n)) for n in names]
        if self.is_local:
            if len({pq.read_schema(p) for p in paths}) == 1:  # the usual case: one scan of every part
                return pl.scan_parquet(paths)  # its buffers are bounded: a concat's grew with the parts
            frames = [pl.scan_parquet(p) for p in paths]
        else:
            import pyarrow.dataset as ds

            frames = [
                pl.scan_pyarrow_dataset(ds.dataset(p, filesystem=self.fs, format="parquet")) for p in paths
            ]
        return pl.concat(frames, how="diagonal_relaxed")

    def sink_parquet(self, name: str, frame: pl.LazyFrame) -> str:
        """Stream a lazy frame into `name` without holding it in memory; returns a local path to read it back
        from (the file itself for a local run directory, a local copy for a remote one)."""
        if self.is_local:
            target = self.path(name)
            tmp = posixpath.join(posixpath.dirname(target), f".{name}.tmp-{uuid.uuid4().hex[:8]}")
            frame.sink_parquet(tmp, compression="zstd")
            os.replace(tmp, target)
            return target
        local = os.path.join(tempfile.mkdtemp(prefix="raypipe-"), name)
        frame.sink_parquet(local, compression="zstd")
        with open(local, "rb") as source, self.fs.open_output_stream(self.path(name)) as stream:
            for chunk in iter(lambda: source.read(1 << 24), b""):
                stream.write(chunk)
        return local

    def remove_parts(self) -> None:
        """Drop the streamed parts once the final files exist."""
        if self.exists(PARTS):
            self.fs.delete_dir(self.path(PARTS))


class SearchRequest(BaseModel):
    """Which search strategy, with its parameters."""

    model_config = _STRICT
    name: str = Field("exhaustive", description="A registered search strategy (exhaustive, racing).")
    params: dict[str, Any] = Field(default_factory=dict, description="The strategy's parameters.")


class Request(BaseModel):
    """What a run was asked to do; saved as run.json before any work, so a killed run can be finished."""

    model_config = _STRICT
    spec: PipelineSpec
    out: str = Field(description="The run directory: a path or a filesystem URI.")
    dataset: str | None = Field(None, description="A dataset in place of the spec's.")
    limit: int | None = Field(None, ge=1, description="Use only the first N items.")
    address: str | None = Field(None, description="The Ray cluster; None: embedded.")
    share_prefixes: bool = True
    reuse_identical: bool = True
    fuse_light_stages: bool = Field(True, description="Run the light stages in one actor (engine.plan.fuse).")
    cache_dir: str | None = Field(None, description="The stage cache's folder; None: no cache.")
    max_actors_per_pool: int | None = None
    calibrate: bool = Field(True, description="Time a sample of calls alone to turn CPU time into latency.")
    search: SearchRequest = Field(default_factory=SearchRequest)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    def save(self, run_dir: RunDir) -> None:
        run_dir.write_json(REQUEST, self.model_dump(mode="json"))

    @classmethod
    def load(cls, location: str | os.PathLike[str]) -> Request:
        """The request saved in a run directory."""
        run_dir = RunDir(location)
        if not run_dir.exists(REQUEST):
            raise RaypipeError(f"{run_dir} is not a run directory ({REQUEST} missing): nothing to resume")
        return cls.model_validate(run_dir.read_json(REQUEST))


def default_out(spec_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{spec_name}-{stamp}")
