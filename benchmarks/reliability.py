"""Regenerates RELIABILITY.md's table: each fault injected and bad input tried, with rows expected, rows
found, duplicates and what the user sees. The tests (tests/test_reliability.py, tests/test_multinode.py)
build their inputs here, so the table and the tests try the same things.

    python benchmarks/reliability.py                   # print the table
    python benchmarks/reliability.py --write RELIABILITY.md   # replace the table between its markers

Every run is a real `raypipe run` driver process; its terminal output is what the user sees. Duplicates
are counted in the result parts as they stream (before the final de-duplication by item and
configuration), read while the driver runs; rows found are the distinct rows of items.parquet.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- reliability-table:start -->", "<!-- reliability-table:end -->")
CLASSIFIERS = ("linear", "mlp")

# -- bad inputs -------------------------------------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def bad_images(card_png: bytes) -> dict[str, bytes]:
    """The malformed-image set, each made from one good card (RGB PNG bytes)."""
    from PIL import Image

    bgr = cv2.imdecode(np.frombuffer(card_png, np.uint8), cv2.IMREAD_COLOR)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 128
    cmyk = io.BytesIO()
    Image.fromarray(bgr[:, :, ::-1]).convert("CMYK").save(cmyk, "JPEG")
    return {
        "empty": b"",
        "truncated": card_png[: len(card_png) // 2],
        "not-an-image": b"%PDF-1.4 not an image " * 10,
        "rgba": _png(bgra),
        "16-bit": _png(bgr.astype(np.uint16) * 257),
        "gray": _png(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)),
        "cmyk-jpeg": cmyk.getvalue(),
        "1-pixel": _png(bgr[:1, :1]),
    }


def huge_png(side: int = 16384) -> bytes:
    """A side x side RGB card-like PNG (light background, dark bars): small encoded, 0.8 GB decoded."""
    image = np.full((side, side, 3), 235, np.uint8)
    for row in range(side // 8, side, side // 6):
        image[row : row + side // 40, side // 10 : side - side // 10] = 30
    return _png(image)


def with_images(table: pa.Table, images: dict[str, bytes]) -> pa.Table:
    """`table`'s first len(images) cards with these image bytes and item ids (an idcard table)."""
    table = table.slice(0, len(images))
    structs = [{"bytes": data, "path": f"{name}.png"} for name, data in images.items()]
    table = table.set_column(
        table.column_names.index("image"), "image", pa.array(structs, table["image"].type)
    )
    return table.set_column(table.column_names.index("item_id"), "item_id", pa.array(list(images)))


def bad_image_table(good: int = 2, seed: int = 1) -> pa.Table:
    """`good` clean cards followed by one card per malformed image, ids naming each."""
    from raypipe.spec.registry import resolve_task

    cards = resolve_task("idcard").generate("clean", good + 8, seed)
    first = cards.column("image")[0].as_py()["bytes"]
    originals = {f"good-{i}": cards.column("image")[i].as_py()["bytes"] for i in range(good)}
    return with_images(cards, {**originals, **bad_images(first)})


def dataset_cases(folder: Path) -> dict[str, str]:
    """Datasets a loader must refuse or read, by case: name -> source path (files written under folder)."""
    from raypipe.engine.datasets import write_table
    from raypipe.spec.registry import resolve_task

    cards = resolve_task("idcard").generate("clean", 2, seed=3)
    png = cards.column("image")[0].as_py()["bytes"]
    words = [{"word": "姓名", "box": [[1, 1], [9, 1], [9, 9], [1, 9]]}]
    labels = {
        "label-missing-ocr": b'{"truth": {}}',
        "label-null-ocr": b'{"ocr": null}',
        "label-not-utf8": '{"ocr": [{"word": "姓名", "box": [[1,1],[9,1],[9,9],[1,9]]}]}'.encode("gb18030"),
    }
    cases = {}
    for name, label in labels.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "card.png").write_bytes(png)
        (folder / name / "card.json").write_bytes(label)
        cases[name] = str(folder / name)
    null_ocr = cards.set_column(
        cards.column_names.index("ocr"), "ocr", pa.array([None, words], cards["ocr"].type)
    )
    duplicated = cards.set_column(0, "item_id", pa.array(["same", "same"]))
    wrong = resolve_task("digits").generate("clean", 2, seed=1)
    for name, table in (
        ("parquet-null-ocr", null_ocr),
        ("duplicate-ids", duplicated),
        ("wrong-schema", wrong),
    ):
        cases[name] = write_table(table, str(folder / f"{name}.parquet"))
    return cases


# -- watching a run ----------------------------------------------------------------------------------------


class PartWatcher:
    """Reads a run's streamed parts while its driver runs (each part is written whole, then moved into
    place); keeps every row's item, configuration, and where its first stage ran."""

    def __init__(self, run_dir: Path, columns: tuple[str, ...] = ("item_id", "config_index")):
        self.folder, self.columns = Path(run_dir) / "parts", columns
        self.seen: set[str] = set()
        self.frames: list[pl.DataFrame] = []

    def poll(self) -> int:
        for part in sorted(self.folder.glob("part-*.parquet")) if self.folder.exists() else []:
            if part.name in self.seen:
                continue
            try:
                frame = pl.read_parquet(part)
            except (OSError, pl.exceptions.ComputeError):
                continue  # removed by the finishing run
            self.seen.add(part.name)
            self.frames.append(frame.select([c for c in self.columns if c in frame.columns]))
        return len(self.seen)

    @property
    def rows(self) -> pl.DataFrame:
        return pl.concat(self.frames, how="diagonal_relaxed") if self.frames else pl.DataFrame()

    def wait(self, at_least: int, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if self.poll() >= at_least:
                return
            time.sleep(0.05)
        raise RuntimeError(f"fewer than {at_least} parts appeared before the driver ended")

    def follow(self, proc: subprocess.Popen, timeout: float = 600) -> int:
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            self.poll()
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"the run did not finish in {timeout} s")
        self.poll()
        return proc.returncode


def start_driver(args: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`raypipe run ARGS` as its own process group (killable alone), output appended to `log`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"PYTHONPATH": str(REPO), **(extra_env or {})})
    with log.open("a") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "raypipe.cli", "run", *args],
            cwd=REPO,
            env=env,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# -- the table ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: str
    kind: str
    expected: int
    found: int
    duplicates: int | str
    seen: str


NORMAL_OUTPUT = re.compile(
    r"^(Ray cluster|\s*objective|\s*operator|evaluating|\s*raypipe: configurations|[┏┃┡│└]|\s*accuracy:|"
    r"\s*key_fields|\s*sign test|\s*they spent|\s*\w+ p95|stage calls|run directory|\s*$|.*service time)"
)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unusual_lines(terminal: str, limit: int = 2) -> str:
    """What the terminal showed besides the normal progress, plan and table lines (colours removed)."""
    plain = ANSI.sub("", terminal)
    lines = [line.strip() for line in plain.splitlines() if not NORMAL_OUTPUT.match(line)]
    shown = "; ".join(line[:140] + ("..." if len(line) > 140 else "") for line in lines[:limit])
    return shown or "nothing unusual: the run completes"


def outcome(case: str, kind: str, expected: int, run_dir: Path, watcher: PartWatcher, seen: str) -> Outcome:
    items = pl.read_parquet(run_dir / "items.parquet") if (run_dir / "items.parquet").exists() else None
    found = 0 if items is None else items.select("item_id", "config_id").n_unique()
    streamed = watcher.rows
    duplicates = (
        streamed.height - streamed.select("item_id", "config_index").n_unique() if streamed.height else 0
    )
    return Outcome(case, kind, expected, found, duplicates, seen)


def markdown(outcomes: list[Outcome]) -> str:
    columns = ("case", "kind", "rows expected", "rows found", "duplicates", "what the user sees")
    head = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|"
    rows = [
        f"| {o.case} | {o.kind} | {o.expected} | {o.found} | {o.duplicates} | {o.seen.replace('|', '/')} |"
        for o in outcomes
    ]
    return "\n".join([head, *rows])


def write_between_markers(path: Path, table: str) -> None:
    text = path.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def main() -> None:
    from benchmarks.reliability_runs import all_outcomes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="Replace the table between the markers of this file.")
    parser.add_argument("--skip-huge", action="store_true", help="Leave out the 16k x 16k image run.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raypipe-reliability-") as folder:
        table = markdown(all_outcomes(Path(folder), huge=not args.skip_huge))
    print(table)
    if args.write:
        write_between_markers(args.write, table)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
