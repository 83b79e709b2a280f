"""Benchmarks of raypipe against the peers it replaces, measured side by side in one process."""
