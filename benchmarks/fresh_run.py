"""A small calibrated run from a fresh process, as a user types it: `raypipe run SPEC --no-cache`, its wall
time, its streaming part (the manifest's `wall_seconds`) and the rest (the issue's fixed cost: imports,
Ray's start and stop, planning, calibration, result files).

    python benchmarks/fresh_run.py [--checkout PATH ...] [--reps 2] [--uncalibrated]
        [--out benchmarks/results/fixed-cost] [--name fresh-run]

The spec is `benchmarks/fixed_cost.py`'s calibrated idcard case: 6 mixed cards x 2 configurations (none or
the int8 ONNX orientation CNN, Tesseract, layout). Each `--checkout` (a git worktree of another revision;
by default this one) runs as `python -m raypipe.cli` with the checkout first on PYTHONPATH, the
checkouts alternating rep by rep, each process starting and stopping its own embedded Ray. With
`--uncalibrated`, each rep also runs every checkout with `--no-calibrate` (a mode column says which).
Writes NAME.json and NAME.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))


def one_run(checkout: Path, config: Path, out: Path, calibrate: bool = True) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    env["PYTHONPATH"] = str(checkout)
    cmd = [sys.executable, "-m", "raypipe.cli", "run", str(config), "--out", str(out), "--no-cache"]
    cmd += [] if calibrate else ["--no-calibrate"]
    started = time.perf_counter()
    subprocess.run(cmd, cwd=config.parent, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    streaming = float(json.loads((out / "manifest.json").read_text())["wall_seconds"])
    return {"wall_s": wall, "streaming_s": streaming, "rest_s": wall - streaming}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout to run (repeatable)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--uncalibrated", action="store_true", help="also run each with --no-calibrate")
    parser.add_argument("--out", default="benchmarks/results/fixed-cost")
    parser.add_argument("--name", default="fresh-run", help="the result files' name")
    args = parser.parse_args(argv)
    from benchmarks.fixed_cost import six_card_spec
    from benchmarks.measure import median_range
    from raypipe.evaluate.manifest import git_revision

    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    work, config = six_card_spec("raypipe-fresh-")
    modes = ["calibrated", "uncalibrated"] if args.uncalibrated else ["calibrated"]
    rows = []
    for rep in range(args.reps):
        for mode in modes:
            for checkout in checkouts if rep % 2 == 0 else checkouts[::-1]:
                run_dir = work / f"{checkout.name}-{mode}-{rep}"
                found = one_run(checkout, config, run_dir, mode == "calibrated")
                revision = (git_revision(checkout) or checkout.name)[:7]
                rows.append({"revision": revision, "mode": mode, "rep": rep, **found})
                times = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in found.items())
                print(f"{revision} {mode} rep {rep}: {times}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"rows": rows}, indent=1))
    lines = [
        "| revision | mode | runs | wall s, median [min, max] | streaming s, median "
        "| rest s, median [min, max] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, mode in dict.fromkeys((r["revision"], r.get("mode", "calibrated")) for r in rows):
        mine = [r for r in rows if r["revision"] == name and r.get("mode", "calibrated") == mode]
        wall, rest = [r["wall_s"] for r in mine], [r["rest_s"] for r in mine]
        lines.append(
            f"| {name} | {mode} | {len(mine)} | {median_range(wall)} | "
            f"{statistics.median(r['streaming_s'] for r in mine):.1f} | {median_range(rest)} |"
        )
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
