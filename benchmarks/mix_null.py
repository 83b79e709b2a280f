"""The mix test alone under the null, by simulation: reference and batch are disjoint, uniformly random
subsets of the idcard pool's standard cards (no slice-stratified drawing), so they are exchangeable by
construction and the test must fire at most at its level. Needs the pool benchmarks/monitoring.py built.

    .venv/bin/python benchmarks/mix_null.py --pool runs/mon-idcard-700 --reference 40 --batch 20 --draws 300
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from raypipe.monitor import drift
from raypipe.monitor.check import bin_column
from raypipe.monitor.mix import fit_mix_model, share_test
from raypipe.monitor.reference import load_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="runs/mon-idcard-700", help="benchmarks/monitoring.py's --out")
    parser.add_argument("--reference", type=int, default=40)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--draws", type=int, default=300)
    args = parser.parse_args()
    reference = load_reference(f"{args.pool}/idcard-profile")
    features = reference.features.filter(pl.col("feature_error").is_null())
    ids = features["item_id"].cast(pl.String).to_numpy().astype(str)
    standard = np.flatnonzero(~np.char.startswith(ids, "holdout"))
    column, level = bin_column(reference.attribute), drift.GROUP_WEIGHTS["mix"] * drift.FAMILY_ALPHA
    p_values = []
    for draw in range(args.draws):
        picked = np.random.default_rng(1000 + draw).permutation(standard)[: args.reference + args.batch]
        ref, batch = features[picked[: args.reference]], features[picked[args.reference :]]
        model = fit_mix_model(ref, ref[column], reference.task.features, seed=draw)
        p_values.append(share_test(model, model.predict_whole(batch)).p_value)
    found = np.array(p_values)
    print(
        f"reference {args.reference}, batch {args.batch}, {args.draws} draws: "
        f"fired at its share of the level "
        f"({level:.3f}) {np.mean(found <= level):.1%}, at 0.05 {np.mean(found <= 0.05):.1%}, "
        f"at 0.01 {np.mean(found <= 0.01):.1%}"
    )


if __name__ == "__main__":
    main()
