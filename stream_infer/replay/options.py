"""What a replay is asked to do: input, range, models, features, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FeatureSource = Literal["event", "snapshot", "redis", "scores"]


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay, through which models, with which features, into which file.

    ``offsets`` gives ``[start, end)`` per partition explicitly instead of a time range.
    ``jobs``: processes decoding a JSON-lines input with event features (1: this one; None:
    one per core for large files), see :mod:`stream_infer.replay.parallel`.
    ``labels``: a labels file for the window features (see :mod:`stream_infer.replay.windows`).
    """

    out: Path
    topic: str | None = None
    input: Path | None = None
    features: FeatureSource = "event"
    models: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, Path] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None
    output_topic: str | None = None
    scores_topic: str | None = None
    offsets: dict[int, tuple[int, int]] | None = None
    k: int = 100
    known_compromised: Path | None = None
    jobs: int | None = None
    labels: Path | None = None
