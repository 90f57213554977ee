"""Small in-process statistics: a bounded latency reservoir."""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np


class Reservoir:
    """A uniform sample of at most ``size`` values (Vitter's algorithm R); bounded memory."""

    def __init__(self, size: int = 50_000, seed: int = 0) -> None:
        self.size = size
        self.count = 0
        self._values: list[float] = []
        self._random = random.Random(seed)

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.count += 1
            if len(self._values) < self.size:
                self._values.append(value)
            else:
                slot = self._random.randrange(self.count)
                if slot < self.size:
                    self._values[slot] = value

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the sample, or None when empty."""
        return float(np.percentile(self._values, q)) if self._values else None
