"""Datasets for raypipe: loaders of every source into one schema, and the synthetic ID-card generator."""

from raypipe.data.generator import generate_dataset, write_dataset
from raypipe.data.loaders import load_dataset
from raypipe.data.profiles import PROFILES
from raypipe.data.schema import CANONICAL_SCHEMA, SLICE_ATTRIBUTES, TRUTH_FIELDS, dataset_fingerprint
from raypipe.data.truth import derive_truth

__all__ = [
    "CANONICAL_SCHEMA",
    "PROFILES",
    "SLICE_ATTRIBUTES",
    "TRUTH_FIELDS",
    "dataset_fingerprint",
    "derive_truth",
    "generate_dataset",
    "load_dataset",
    "write_dataset",
]
