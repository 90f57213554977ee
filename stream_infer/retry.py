"""Retry timing as a strategy object: testable without sleeping."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, capped: ``compute(failures) -> seconds``."""

    base_s: float = 0.2
    cap_s: float = 5.0
    jitter: bool = True

    def compute(self, failures: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** max(failures - 1, 0))
        return random.uniform(ceiling / 2, ceiling) if self.jitter else ceiling
