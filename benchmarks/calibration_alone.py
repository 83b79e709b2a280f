"""Whether calibration times its calls alone: several calibrated runs in one driver (a notebook, a script, a
benchmark), each revision in a fresh process, the revisions alternating.

    python benchmarks/calibration_alone.py [--checkout PATH ...] [--runs 3] [--reps 2]
        [--out benchmarks/results/fixed-cost] [--name calibration-alone]

The spec is `benchmarks/fixed_cost.py`'s calibrated idcard case (6 mixed cards, the orientation CNN or none,
Tesseract): calibration times Tesseract once per card. From a driver's second run on, its calibrator is the
one kept from the run before, so it starts timing as soon as the stream's last batch is in; Ray Data's stage
actors are still exiting then. Each sampled call's time alone is divided by the same card's median time
over every revision's first runs (a fresh calibrator, whose own start takes longer than those exits); the
table gives, per revision and run, the largest such ratio over the 6 cards. Each `--checkout` (a git
worktree of another revision; by default this one) runs from its own directory. Writes NAME.json (every
call) and NAME.md.
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

RUNS = """
import json, sys
import polars as pl
import yaml
from raypipe.engine.rundir import Request
from raypipe.evaluate.driver import evaluate
from raypipe.spec.validation import parse_spec
config, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = parse_spec(yaml.safe_load(open(config)))
calls = []
for run in range(runs):
    result = evaluate(Request(spec=spec, out=f"{out}-{run}", calibrate=True))
    table = result.run_dir.read_parquet("calibration.parquet").filter(pl.col("choice") == "tesseract")
    calls += [{"run": run, "item_id": i, "wall_ms": w} for i, w in zip(table["item_id"], table["wall_ms"])]
print(json.dumps(calls))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout to run (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="calibrated runs in one driver")
    parser.add_argument("--reps", type=int, default=2, help="drivers per checkout")
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    parser.add_argument("--name", default="calibration-alone", help="the result files' name")
    args = parser.parse_args(argv)
    from benchmarks.fixed_cost import six_card_spec
    from benchmarks.measure import in_fresh_process, median_range
    from raypipe.evaluate.manifest import git_revision

    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    work, config = six_card_spec("raypipe-calibration-")
    calls = []
    for rep in range(args.reps):
        for checkout in checkouts if rep % 2 == 0 else checkouts[::-1]:
            revision = (git_revision(checkout) or checkout.name)[:7]
            out = str(work / f"{checkout.name}-{rep}")
            found = in_fresh_process(RUNS, str(config), out, str(args.runs), cwd=checkout)
            calls += [{"revision": revision, "rep": rep, **c} for c in found]
            print(f"{revision} rep {rep}: {len(found)} calls", flush=True)
    firsts: dict[str, list[float]] = {}
    for c in calls:
        if c["run"] == 0:
            firsts.setdefault(c["item_id"], []).append(c["wall_ms"])
    reference = {item: statistics.median(times) for item, times in firsts.items()}
    worst: dict[tuple[str, int], list[float]] = {}
    for revision, rep, run in dict.fromkeys((c["revision"], c["rep"], c["run"]) for c in calls):
        ratios = [
            c["wall_ms"] / reference[c["item_id"]]
            for c in calls
            if (c["revision"], c["rep"], c["run"]) == (revision, rep, run)
        ]
        worst.setdefault((revision, run), []).append(max(ratios))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(
        json.dumps({"calls": calls, "reference_ms": reference}, indent=1)
    )
    lines = [
        "| revision | run in the driver | drivers "
        "| largest call / the card's first-run median, median [min, max] |",
        "| --- | --- | --- | --- |",
    ]
    for (revision, run), values in sorted(worst.items()):
        lines.append(f"| {revision} | {run + 1} | {len(values)} | {median_range(values, 2)} |")
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
