"""Record bytes into the join: score records (JSON, ``schemas/score.*``) and labels (the
configured format, ``schemas/label.*``), counting what each record did. Pure.

A record that does not decode is counted and skipped: the monitor never stops on one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from ..decode import JsonLabelDecoder, LabelDecoder
from ..errors import RecordError
from ..features.labels import Label
from ..records import ScoreRecord
from .join import JoinState

MAX_LABEL_BYTES = 1 << 20


class Feed:
    """Bytes of scores and labels into ``state``; :attr:`counts` by (kind, outcome).

    Outcomes: ``applied`` (the state changed), ``unchanged`` (a duplicate, a score held
    already or of a dropped day, a label that lost), ``undecodable``, and for scores
    ``outside`` (event time outside ``[from_ms, to_ms)``, when given).
    """

    def __init__(self, state: JoinState, labels: LabelDecoder | None = None, *,
                 from_ms: int | None = None, to_ms: int | None = None,
                 on_score: Callable[[ScoreRecord], None] | None = None) -> None:
        self.state = state
        self.on_score = on_score
        """Also given every score of the range (the report's feature vectors, for drift)."""
        self._score = msgspec.json.Decoder(ScoreRecord).decode
        self._label = labels or JsonLabelDecoder(MAX_LABEL_BYTES)
        self.from_ms, self.to_ms = from_ms, to_ms
        self.counts: Counter[tuple[str, str]] = Counter()

    def score(self, value: bytes | None) -> None:
        try:
            record = self._score(value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.counts["scores", "undecodable"] += 1
            return
        if (self.from_ms is not None and record.event_time < self.from_ms) or (
                self.to_ms is not None and record.event_time >= self.to_ms):
            self.counts["scores", "outside"] += 1
            return
        applied = self.state.add_score(record)
        self.counts["scores", "applied" if applied else "unchanged"] += 1
        if self.on_score is not None:
            self.on_score(record)

    def label(self, value: bytes | None) -> None:
        try:
            wire = self._label(value)
        except RecordError:
            self.counts["labels", "undecodable"] += 1
            return
        applied = self.state.add_label(Label.of(wire))
        self.counts["labels", "applied" if applied else "unchanged"] += 1

    def read(self, kind: str) -> int:
        """Records of ``kind`` (``scores``, ``labels``) read so far."""
        return sum(n for (k, _), n in self.counts.items() if k == kind)


def lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of a JSON-lines file."""
    with path.open("rb") as file:
        for line in file:
            if line.strip():
                yield line


def feed_files(feed: Feed, scores: Iterable[Path], labels: Iterable[Path]) -> None:
    """Every line of the score files, then of the label files, into ``feed``."""
    for path in scores:
        for line in lines(path):
            feed.score(line)
    for path in labels:
        for line in lines(path):
            feed.label(line)

