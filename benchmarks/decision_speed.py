"""The decision rule's time on a large finished run: `decide.decision.from_arrays` over synthetic (items, K)
arrays (a bounded objective whose means are spread over K configurations, latency, a p95 SLA), each
checkout in a fresh process, the checkouts alternating.

    python benchmarks/decision_speed.py [--checkout PATH ...] [--items 5000] [--configs 525] [--reps 2]
        [--out benchmarks/results/scale] [--name decision-speed]

Each `--checkout` (a git worktree of another revision; by default this one) runs with the checkout first on
PYTHONPATH. Writes NAME.json and NAME.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

ONE_RUN = """
import json, sys, time
import numpy as np
from raypipe.decide import decision
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

n, k = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
means = np.linspace(0.5, 0.9, k)
scores = (rng.random((n, k)) < means).astype(float)
latency = rng.gamma(4.0, 50.0, size=(n, k)) * np.linspace(1.0, 3.0, k)
objective = Metric("accuracy", "a rate")
started = time.perf_counter()
picked = decision.from_arrays(
    [f"c{i}" for i in range(k)], objective, SLASpec(p95_latency_ms=400.0), {"accuracy": objective},
    scores, latency, {},
)
print(json.dumps({"decide_s": time.perf_counter() - started, "status": picked.status}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout to run (repeatable)")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--configs", type=int, default=525)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/scale")
    parser.add_argument("--name", default="decision-speed")
    args = parser.parse_args(argv)
    from benchmarks.measure import median_range
    from raypipe.evaluate.manifest import git_revision

    checkouts = [c.resolve() for c in args.checkout or [REPO]]
    rows = []
    for rep in range(args.reps):
        for checkout in checkouts if rep % 2 == 0 else checkouts[::-1]:
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            # from the checkout's directory: `python -c` puts its working directory first on the path
            done = subprocess.run(
                [sys.executable, "-c", ONE_RUN, str(args.items), str(args.configs)],
                env=env, cwd=checkout, capture_output=True, text=True, check=True,
            )  # fmt: skip
            found = json.loads(done.stdout.strip().splitlines()[-1])
            revision = (git_revision(checkout) or checkout.name)[:7]
            rows.append({"revision": revision, "rep": rep, **found})
            print(f"{revision} rep {rep}: {found['decide_s']:.1f} s ({found['status']})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"items": args.items, "configs": args.configs}
    (out / f"{args.name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [
        f"{args.items} items x {args.configs} configurations",
        "",
        "| revision | runs | decision s, median [min, max] | status |",
        "| --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["revision"] for r in rows):
        mine = [r for r in rows if r["revision"] == name]
        times = [r["decide_s"] for r in mine]
        lines.append(f"| {name} | {len(mine)} | {median_range(times)} | {mine[0]['status']} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
