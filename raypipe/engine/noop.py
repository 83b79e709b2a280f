"""Zero-cost stages: they measure what the engine itself costs per stage call (benchmarks/scale.py).

`Tag(value=k)` returns a tiny array that depends on its input and on k, so that every choice yields a
distinct output and no call is merged away as identical input: each choice costs one real stage call.
`Mark(value=k)` returns a copy of its input image with its first pixel set to k: what moving card-sized
images between stages costs, with a distinct output per choice too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from raypipe.spec.stage import Resources, Stage


class Tag(Stage):
    """Returns 8 bytes: the input's first bytes mixed with `value` (no model, no copy of the input)."""

    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=64)

    def __init__(self, value: int = 0):
        self.value = value

    def __call__(self, item: Any) -> np.ndarray:
        head = np.asarray(item).ravel()[:8].astype(np.uint64)
        out = np.zeros(8, dtype=np.uint64)
        out[: head.size] = head
        return out * np.uint64(31) + np.uint64(self.value + 1)


class Mark(Stage):
    """Returns a copy of the input array with its first value set to `value`: an image stage that costs one
    copy (about 0.1 ms for a megapixel), so the engine's cost of carrying images shows."""

    resources: ClassVar[Resources] = Resources(num_cpus=0.25, batch_size=8)

    def __init__(self, value: int = 0):
        self.value = value

    def __call__(self, item: Any) -> np.ndarray:
        out = np.array(item, copy=True)
        out.flat[0] = self.value
        return out
