"""Hot reload: re-resolve the configured models and hand the runner a new :class:`ModelSet`.

The runner calls :meth:`ModelWatch.poll` between batches, so a switch never splits a batch
and no event is dropped or scored twice. A reload is due when asked (SIGHUP calls
:meth:`ModelWatch.request`, which is signal-safe) or, every ``poll_s``, when the registry
resolves the configured references to other model files (a new ``latest`` version). Loading
verifies each model as at start-up; anything that fails (hash mismatch, missing features,
unloadable file) is refused with a log line, the running models keep serving, and the same
broken files are not retried until they change or a SIGHUP asks again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import StreamInferError
from ..registry import read_manifest, resolve
from ..score import ModelSet

log = logging.getLogger(__name__)

ModelRef = tuple[str, str]
Identity = tuple[tuple[str, str], ...]


class ModelWatch:
    """Decides when to reload, loads through ``build``, reports through ``on_result``.

    ``build`` turns the resolved model directories (champion first) into a ``ModelSet``;
    ``on_result`` is told the new ``ModelSet``, or ``None`` when a reload was refused.
    """

    def __init__(
        self,
        root: Path,
        refs: Sequence[ModelRef],
        build: Callable[[list[Path]], ModelSet],
        *,
        poll_s: float | None,
        on_result: Callable[[ModelSet | None], None] = lambda scoring: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.refs = list(refs)
        self.build = build
        self.poll_s = poll_s
        self.on_result = on_result
        self.clock = clock
        self._requested = False
        self._next_check = clock() + poll_s if poll_s else float("inf")
        self._seen = self._identity(self._resolve())

    def request(self) -> None:
        """Reload at the next batch boundary, even if nothing changed (safe in a signal handler)."""
        self._requested = True

    def poll(self) -> ModelSet | None:
        """A new ``ModelSet`` to serve from the next batch, or None to keep the current one."""
        forced = self._requested
        if not forced and self.clock() < self._next_check:
            return None
        self._requested = False
        if self.poll_s:
            self._next_check = self.clock() + self.poll_s
        try:
            dirs = self._resolve()
            identity = self._identity(dirs)
            if identity == self._seen and not forced:
                return None
            self._seen = identity
            scoring = self.build(dirs)
        except StreamInferError as exc:
            log.error("model reload refused, the running models keep serving: %s", exc)
            self.on_result(None)
            return None
        served = ", ".join(f"{m.name} {m.version}" for m in (scoring.champion, *scoring.shadows))
        log.info("model reload: now serving %s (from the next batch)", served)
        self.on_result(scoring)
        return scoring

    def _resolve(self) -> list[Path]:
        return [resolve(self.root, name, version) for name, version in self.refs]

    @staticmethod
    def _identity(dirs: list[Path]) -> Identity:
        """Which files the references point at: a directory and its manifest's hash each."""
        return tuple((str(d), read_manifest(d).sha256) for d in dirs)
