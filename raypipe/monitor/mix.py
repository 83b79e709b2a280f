"""A batch's slice mix from label-free features (black-box shift estimation) and a test of its shares.

A random forest learns the slice from the task's features on the reference, cross-fitted: the reference
is split at random into FOLDS folds and each fold's items are predicted by a forest that never saw them.
The batch is split at random into as many parts, and part k is predicted by fold k's forest; those
predictions estimate the mix.

The share test has classifiers of its own, fitted on the two halves of the reference. Half h's forest
predicts the other half and the whole batch: it saw neither, so under no shift the two sets of predictions
are exchangeable whatever its errors, and a permutation test of their shares (multivariate hypergeometric
draws of the batch's counts) is exact. The two halves' p-values are combined by Bonferroni (twice the
smaller), which holds under any dependence between them. Pooling the five folds' predictions into one
permutation test, as an earlier version did, is not exact: each fold's items train the other folds'
forests, so the folds are not exchangeable jointly, only one at a time; on idcard references of 40 that
test fired 6.2 % of the time against its 3.5 % share of the level (600 unshifted pairs, MONITORING.md).
(A still earlier version set out-of-fold predictions against a forest fitted on the whole reference;
their difference read as drift, and the mix estimate inherited the bias.)

The mix itself is the w >= 0, sum 1, that best solves C w = q (C[predicted, true] from the out-of-fold
predictions, q the batch's predicted shares; Lipton et al. 2018), with a covariance that carries both the
batch's multinomial noise and the confusion matrix's own sampling error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize

from raypipe.decide.stats import Z_95
from raypipe.monitor.drift import DriftTest, stepped_aside

FOLDS = 5
TEST_HALVES = 2  # the share test's own split of the reference (see the module's docstring)
TREES = 60
PERMUTATIONS = 4000  # the smallest p-value is 1/4001, far under the mix test's share of the level
SUM_TO_ONE_WEIGHT = 1e3  # the row that makes nnls's shares add up to 1 outweighs every other
# Below these the mix test steps aside: a forest learns nothing from fewer items, and a batch of a few items
# cannot move a share test at the level the test is given.
MIN_REFERENCE = 20
MIN_BATCH = 5
MIN_PER_BIN = 2


@dataclass(frozen=True)
class FeatureEncoder:
    """Features as numbers: continuous columns (nulls as the reference median), then one-hot categories."""

    continuous: list[str]
    categories: dict[str, list[str]]
    fill: dict[str, float]

    @classmethod
    def fit(cls, frame: pl.DataFrame, kinds: dict[str, str]) -> FeatureEncoder:
        continuous = [c for c, k in kinds.items() if k == "continuous" and c in frame.columns]
        categorical = [c for c, k in kinds.items() if k == "categorical" and c in frame.columns]
        fill = {c: float(frame[c].cast(pl.Float64).median() or 0.0) for c in continuous}
        categories = {
            c: sorted(frame[c].drop_nulls().cast(pl.String).unique().to_list()) for c in categorical
        }
        return cls(continuous, categories, fill)

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        parts = [
            frame[c].cast(pl.Float64).fill_null(self.fill[c]).fill_nan(self.fill[c]).to_numpy()
            for c in self.continuous
        ]
        for column, values in self.categories.items():
            text = frame[column].cast(pl.String)
            parts += [(text == v).fill_null(False).cast(pl.Float64).to_numpy() for v in values]
        return np.column_stack(parts) if parts else np.zeros((frame.height, 0))


@dataclass
class MixModel:
    """The cross-fitted slice classifiers of one attribute, their out-of-fold predictions and confusion."""

    attribute: str
    labels: list[str]
    encoder: FeatureEncoder
    classifiers: list[Any]  # one per fold, fitted without that fold
    confusion: np.ndarray  # [predicted, true]; each column sums to 1
    reference_shares: np.ndarray  # the reference's true shares
    true_counts: np.ndarray  # the reference's items per true label
    accuracy: float  # out-of-fold
    seed: int = 0
    # the share test's: a forest per half of the reference, and its predictions of the other half
    test_classifiers: list[Any] = field(default_factory=list)
    test_reference_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def folds(self) -> int:
        return len(self.classifiers)

    def predict(self, features: pl.DataFrame) -> np.ndarray:
        """[fold, predicted label] counts of the batch: its items split at random (seeded) into the folds,
        each part predicted by its fold's classifier."""
        matrix = self.encoder.transform(features)
        parts = np.random.default_rng(self.seed).permutation(np.arange(len(matrix)) % self.folds)
        counts = np.zeros((self.folds, len(self.labels)))
        for fold, classifier in enumerate(self.classifiers):
            rows = matrix[parts == fold]
            if len(rows):
                np.add.at(counts[fold], _predict(classifier, rows), 1.0)
        return counts

    def predict_whole(self, features: pl.DataFrame) -> np.ndarray:
        """[half, predicted label] counts of the whole batch under each of the share test's classifiers."""
        matrix = self.encoder.transform(features)
        counts = np.zeros((len(self.test_classifiers), len(self.labels)))
        for half, classifier in enumerate(self.test_classifiers):
            if len(matrix):
                np.add.at(counts[half], _predict(classifier, matrix), 1.0)
        return counts


@dataclass(frozen=True)
class MixEstimate:
    """A batch's estimated shares of each bin of the attribute, with their covariance."""

    attribute: str
    labels: list[str]
    shares: np.ndarray
    covariance: np.ndarray
    predicted: np.ndarray  # the classifier's raw shares in the batch
    reference: np.ndarray
    items: float = 1.0  # the batch's items the shares were estimated from

    def interval(self, k: int) -> tuple[float, float]:
        half = Z_95 * math.sqrt(max(self.covariance[k, k], 0.0))
        return max(0.0, self.shares[k] - half), min(1.0, self.shares[k] + half)

    def as_dict(self) -> dict[str, float]:
        return {label: float(s) for label, s in zip(self.labels, self.shares, strict=True)}

    def intervals(self) -> dict[str, tuple[float, float]]:
        return {label: self.interval(k) for k, label in enumerate(self.labels)}

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "bin": label,
                "reference": float(self.reference[k]),
                "estimated": float(self.shares[k]),
                "ci_low": self.interval(k)[0],
                "ci_high": self.interval(k)[1],
                "predicted": float(self.predicted[k]),
            }
            for k, label in enumerate(self.labels)
        ]


def _forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    # A forest, not gradient boosting: as accurate on these features and ~100x faster on a busy 2-core
    # machine, where boosting's OpenMP threads thrash (measured: 1.8 s against 412 s for 5 folds).
    return RandomForestClassifier(TREES, min_samples_leaf=2, n_jobs=1, random_state=seed)


def _predict(classifier: Any, rows: np.ndarray) -> np.ndarray:
    """Label indices (the forest knows only the labels its training folds held). The trees are summed here
    rather than through the forest's joblib dispatch, which cost two thirds of a check's time."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    votes = sum(tree.predict_proba(rows, check_input=False) for tree in classifier.estimators_)
    return classifier.classes_[np.asarray(votes).argmax(axis=1)].astype(int)


def mix_model_unfit(bins: pl.Series) -> str | None:
    """Why the mix test must step aside for this reference, or None."""
    counts = bins.drop_nulls().cast(pl.String).value_counts()
    kept = counts.filter(pl.col("count") >= MIN_PER_BIN)
    binned = bins.drop_nulls().len()
    if binned < MIN_REFERENCE:
        return f"the reference has {binned} items with a bin: the mix test needs {MIN_REFERENCE}"
    if kept.height < 2:
        return f"the reference has fewer than two bins with {MIN_PER_BIN} items or more"
    return None


def fit_mix_model(features: pl.DataFrame, bins: pl.Series, kinds: dict[str, str], seed: int = 0) -> MixModel:
    """Learn the slice (`bins`, one label per row of `features`) from the features, cross-fitted over
    random folds; rows without a bin are left out. Needs two bins or more."""
    keep = bins.is_not_null().to_numpy()
    features, bins = features.filter(keep), bins.filter(keep)
    labels = sorted(bins.cast(pl.String).unique().to_list())
    target = np.array([labels.index(b) for b in bins.cast(pl.String).to_list()])
    encoder = FeatureEncoder.fit(features, kinds)
    matrix = encoder.transform(features)
    k = len(labels)
    classifiers, out_of_fold, _ = _cross_fit(matrix, target, min(FOLDS, len(target)), seed, seed)
    # the share test's halves: a split of its own; each half's out-of-fold predictions counted per label
    test_classifiers, held_out, half_of = _cross_fit(matrix, target, TEST_HALVES, seed + 1, seed)
    test_counts = np.zeros((TEST_HALVES, k))
    np.add.at(test_counts, (half_of, held_out), 1.0)
    counts = np.bincount(target, minlength=k)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (out_of_fold, target), 1.0)
    confusion /= np.maximum(confusion.sum(axis=0, keepdims=True), 1.0)
    accuracy = float(np.mean(out_of_fold == target))
    return MixModel(
        bins.name.removeprefix("bin_"), labels, encoder, classifiers, confusion, counts / counts.sum(),
        counts.astype(float), accuracy, seed, test_classifiers, test_counts,
    )  # fmt: skip


def _cross_fit(
    matrix: np.ndarray, target: np.ndarray, folds: int, split_seed: int, seed: int
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """(a forest per fold fitted without it, each item's out-of-fold prediction, each item's fold). Plain
    random folds, not stratified: each fold must be a random sample of the reference, as a batch is."""
    from sklearn.model_selection import KFold

    out_of_fold, fold_of = np.zeros(len(target), dtype=int), np.zeros(len(target), dtype=int)
    classifiers = []
    for fold, (train, held) in enumerate(KFold(folds, shuffle=True, random_state=split_seed).split(matrix)):
        classifiers.append(_forest(seed).fit(matrix[train], target[train]))
        out_of_fold[held], fold_of[held] = _predict(classifiers[-1], matrix[held]), fold
    return classifiers, out_of_fold, fold_of


def estimate_mix(model: MixModel, predicted: np.ndarray) -> MixEstimate:
    """The mix w (w >= 0, sum 1) that best explains the batch's predicted shares q through C w = q.

    `predicted`: the batch's [fold, label] counts (or per-label counts). The covariance adds the confusion
    matrix's sampling error (each true label's column is a multinomial share of its reference items) to
    the batch's multinomial noise, both through C's inverse (delta method)."""
    counts = predicted.sum(axis=0) if predicted.ndim == 2 else predicted
    k, n = len(model.labels), max(float(counts.sum()), 1.0)
    q = counts / n
    system = np.vstack([model.confusion, np.full((1, k), SUM_TO_ONE_WEIGHT)])
    target = np.concatenate([q, [SUM_TO_ONE_WEIGHT]])
    shares, _ = optimize.nnls(system, target)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(k, 1.0 / k)
    inverse = np.linalg.pinv(model.confusion)
    # Add-one shares for the covariance only: a slice the batch never shows still gets an interval.
    smoothed = (counts + 1) / (n + k)
    spread = (np.diag(smoothed) - np.outer(smoothed, smoothed)) / n
    for j in range(k):
        column, items = model.confusion[:, j], max(model.true_counts[j], 1.0)
        spread = spread + shares[j] ** 2 * (np.diag(column) - np.outer(column, column)) / items
    covariance = inverse @ spread @ inverse.T
    return MixEstimate(model.attribute, model.labels, shares, covariance, q, model.reference_shares, n)


def share_z(reference: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Per label, the z of the batch's share against the reference's (pooled standard error); `batch` may
    hold many draws, one per row ([draw, label])."""
    n_reference, n_batch = reference.sum(axis=-1, keepdims=True), batch.sum(axis=-1, keepdims=True)
    pooled = (reference + batch) / (n_reference + n_batch)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_batch + 1 / n_reference))
    safe = np.where(se > 0, se, 1.0)
    return np.where(se > 0, (batch / n_batch - reference / n_reference) / safe, 0.0)


def stratified_share_test(
    reference: np.ndarray, batch: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float, int]:
    """(statistic, p-value, worst label) of a permutation test of per-label counts, permuted within each
    stratum: `reference` and `batch` are [stratum, label] counts. Each stratum's batch counts are redrawn
    from its pooled counts (multivariate hypergeometric), which is the permutation distribution exactly."""
    rng = np.random.default_rng(seed)
    totals = reference + batch
    observed_r, observed_b = reference.sum(axis=0), batch.sum(axis=0)
    z = share_z(observed_r, observed_b)
    statistic = float(np.abs(z).max())
    drawn = np.zeros((permutations, reference.shape[1]))
    for stratum, colors in enumerate(totals.astype(np.int64)):
        size = int(batch[stratum].sum())
        if size and size < colors.sum():
            drawn += rng.multivariate_hypergeometric(colors, size, size=permutations)
        elif size:
            drawn += colors
    null = np.abs(share_z(totals.sum(axis=0) - drawn, drawn)).max(axis=1)
    p_value = (1 + int(np.sum(null >= statistic - 1e-9))) / (permutations + 1)
    worst = int(np.argmax(np.abs(z)))
    return statistic, p_value, worst


def share_test(model: MixModel, whole: np.ndarray) -> DriftTest:
    """Does any predicted share differ from the reference's? `whole`: the batch's [half, label] counts
    (`MixModel.predict_whole`). For each half of the reference, its forest's predictions of the other half
    against its predictions of the batch, an exact permutation test; the smaller p-value, doubled."""
    n_batch = int(whole[0].sum()) if len(whole) else 0
    if n_batch < MIN_BATCH:
        why = f"the batch has {n_batch} items; the mix test needs {MIN_BATCH}"
        return stepped_aside(model.attribute, "mix", why)
    found = [
        stratified_share_test(model.test_reference_counts[h : h + 1], whole[h : h + 1], seed=model.seed + h)
        for h in range(len(whole))
    ]
    half = int(np.argmin([p for _, p, _ in found]))
    statistic, p_value, worst = found[half]
    reference, batch = model.test_reference_counts[half], whole[half]
    detail = (
        f"{model.labels[worst]}: predicted share {reference[worst] / reference.sum():.2f} -> "
        f"{batch[worst] / batch.sum():.2f} (out-of-fold accuracy {model.accuracy:.2f})"
    )
    p_value = min(1.0, len(found) * p_value)  # Bonferroni over the halves
    return DriftTest(model.attribute, "mix", "mix-share", statistic, p_value, detail)
