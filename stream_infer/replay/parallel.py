"""``replay --jobs N``: a JSON-lines file decoded on N processes, scored in this one.

Decoding dominates a replay whose events carry their features (a typed msgspec decode and
the validation, a few microseconds a record on one core), so it runs on N child processes:
each turns a byte range of the file (whole lines, about :data:`~stream_infer.replay.BATCH`
records) into columns with the live decoder and enricher, and this process scores the parts
and gathers them in file order. The results are the single-process ones, byte for byte.

The children come from a fresh single-threaded ``forkserver`` (``spawn`` where there is none),
never from a fork of this process and its threads, and rebuild their stages from plain data,
a :class:`Spec`: the decode settings and the feature names.
They read the file themselves and answer with one msgpack :class:`Part` per range (numbers
as raw little-endian buffers): nothing read from the file is ever unpickled.

Only a JSON-lines file with ``--features event``, the JSON format and no ``--output-topic``
is decoded this way (:func:`parallel_jobs`); other inputs decode in the scoring process.
Not with window features (``[windows.*]``): their state takes the events one batch after the
other, in input order, so the children cannot compute them, and running them here instead
would mean sending every decoded event back (most of the decoding's cost again); a replay
with windows decodes in one process and refuses ``--jobs N`` above 1.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

from ..adapters.memory import MemoryFeatureStore
from ..config import DecodeSettings, Settings
from ..decode import make_decoder
from ..enrich import Enricher
from ..errors import ConfigError
from ..offline.tables import PARQUET_SUFFIXES, split_lines
from ..pipeline import Features
from .collect import Decoded, Rejected, ReplayCounts, decode_chunk
from .options import ReplayOptions
from .sources import BATCH, file_chunk, in_time_range

log = logging.getLogger(__name__)
AUTO_MIN_BYTES = 32 << 20
"""Auto (``jobs=None``) decodes files this large or larger on one process per core. Starting
the children costs a forkserver's imports (0.3-0.6 s on a busy machine): this process decodes
meanwhile, but a short replay waits for them at the end. On 2 cores, 10,000 events of 630
bytes (6 MB) took up to 0.3 s longer on 2 processes, 25,000 (16 MB) came out even."""
_SAMPLE = 1 << 20
_T = TypeVar("_T")


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def parallel_jobs(settings: Settings, options: ReplayOptions) -> int:
    """How many processes decode ``options.input``: 1 means in the scoring process.

    Several only for a JSON-lines file of events carrying their features, in the JSON
    format, without ``output_topic`` (alerts need the decoded events here), and without
    ``[windows.*]`` in the settings (their state is fed event after event, in order: an
    explicit ``jobs`` above 1 is refused). ``options.jobs`` None is auto: one per core for
    files of :data:`AUTO_MIN_BYTES` or more.
    """
    path = options.input
    eligible = (path is not None and path.suffix.lower() not in PARQUET_SUFFIXES
                and options.features == "event" and settings.decode.format == "json"
                and not options.output_topic)
    if options.jobs is not None and options.jobs < 1:
        raise ConfigError(f"replay: jobs must be at least 1, not {options.jobs}")
    if settings.windows:
        if options.jobs and options.jobs > 1:
            raise ConfigError(
                f"replay: --jobs {options.jobs} decodes on several processes, but the window "
                "features of [windows.*] are one state fed in order: leave --jobs out (or "
                "give --jobs 1), or replay with a config without [windows.*]")
        return 1
    if not eligible or path is None or not path.is_file():
        if options.jobs and options.jobs > 1:
            log.warning("replay: --jobs applies to a JSON-lines --input with --features event "
                        "(and no --output-topic); decoding in one process")
        return 1
    if options.jobs is not None:
        return options.jobs
    return cores() if path.stat().st_size >= AUTO_MIN_BYTES else 1


class Spec(msgspec.Struct, frozen=True):
    """What a child needs to decode like the scoring process: plain data only."""

    name: str
    decode: dict[str, Any]
    features: list[str]
    from_ms: int | None = None
    to_ms: int | None = None

    @classmethod
    def of(cls, settings: Settings, features: Iterable[str], options: ReplayOptions) -> Spec:
        assert options.input is not None
        return cls(options.input.name, settings.decode.model_dump(mode="json"),
                   list(features), options.from_ms, options.to_ms)


class Part(msgspec.Struct, array_like=True):
    """One byte range decoded: offsets are line numbers from the range's first line, arrays
    are little-endian buffers (int64 offsets and times, int8 labels, float32 rows)."""

    records: int
    out_of_range: int
    rejected: list[Rejected]
    offsets: bytes
    event_ids: list[str]
    card_ids: list[str]
    event_times: bytes
    labels: bytes
    matrix: bytes

    def decoded(self, topic: str, first: int, width: int) -> Decoded:
        """As the scoring process's :class:`Decoded`, the range starting at line ``first``."""
        count = len(self.event_ids)
        return Decoded(
            topic, np.zeros(count, dtype=np.int32),
            np.frombuffer(self.offsets, dtype="<i8") + first, self.event_ids, self.card_ids,
            np.frombuffer(self.event_times, dtype="<i8").tolist(),
            np.frombuffer(self.labels, dtype=np.int8).tolist(),
            [np.frombuffer(self.matrix, dtype="<f4").reshape(count, width)],
            rejected=[msgspec.structs.replace(r, offset=r.offset + first)
                      for r in self.rejected])


_decode_part = msgspec.msgpack.Decoder(Part).decode


class DecodePool:
    """``jobs`` decoding processes, started on entering (in the background: they import while
    the models load) and stopped on leaving, pending work cancelled."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool = ProcessPoolExecutor(jobs, mp_context=_context())
        self._starting = threading.Thread(target=self._start, name="replay-jobs-start")
        self._started = threading.Event()
        self.decoded_here = 0
        """Parts decoded by this process while the children were starting."""

    def __enter__(self) -> DecodePool:
        self._starting.start()
        return self

    def wait_started(self, timeout: float | None = None) -> bool:
        """Wait until the children have started (or failed to); False on timeout."""
        return self._started.wait(timeout)

    def _start(self) -> None:
        try:
            for ready in [self._pool.submit(_ready) for _ in range(self.jobs)]:
                ready.result()
        except Exception:  # a broken pool: submitting the first part raises it again
            log.debug("replay: decoding processes failed to start", exc_info=True)
        finally:
            self._started.set()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._starting.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def parts(self, path: Path, spec: Spec, counts: ReplayCounts) -> Iterator[Decoded]:
        """The file's events decoded, in file order, counted as consumed, dead-lettered or
        out of the time range: by this process until the children have started (so a short
        file never waits for them), then by the children."""
        width, first = len(spec.features), 0
        for encoded in self._encoded(msgspec.json.encode(spec), str(path),
                                     byte_ranges(path, part_bytes(path))):
            part = _decode_part(encoded)
            decoded = part.decoded(spec.name, first, width)
            first += part.records
            counts.consumed += part.records
            counts.out_of_range += part.out_of_range
            counts.rejected(decoded.rejected)
            yield decoded

    def _encoded(self, spec: bytes, path: str, ranges: Iterator[tuple[int, int]]
                 ) -> Iterator[bytes]:
        while not self._started.is_set():
            here = next(ranges, None)
            if here is None:
                return
            self.decoded_here += 1
            yield decode_range(spec, path, *here)
        futures = (self._pool.submit(decode_range, spec, path, start, end)
                   for start, end in ranges)
        for future in _ahead(futures, 2 * self.jobs):
            yield future.result()


def _ahead(futures: Iterator[Future[_T]], count: int) -> Iterator[Future[_T]]:
    """The futures in order, ``count`` of them submitted ahead of the one waited for."""
    window = deque(islice(futures, count))
    while window:
        first = window.popleft()
        window.extend(islice(futures, 1))
        yield first


def part_bytes(path: Path, records: int = BATCH) -> int:
    """Bytes of about ``records`` lines, judged by the file's first MiB."""
    with open(path, "rb") as fh:
        sample = fh.read(_SAMPLE)
    return max(1 << 16, records * len(sample) // max(sample.count(b"\n"), 1))


def byte_ranges(path: Path, size: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` ranges of whole lines covering the file, each about ``size`` bytes
    (more if a line is longer): every range but the last ends just after a ``\\n``."""
    total = path.stat().st_size
    with open(path, "rb") as fh:
        start = 0
        while start < total:
            fh.seek(start + size - 1)
            fh.readline()
            end = min(fh.tell(), total)
            yield start, end
            start = end


def read_range(path: str, start: int, end: int) -> list[bytes]:
    """The lines in ``[start, end)`` of the file, as :func:`~stream_infer.tables.read_lines`
    gives them: without ``\\n`` or trailing ``\\r``; a last line needs no ending."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    lines, rest = split_lines(data)
    return [*lines, rest.rstrip(b"\r")] if rest else lines


def decode_range(spec: bytes, path: str, start: int, end: int) -> bytes:
    """In a child: the lines of ``[start, end)`` decoded, as an encoded :class:`Part`."""
    plan, features = _stages(spec)
    lines = read_range(path, start, end)
    timed = plan.from_ms is not None or plan.to_ms is not None
    chunk, counts = file_chunk(plan.name, lines, 0, timed), ReplayCounts()
    kept = list(in_time_range([chunk], counts, plan.from_ms, plan.to_ms)) if timed else [chunk]
    if not kept:
        return _encode(Part(len(lines), counts.out_of_range, [], b"", [], [], b"", b"", b""))
    chunk = kept[0]
    decoded = decode_chunk(chunk.topic, chunk.values, chunk.partitions, chunk.offsets, features)
    return _encode(Part(
        len(lines), counts.out_of_range, decoded.rejected,
        _raw(decoded.offsets, "<i8"), decoded.event_ids, decoded.card_ids,
        _raw(np.asarray(decoded.event_times), "<i8"), _raw(np.asarray(decoded.labels), "i1"),
        _raw(decoded.matrix, "<f4") if len(decoded) else b""))


def _raw(array: npt.NDArray[Any], dtype: str) -> bytes:
    return array.astype(dtype, copy=False).tobytes()


_encode = msgspec.msgpack.Encoder().encode


@functools.lru_cache(maxsize=4)
def _stages(spec: bytes) -> tuple[Spec, Features]:
    """The live first stage, as the scoring process built it (features from the events)."""
    plan = msgspec.json.decode(spec, type=Spec)
    enricher = Enricher(plan.features, {}, features_in_events=True)
    decoder = make_decoder(DecodeSettings.model_validate(plan.decode))
    return plan, Features(decoder, enricher, MemoryFeatureStore(), on_store_error="pause")


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where there is one: a fresh single-threaded server imports this module
    once and forks each child from itself, ready at once; else ``spawn`` (each child imports)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _ready() -> None:
    """A first task: the child has imported this module."""
