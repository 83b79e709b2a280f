"""The decision rule (raypipe.decide.decision) on simulated data: its guarantee holds by repeated fresh draws,
undecided runs name the best point estimate, and the SLA is judged on bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raypipe.decide.decision import DecisionSettings, Evidence, decide, from_arrays, p95_interval
from raypipe.decide.recommend import parse_mix
from raypipe.errors import ConfigError, RaypipeError
from raypipe.spec.schema import SLASpec
from raypipe.spec.task import Metric

ACCURACY = Metric("accuracy", "right or wrong")


def correlated_scores(rng: np.random.Generator, n: int, means: list[float]) -> np.ndarray:
    """A shared difficulty per item: configurations agree on most items, as pipelines sharing stages do."""
    u = rng.random((n, 1))
    noise = rng.random((n, len(means)))
    mixed = np.where(rng.random((n, len(means))) < 0.7, u, noise)  # 70 % of the time the shared draw decides
    return (mixed < np.array(means)).astype(float)


def test_a_certified_pick_misses_the_best_by_more_than_epsilon_at_most_at_rate_delta():
    """400 fresh draws of 150 items from five configurations whose best two are 0.03 apart (epsilon 0.02):
    a certified pick more than epsilon below the best must be at most delta (0.1 here) of the draws."""
    rng = np.random.default_rng(7)
    means = [0.80, 0.77, 0.72, 0.60, 0.40]
    settings = DecisionSettings(epsilon=0.02, delta=0.1)
    wrong = certified = 0
    for _ in range(400):
        scores = correlated_scores(rng, 150, means)
        d = from_arrays(list("abcde"), ACCURACY, SLASpec(), {}, scores, np.ones_like(scores), {}, settings)
        if d.status == "certified":
            certified += 1
            wrong += means[0] - means["abcde".index(d.config_id)] > settings.epsilon
    assert certified > 0  # the setting can certify at all
    assert wrong / 400 <= settings.delta, (wrong, certified)


def test_the_guarantee_holds_when_the_data_could_fool_a_point_estimate():
    """Two configurations 0.05 apart, epsilon 0.02, 40 items: a point estimate often prefers the worse one;
    the rule must almost never certify it."""
    rng = np.random.default_rng(11)
    means = [0.70, 0.65]
    settings = DecisionSettings(epsilon=0.02, delta=0.05)
    wrong = argmax_wrong = 0
    for _ in range(500):
        scores = (rng.random((40, 2)) < np.array(means)).astype(float)
        argmax_wrong += scores[:, 1].mean() > scores[:, 0].mean()
        d = from_arrays(["a", "b"], ACCURACY, SLASpec(), {}, scores, np.ones_like(scores), {}, settings)
        wrong += d.status == "certified" and d.config_id == "b"
    assert argmax_wrong > 100  # the naive pick is often wrong here
    assert wrong / 500 <= settings.delta


def test_an_undecided_run_names_the_best_point_estimate_never_a_faster_candidate():
    rng = np.random.default_rng(3)
    scores = (rng.random((24, 3)) < np.array([0.9, 0.8, 0.85])).astype(float)
    latency = np.column_stack([np.full(24, 900.0), np.full(24, 10.0), np.full(24, 50.0)])
    d = from_arrays(["slow", "fast", "mid"], ACCURACY, SLASpec(), {}, scores, latency, {})
    assert d.status == "undecided"
    best = max(d.candidates, key=lambda c: scores[:, ["slow", "fast", "mid"].index(c)].mean())
    assert d.config_id == best
    assert d.items_needed is not None and d.items_needed > 0
    assert "undecided after 24 items" in d.headline()


def test_identical_configurations_are_certified_after_about_log_of_one_over_the_level_over_epsilon_items():
    scores = np.tile((np.arange(600) % 5 < 4).astype(float)[:, None], (1, 2))
    latency = np.column_stack([np.full(600, 5.0), np.full(600, 100.0)])
    settings = DecisionSettings(epsilon=0.05, delta=0.05)
    early = from_arrays(["cheap", "dear"], ACCURACY, SLASpec(), {}, scores[:40], latency[:40], {}, settings)
    assert early.status == "undecided"
    late = from_arrays(["cheap", "dear"], ACCURACY, SLASpec(), {}, scores, latency, {}, settings)
    assert late.status == "certified" and set(late.certified) == {"cheap", "dear"}
    assert late.config_id == "cheap"  # the latency evidence separates them: the cheaper one wins


def test_the_higher_objective_wins_where_latency_evidence_does_not_separate():
    rng = np.random.default_rng(5)
    n = 2000
    scores = np.column_stack([np.ones(n), (rng.random(n) < 0.995).astype(float)])
    latency = rng.normal(100, 10, (n, 2))  # the same latency distribution: no evidence either is cheaper
    d = from_arrays(["better", "other"], ACCURACY, SLASpec(), {}, scores, latency, {},
                    DecisionSettings(epsilon=0.02))  # fmt: skip
    assert d.status == "certified" and d.config_id == "better"


def test_the_p95_bound_is_judged_on_bounds_not_the_point_estimate():
    """24 items all under the bound cannot show p95 <= bound distribution-free (0.95^24 = 0.29 > any level):
    the SLA is undecided, and so is the pick; 400 items can."""
    sla = SLASpec(p95_latency_ms=2500)
    few = np.full((24, 1), 2490.0)
    d = from_arrays(["only"], ACCURACY, sla, {}, np.ones((24, 1)), few, {})
    assert d.status == "undecided" and d.sla_status["only"] == "undecided" and "p95" in d.reason
    d = from_arrays(["only"], ACCURACY, sla, {}, np.ones((400, 1)), np.full((400, 1), 2490.0), {})
    assert d.status == "certified" and d.sla_status["only"] == "meets"
    over = from_arrays(["only"], ACCURACY, sla, {}, np.ones((200, 1)), np.full((200, 1), 2600.0), {})
    assert over.status == "no_feasible" and over.sla_status["only"] == "misses"


def test_a_configuration_is_excluded_only_below_a_rival_that_confidently_meets_the_sla():
    n = 300
    scores = np.column_stack([np.ones(n), np.zeros(n)])
    latency = np.column_stack([np.full(n, 3000.0), np.full(n, 10.0)])  # the better one misses the SLA
    d = from_arrays(["accurate", "fast"], ACCURACY, SLASpec(p95_latency_ms=100), {}, scores, latency, {})
    assert "accurate" in d.excluded and "fast" not in d.excluded
    assert d.status == "certified" and d.config_id == "fast"


def test_a_metric_bound_excludes_with_confidence():
    n = 200
    scores = np.column_stack([np.full(n, 1.0), (np.arange(n) % 10 == 0).astype(float)])
    sla = SLASpec(min={"accuracy": 0.5})
    d = from_arrays(["good", "bad"], ACCURACY, sla, {"accuracy": ACCURACY}, scores, np.ones_like(scores),
                    {"accuracy": scores})  # fmt: skip
    assert d.sla_status == {"good": "meets", "bad": "misses"}
    assert "misses accuracy >= 0.5" in d.excluded["bad"]


def test_weighted_evidence_estimates_the_mix_mean():
    rng = np.random.default_rng(2)
    n = 4000
    rotated = rng.random(n) < 0.5
    scores = np.column_stack([np.where(rotated, 0.2, 0.9), np.where(rotated, 0.8, 0.7)])
    scores = (rng.random((n, 2)) < scores).astype(float)
    weights = np.where(rotated, 0.9 / 0.5, 0.1 / 0.5)  # production is 90 % rotated
    e = Evidence(["plain", "turns"], ACCURACY, SLASpec(), {}, scale=weights.max())
    e.add(scores, np.ones_like(scores), {}, weights)
    assert e.means() == pytest.approx([0.27, 0.79], abs=0.03)
    assert decide(e).config_id == "turns"


@pytest.mark.parametrize("n", [20, 60, 200])
def test_the_p95_interval_covers_the_true_p95_at_its_level(n):
    rng = np.random.default_rng(n)
    truth = -math.log(0.05)  # p95 of Exp(1)
    covered = sum(
        low <= truth <= high for _, low, high in (p95_interval(rng.exponential(1, n)) for _ in range(1000))
    )
    assert covered / 1000 >= 0.93


def test_parse_mix_joint_cells_and_one_attribute():
    assert parse_mix(["profile=rotated:0.3"]) == ("profile", {"rotated": 0.3})
    attribute, weights = parse_mix(["profile=rotated&rotation=180:0.3", "profile=clean&rotation=0:0.5"])
    assert attribute == "profile&rotation" and weights == {"rotated&180": 0.3, "clean&0": 0.5}
    with pytest.raises(RaypipeError, match="every entry names the same attributes"):
        parse_mix(["profile=rotated:0.3", "blur=(0, 1]:0.2"])
    with pytest.raises(RaypipeError, match="write it as ATTRIBUTE=BIN:WEIGHT"):
        parse_mix(["profile:0.3"])


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"epsilon": 0}, "decision.epsilon"),
        ({"epsilon": 1.2}, "decision.epsilon"),
        ({"delta": 0.5}, "decision.delta"),
    ],
)
def test_epsilon_and_delta_outside_their_ranges_are_refused_with_their_yaml_path(decision, message):
    import yaml

    from raypipe.spec.validation import parse_spec

    raw = yaml.safe_load(open("configs/digits.yaml")) | {"decision": decision}
    with pytest.raises(ConfigError, match=message):
        parse_spec(raw)


def test_the_items_needed_projection_is_roughly_right():
    """After `items_needed` more items from the same distribution, the rule decides in most fresh draws."""
    rng = np.random.default_rng(9)
    means = [0.85, 0.75]
    first = correlated_scores(rng, 30, means)
    d = from_arrays(["a", "b"], ACCURACY, SLASpec(), {}, first, np.ones_like(first), {})
    assert d.status == "undecided" and d.items_needed
    decided = 0
    for _ in range(50):
        more = correlated_scores(rng, d.items_needed, means)
        scores = np.vstack([first, more])
        decided += from_arrays(
            ["a", "b"], ACCURACY, SLASpec(), {}, scores, np.ones_like(scores), {}
        ).status == ("certified")
    assert decided >= 25


def test_items_fed_in_blocks_give_the_same_evidence_as_all_at_once(monkeypatch):
    """A large run feeds the pairwise tests in blocks (their item x K x K differences would take gigabytes
    at once); the tests advance item by item, so the blocks must not change a single p-value."""
    from raypipe.decide import decision

    rng = np.random.default_rng(5)
    scores = correlated_scores(rng, 60, [0.8, 0.78, 0.7, 0.5])
    latency = rng.random(scores.shape) * 100
    whole = Evidence(list("abcd"), ACCURACY, SLASpec(p95_latency_ms=90), {})
    whole.add(scores, latency, {})
    monkeypatch.setattr(decision, "PAIR_CELLS_AT_ONCE", 16 * 7)  # 7 items a block, the last one shorter
    blocks = Evidence(list("abcd"), ACCURACY, SLASpec(p95_latency_ms=90), {})
    blocks.add(scores, latency, {})
    for name in ("far", "near"):
        a, b = getattr(whole, name), getattr(blocks, name)
        assert np.array_equal(a.min_p, b.min_p) and np.array_equal(a.log_wealth, b.log_wealth)
        assert a.min_p.min() < 0.5  # the evidence is not trivially empty
    for a, b in zip(whole.tests, blocks.tests, strict=True):  # the p95 SLA's tests, fed in the same blocks
        assert np.array_equal(a.meets.min_p, b.meets.min_p) and np.array_equal(a.misses.min_p, b.misses.min_p)
    assert np.allclose(whole.means(), blocks.means(), rtol=1e-12)
    assert decide(whole).to_json() == decide(blocks).to_json()


def test_item_arrays_from_a_lazy_frame_match_the_rows():
    """The (items, K) arrays the rule and the percentiles read, from a lazy frame in streaming batches: every
    row lands in its cell, missing rows and nulls are NaN, items and configurations outside are left out."""
    import polars as pl

    from raypipe.decide.decision import item_arrays

    rows = pl.DataFrame(
        {
            "item_id": ["i1", "i1", "i2", "i3", "i3", "other"],
            "config_id": ["a", "b", "a", "b", "c", "a"],
            "accuracy": [1.0, 0.0, None, 1.0, 1.0, 1.0],
        }
    )
    found = item_arrays(rows.lazy(), ["a", "b"], ["accuracy"], order=["i3", "i1", "i2"])["accuracy"]
    expected = np.array([[np.nan, 1.0], [1.0, 0.0], [np.nan, np.nan]])
    assert np.array_equal(found, expected, equal_nan=True)
    # without an order: every item of the rows, in the rule's seeded order
    assert item_arrays(rows, ["a", "b", "c"], ["accuracy"])["accuracy"].shape == (4, 3)


def test_percentiles_per_configuration_match_polars_quantiles():
    import polars as pl

    from raypipe.decide.results import percentile_table

    rng = np.random.default_rng(2)
    n = 97
    rows = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)] * 2,
            "config_id": ["a"] * n + ["b"] * n,
            "latency_total_ms": np.concatenate([rng.exponential(50, n), rng.exponential(80, n)]),
        }
    ).with_columns(  # a few nulls: left out, as Polars leaves them out
        pl.when(pl.int_range(pl.len()) % 13 == 0).then(None).otherwise(pl.col("latency_total_ms"))
        .alias("latency_total_ms")
    )  # fmt: skip
    wanted = {"latency_total_ms": [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)]}
    found = percentile_table(rows.lazy(), ["a", "b", "none"], wanted)
    for config in ("a", "b"):
        part = rows.filter(pl.col("config_id") == config)["latency_total_ms"]
        row = found.filter(pl.col("config_id") == config).row(0, named=True)
        for name, q in wanted["latency_total_ms"]:
            assert row[name] == pytest.approx(part.quantile(q, "linear"), rel=1e-12)
    assert found.filter(pl.col("config_id") == "none")["p95"].to_list() == [None]  # no rows: null, not NaN


@pytest.mark.parametrize("certified", [False, True])
def test_a_run_read_in_bounded_blocks_decides_and_reports_exactly_as_one_read_at_once(monkeypatch, certified):
    """A finished run's rule, percentiles and p95 intervals read (items, K) arrays a block of items or of
    configurations at a time, so the driver's memory is bounded whatever the run's size (BENCHMARKS.md
    section 3). With a budget of 100 cells, no read may hold more, and every figure must be the same as
    with the whole run read at once, and as the rule on in-memory arrays (`from_arrays`). Two runs: one
    undecided on a p95 bound, one certified where the cheaper pick (b, 0.011 below a, 30 % faster on every
    item) is shown faster only by the paired per-item comparison: its p95 interval overlaps a's."""
    import polars as pl

    from raypipe.decide import decision, results

    rng = np.random.default_rng(9)
    ids, n = ["a", "b", "c", "d", "e"], 100 if certified else 37
    scores = correlated_scores(rng, n, [0.9, 0.9 if certified else 0.88, 0.7, 0.6, 0.3])
    if certified:
        scores[:, 1] = scores[:, 0]
        scores[:2, 1] = 0.0
    scale = [30.0 if certified else 60.0, 20.0, 50.0, 40.0, 10.0]
    latency = rng.exponential(1.0, (n, len(ids))) * np.array(scale)
    if certified:
        latency[:, 1] = 0.7 * latency[:, 0]
    latency[rng.random((n, len(ids))) < 0.05] = np.nan  # a few failed timings
    rows = pl.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(n) for _ in ids],
            "config_id": ids * n,
            "accuracy": scores.ravel(),
            "latency_total_ms": latency.ravel(),
        }
    ).filter(pl.int_range(pl.len()) % 17 != 5)  # some (item, configuration) rows missing
    sla = SLASpec() if certified else SLASpec(p95_latency_ms=150)
    settings = DecisionSettings(0.1, 0.2) if certified else DecisionSettings()
    dropped = ["e"]  # a configuration a search dropped: its p95 interval is read from the rows

    def everything() -> tuple[dict, pl.DataFrame, pl.DataFrame]:
        d, evidence = decision.decide_items(rows.lazy(), ids[:-1], ACCURACY, sla, {}, settings)
        wanted = {"latency_total_ms": [("p50", 0.5), ("p95", 0.95)]}
        table = results.percentile_table(rows.lazy(), ids, wanted)
        assert evidence.latency == []  # the rule keeps no (items, K) latency of its own
        return d.to_json(), table, results.p95_intervals(rows.lazy(), ids, evidence)

    whole = everything()
    order = decision.item_order(rows["item_id"].to_list())
    live = ids[: -len(dropped)]
    arrays = decision.item_arrays(rows, live, ["accuracy", "latency_total_ms"], order)
    in_memory = from_arrays(
        live, ACCURACY, sla, {}, arrays["accuracy"], arrays["latency_total_ms"], {}, settings
    )
    assert in_memory.to_json() == whole[0]
    assert (whole[0]["status"], whole[0]["config_id"]) == (
        ("certified", "b") if certified else ("undecided", "b")
    )
    if certified:  # b wins only on the paired comparison: a lower objective, overlapping p95 intervals
        means = rows.group_by("config_id").agg(pl.col("accuracy").mean()).sort("config_id")["accuracy"]
        low, high = (
            dict(zip(whole[2]["config_id"], whole[2][c], strict=True)) for c in ("p95_ci_low", "p95_ci_high")
        )
        assert means[1] < means[0] and high["b"] > low["a"]
    held: list[int] = []
    reader = decision.item_arrays

    def bounded(items, config_ids, columns, order=None):
        out = reader(items, config_ids, columns, order)
        held.append(sum(a.size for a in out.values()))
        return out

    monkeypatch.setattr(decision, "ARRAY_CELLS_AT_ONCE", 100)
    monkeypatch.setattr(decision, "item_arrays", bounded)
    monkeypatch.setattr(results, "item_arrays", bounded)
    blocks = everything()
    assert max(held) <= 100 and len(held) >= 10  # many reads, none above the budget
    most = rows.filter(pl.col("config_id").is_in(live)).group_by("config_id").len()["len"].max()
    assert blocks[0] == whole[0] and whole[0]["n_items"] == most > 30
    assert blocks[1].equals(whole[1]) and blocks[2].equals(whole[2])
    assert set(whole[2]["config_id"]) == set(ids)  # the dropped one has its interval too
