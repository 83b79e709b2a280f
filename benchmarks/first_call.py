"""Does a Tesseract stage's first call in a process cost more than its next ones? (`Stage.warm_up`: raypipe
makes a first call once untimed unless the choice says it costs what the others do.)

    python benchmarks/first_call.py [--processes 8] [--out benchmarks/results/fixed-cost]

Each fresh process builds the quick spec's Tesseract OCR (chi_sim+eng, psm 11) and times four calls on one
generated card (a different card per process), as an actor would: the first is the call a warm-up would
have made untimed. Writes first-call.json (every call) and first-call.md (the first call against the
median of the next three, per process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

ONE_PROCESS = """
import json, sys
from raypipe.engine.execution import timed_call
from raypipe.spec.registry import resolve_task
from raypipe.tasks.idcard.stages.ocr_tesseract import TesseractOCR
task = resolve_task("idcard")
card = task.decode(task.inputs(task.generate("mixed", 1, seed=int(sys.argv[1]))).to_pylist()[0])
ocr = TesseractOCR(lang="chi_sim+eng", psm=11)
print(json.dumps([timed_call(ocr, card)[2] for _ in range(4)]))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    args = parser.parse_args(argv)
    from benchmarks.measure import in_fresh_process, median_range

    rows = []
    for seed in range(args.processes):
        walls = in_fresh_process(ONE_PROCESS, str(seed), cwd=REPO)
        later = statistics.median(walls[1:])
        rows.append({"seed": seed, "wall_ms": walls, "first_over_later": walls[0] / later})
        print(f"card {seed}: " + " ".join(f"{w:.0f}" for w in walls) + " ms", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "first-call.json").write_text(json.dumps({"rows": rows}, indent=1))
    ratios = [r["first_over_later"] for r in rows]
    spread = [max(r["wall_ms"][1:]) / min(r["wall_ms"][1:]) for r in rows]
    lines = [
        "| processes | first call / median of the next three, median [min, max] "
        "| max / min of the next three, median [min, max] |",
        "| --- | --- | --- |",
        f"| {len(rows)} | {median_range(ratios, 3)} | {median_range(spread, 3)} |",
    ]
    (out / "first-call.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
