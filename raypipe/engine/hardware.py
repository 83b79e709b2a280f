"""What machine a measurement was taken on: latencies are only comparable on the same hardware."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import cache


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict[str, object]:
    """The CPU model, the CPUs this process may use, the machine type and the OS."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"cpu": cpu_model(), "cpus": usable, "machine": platform.machine(), "system": platform.system()}


@cache
def hardware_id() -> str:
    """A short stable id of `fingerprint()`."""
    blob = json.dumps(fingerprint(), sort_keys=True).encode()
    return hashlib.blake2b(blob, digest_size=6).hexdigest()
