"""What the benchmarks time with: the median of repeated runs after one that warms the
caches, as a store or a page in use would be warm."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Seconds `fn` takes: the median of `repeats` runs after one that warms the cache."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
