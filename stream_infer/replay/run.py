"""``stream-infer replay``: history through the live pipeline code, into a results file.

Input is a topic, each partition read to its end of log at the time of reading (so the job
always ends; :mod:`.sources` says exactly what ``--from``/``--to`` select), or a JSON-lines /
Parquet file of events, read in chunks. Every record goes through the live service's stages:
its decoder and validation (a record it refuses is dead-lettered with the same reason), its
enricher and store, the champion and the challengers. Every record read is accounted for:
scored, dead-lettered (with its reason), or outside the time range; the sum is checked
against the records the reader took from each partition, and a replay whose figures do not
reconcile fails (:class:`~stream_infer.errors.AccountingError`).

Replay never joins a consumer group and never commits. It writes no record anywhere unless
given an output topic, which may not be one of the live service's topics.

The results file (Parquet) holds one row per scored event in input order (topic, partition,
offset): ids, event time, label, each model's score and the feature vector used. The same
inputs and models give a byte-identical file; its sha256 is the run's digest.

Window features (``[windows.*]``) the models read are computed in memory, with the labels of
``--labels`` arriving at their label time, as ``features backfill`` computes them
(:mod:`.windows`); the labels file's refused lines are dead letters too, before the events'.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from ..config import Settings
from ..drift import Profile
from ..errors import ConfigError
from ..offline import backtest
from ..offline.tables import read_table
from ..pipeline import Pipeline
from ..records import Output, parse_time_ms
from ..registry import read_manifest, resolve
from ..score import Scores
from .collect import (
    DeadLetterFile,
    Decoded,
    ReplayCounts,
    Results,
    decode_chunk,
    write_results,
)
from .options import ReplayOptions
from .sources import UNKNOWN_TIME, Chunk, ReplayInput, open_input
from .windows import LabelsFile, ReplayWindows
from .wiring import logged_vectors, replay_pipeline

if TYPE_CHECKING:
    from ..adapters.kafka import PartitionRead
    from .parallel import DecodePool


def replay(chunks: Iterable[Chunk], pipeline: Pipeline, *, counts: ReplayCounts | None = None,
           send: Callable[[list[Output]], None] | None = None) -> tuple[Results, ReplayCounts]:
    """Every chunk through the pipeline's stages; ``send`` (if given) receives the champion's
    alerts per chunk.

    Each record goes through the pipeline's first stage (a :class:`RecordError` dead-letters
    it with its reason, as live; a store error fails the replay) and every model scores it.
    The models run on one worker thread, so a chunk's scoring overlaps the decoding of the
    next one; results are gathered in input order.
    """
    counts = counts or ReplayCounts()
    return score(decoded_chunks(chunks, pipeline, counts, keep_events=send is not None),
                 pipeline, counts=counts, send=send)


def decoded_chunks(chunks: Iterable[Chunk], pipeline: Pipeline, counts: ReplayCounts, *,
                   keep_events: bool = False) -> Iterator[Decoded]:
    """Each chunk through the pipeline's first stage in this process, counted as consumed
    and dead-lettered."""
    for chunk in chunks:
        counts.consumed += len(chunk)
        decoded = decode_chunk(chunk.topic, chunk.values, chunk.partitions, chunk.offsets,
                               pipeline.features,
                               sources=chunk.sources() if keep_events else None)
        counts.rejected(decoded.rejected)
        yield decoded


def score(parts: Iterable[Decoded], pipeline: Pipeline, *, counts: ReplayCounts,
          send: Callable[[list[Output]], None] | None = None) -> tuple[Results, ReplayCounts]:
    """Score decoded chunks with every model of ``pipeline`` on one worker thread, so a
    chunk's scoring overlaps the decoding of the next; gather them in the order given (chunks
    without a valid event are skipped).
    ``counts.seconds`` is the time this took, decoding (pulling ``parts``) included."""
    models = pipeline.models
    every = (models.champion, *models.shadows)
    results = Results([f"{m.name}:{m.version}" for m in every], [m.threshold for m in every],
                      list(models.enricher.features))
    started = time.perf_counter()
    waiting: deque[tuple[Decoded, Future[list[Scores]]]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="replay-score") as models_thread:
        try:
            for decoded in parts:
                if not len(decoded):
                    continue
                waiting.append((decoded, models_thread.submit(_score, pipeline, decoded, send)))
                if len(waiting) > 1:
                    _gather(results, counts, *waiting.popleft())
            while waiting:
                _gather(results, counts, *waiting.popleft())
        finally:
            for _, future in waiting:
                future.cancel()
    counts.seconds = time.perf_counter() - started
    return results, counts


def _score(pipeline: Pipeline, decoded: Decoded,
           send: Callable[[list[Output]], None] | None) -> list[Scores]:
    """Every model's scores (champion first); with ``send``, the champion's alerts to it."""
    scored = pipeline.score(decoded.matrix)
    if send is not None and decoded.sources is not None:
        send(pipeline.emit(scored, decoded.batch(), decoded.sources).alerts)
    return [scored.scores, *scored.shadow_scores]


def _gather(results: Results, counts: ReplayCounts, decoded: Decoded,
            scored: Future[list[Scores]]) -> None:
    counts.scored += len(decoded)
    results.add(decoded, scored.result())


@dataclass
class ReplayRun:
    """A finished replay: counts, the results file's digest, and each model's report;
    for a topic, what was read of each partition."""

    origin: str
    counts: ReplayCounts
    results: Results
    columns: dict[str, npt.NDArray[Any]]
    digest: str
    reports: list[backtest.ModelReport]
    context: dict[str, Any]
    partitions: dict[int, PartitionRead] | None
    drift: backtest.Drift | None = None
    """PSI against training per model that has a reference profile."""

    def accounting(self) -> list[str]:
        """For a topic: a line per partition (records read, from where, to which end), and
        the records read against those accounted for."""
        if self.partitions is None:
            return []
        c = self.counts
        return [*(_read_line(part) for _, part in sorted(self.partitions.items())),
                f"records read {self.context['records_read']:,}, accounted for "
                f"{c.accounted():,} (scored + dead-lettered + outside the time range)"]

    def windows(self) -> list[str]:
        """The summary's line on the window features (none when none were served)."""
        facts = self.context["windows"]
        if not facts:
            return []
        line = f"windows: {', '.join(facts['groups'])}, in memory"
        if facts["labels_file"] is None:
            return [f"{line}; no labels file: no fraud is known, every rate is 0"]
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(facts["labels_dlq_reasons"].items()))
        return [f"{line}; labels from {facts['labels_file']}: read {facts['labels_read']:,}, "
                f"dead-lettered {facts['labels_dead_lettered']:,}"
                f"{f' ({reasons})' if reasons else ''}, applied {facts['labels_applied']:,}"]

    def html(self) -> str:
        labels = self.columns["label"]
        scores = {m: self.columns[f"score:{m}"] for m in self.results.models}
        return backtest.html_page(
            self.reports, {m: backtest.curves(s, labels) for m, s in scores.items()},
            {m: backtest.histogram(s, labels) for m, s in scores.items()}, self.context,
            drift=self.drift)


def run_replay(settings: Settings, options: ReplayOptions) -> ReplayRun:
    """Resolve the input, score it with the live pipeline code, write and evaluate results.

    Refuses to write to a live topic of ``settings``; a store or broker failure fails the run.
    """
    from .parallel import DecodePool, parallel_jobs

    kafka = settings.kafka
    live = {kafka.alert_topic, kafka.dlq_topic, kafka.scores_topic, *kafka.input_topics}
    if options.output_topic and options.output_topic in live:
        raise ConfigError(f"replay: output topic {options.output_topic!r} is a live topic of "
                          "this configuration; replays write to their own topic")
    logged = logged_vectors(settings, options) if options.features == "scores" else None
    jobs = parallel_jobs(settings, options)
    labels = _labels_file(settings, options)
    with ExitStack() as stack:  # the children start first: they import while models load
        pool = stack.enter_context(DecodePool(jobs)) if jobs > 1 else None
        pipeline = replay_pipeline(settings, options.models or settings.model.refs(),
                                   features=options.features, snapshots=options.snapshots,
                                   logged=logged, alert_topic=options.output_topic,
                                   labels=labels.labels if labels else ())
        results, counts, source = _score_input(settings, options, pipeline, pool, labels)
    source.check(counts)
    columns = results.columns()
    digest = write_results(columns, options.out)
    known = (known_compromised(options.known_compromised)
             if options.known_compromised else {})
    reports = [backtest.evaluate(model, threshold, columns[f"score:{model}"], columns["label"],
                                 columns["card_id"], columns["event_time"], k=options.k,
                                 known_compromised=known)
               for model, threshold in zip(results.models, results.thresholds, strict=True)]
    context: dict[str, Any] = {
        "input": source.origin, "features": options.features, "decoding_processes": jobs,
        "warnings": backtest.point_in_time_warnings(options.features),
        "known_compromised_cards": len(known),
        "records": counts.consumed, "scored": counts.scored, "dead_lettered": counts.dead_lettered,
        "dlq_reasons": dict(counts.dlq_reasons), "out_of_range": counts.out_of_range,
        "records_read": source.records_read,
        "offsets_in_range": source.records_read,  # its former name, kept for JSON readers
        "partitions": None if source.partitions is None else {
            p: _read_facts(part) for p, part in sorted(source.partitions.items())},
        "results": str(options.out), "sha256": digest,
        "dead_letters_file": str(dead_letters_path(options.out)),
        "windows": _windows_facts(pipeline.features.windows, labels)}
    drift = {model: backtest.drift_against_training(columns, model, profile)
             for model, profile in _profiles(settings, options).items()
             if model in results.models}
    return ReplayRun(source.origin, counts, results, columns, digest, reports, context,
                     source.partitions, drift)


def _profiles(settings: Settings, options: ReplayOptions) -> dict[str, Profile]:
    """The reference profile of each replayed model that has one, by ``name:version``."""
    found = {}
    for name, version in options.models or settings.model.refs():
        manifest = read_manifest(resolve(settings.model.dir, name, version))
        if manifest.profile:
            found[f"{manifest.name}:{manifest.version}"] = Profile.from_json(manifest.profile)
    return found


def _read_facts(part: PartitionRead) -> dict[str, Any]:
    """What was read of a partition, for the JSON report."""
    return {"records_read": part.records, "first_offset": part.first, "last_offset": part.last,
            "start": "beginning" if part.start < 0 else part.start, "why": part.why,
            "end_asked": part.end, "end_of_log": part.end_of_log,
            "broker_reported_end": part.reported_end}


def _read_line(part: PartitionRead) -> str:
    """What was read of a partition, in a line of the printed summary."""
    span = f"offsets {part.first:,}-{part.last:,}" if part.last is not None else "no record"
    start = "the beginning" if part.start < 0 else f"offset {part.start:,}"
    why = f" ({part.why})" if part.why else ""
    if part.end is not None:
        end = f"to offset {part.end - 1:,} as asked"
    elif part.end_of_log is not None:
        reported = "nothing" if part.reported_end is None else f"{part.reported_end:,}"
        end = f"to its end of log at {part.end_of_log:,} (the broker reported {reported})"
    else:
        end = "(not read)"
    return (f"partition {part.partition}: {part.records:,} records read ({span}), from "
            f"{start}{why} {end}")


def _labels_file(settings: Settings, options: ReplayOptions) -> LabelsFile | None:
    """``options.labels`` read and decoded; refused without ``[windows.*]`` to use them."""
    if options.labels is None:
        return None
    if not settings.windows:
        raise ConfigError("replay --labels: the labels are for window features, and the "
                          "config defines none ([windows.*])")
    return LabelsFile(options.labels, settings.decode.max_payload_bytes)


def _windows_facts(windows: object, labels: LabelsFile | None) -> dict[str, Any] | None:
    """What the window features were computed with, for the report (None: none served)."""
    if not isinstance(windows, ReplayWindows):
        return None
    engine = windows.engine
    return {
        "groups": {g.window.name: g.window.prefix for g in engine.groups},
        "labels_file": None if labels is None else str(labels.path),
        "labels_read": 0 if labels is None else labels.read,
        "labels_dead_lettered": 0 if labels is None else len(labels.rejected),
        "labels_dlq_reasons": {} if labels is None else dict(labels.reasons),
        "labels_applied": windows.applied,
        "late_events": {g.window.name: g.stats.late for g in engine.groups},
        "too_late_events": {g.window.name: g.stats.too_late for g in engine.groups},
        "engine_calls": windows.calls}


def _score_input(settings: Settings, options: ReplayOptions, pipeline: Pipeline,
                 pool: DecodePool | None, labels: LabelsFile | None = None
                 ) -> tuple[Results, ReplayCounts, ReplayInput]:
    """The input scored (decoded by ``pool`` if given), and the input (for a topic, what was
    read of each partition); the champion's alerts go to ``options.output_topic``, the
    labels file's refused lines to the dead letters, first."""
    from .parallel import Spec

    counts = ReplayCounts()
    if pool is not None and options.input is not None:
        spec = Spec.of(settings, pipeline.models.enricher.features, options)
        parts: Iterable[Decoded] = pool.parts(options.input, spec, counts)
        source = ReplayInput([], str(options.input))
    else:
        source = open_input(settings, options, counts)
        parts = decoded_chunks(source.chunks, pipeline, counts,
                               keep_events=options.output_topic is not None)
    sink = _alert_sink(settings, options.output_topic)
    dead_letters = DeadLetterFile(dead_letters_path(options.out))
    try:
        if labels is not None:
            dead_letters.write(labels.path.name, labels.rejected)
        results, counts = score(_written(parts, dead_letters), pipeline, counts=counts,
                                send=sink.send if sink else None)
        if sink:
            sink.flush(60.0)
    finally:
        dead_letters.close()
        if sink:
            sink.close()
    return results, counts, source


def dead_letters_path(results: Path) -> Path:
    """Where a replay writes its dead letters: beside the results file."""
    results = Path(results)
    return results.with_name(f"{results.stem}.dead-letters.jsonl")


def _written(parts: Iterable[Decoded], dead_letters: DeadLetterFile) -> Iterator[Decoded]:
    """``parts``, each one's refused records written to ``dead_letters`` first."""
    for decoded in parts:
        if decoded.rejected:
            dead_letters.write(decoded.topic, decoded.rejected)
        yield decoded


def _alert_sink(settings: Settings, topic: str | None) -> Any:
    if not topic:
        return None
    from ..adapters.kafka import KafkaSink, ensure_topics

    kafka = settings.kafka
    ensure_topics(kafka.common_config(), [topic], create=kafka.create_topics,
                  partitions=kafka.topic_partitions, replication_factor=kafka.replication_factor)
    return KafkaSink(kafka.producer_config())


def known_compromised(path: Path) -> dict[str, int]:
    """Cards known compromised before or during the test period, from a CSV/Parquet table:
    ``card_id``, and optionally ``known_from`` (a time; absent: known from the start)."""
    table = read_table(path)
    if "card_id" not in table:
        raise ConfigError(f"{path}: a known-compromised table needs a card_id column")
    times = table.get("known_from") or [None] * len(table["card_id"])
    return {str(card): UNKNOWN_TIME if when is None else _time_ms(when, path)
            for card, when in zip(table["card_id"], times, strict=True)}


def _time_ms(value: object, path: Path) -> int:
    if isinstance(value, int | float):
        return int(value)
    try:
        return parse_time_ms(str(value))
    except ConfigError as exc:
        raise ConfigError(f"{path}: known_from: {exc}") from None
