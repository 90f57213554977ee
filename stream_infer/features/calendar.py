"""The calendar features of an event: a pure function of its ``event_time`` (epoch ms).

``event.hour`` (0-23) and ``event.weekday`` (Monday 0 to Sunday 6) of the local time in the
configured zone, ``event.is_weekend`` (weekday 5 or 6) and ``event.is_night`` (the hour lies
in the configured night, inclusive at both ends, wrapping past midnight when the first hour
is the larger: ``(22, 6)``).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import numpy.typing as npt

_HOUR = 3_600_000
_DAY = 86_400_000
_THURSDAY = 3
"""1970-01-01, day 0 of the epoch, was a Thursday."""
_SAFE_S = (-62_000_000_000, 253_000_000_000)
"""Instants (epoch s) whose local time any zone can represent (years 5 to 9986)."""


class Calendar:
    """Calendar features of epoch-millisecond times, built once per definition."""

    def __init__(self, time_zone: str = "UTC", night_hours: tuple[int, int] = (0, 6)) -> None:
        self._zone = None if time_zone == "UTC" else zoneinfo.ZoneInfo(time_zone)
        self._night = night_hours

    def __call__(self, times: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """One row per time: hour, weekday, is_weekend, is_night."""
        local = times + self.offsets(times)
        hour = local // _HOUR % 24
        weekday = (local // _DAY + _THURSDAY) % 7
        first, last = self._night
        night = ((hour >= first) & (hour <= last) if first <= last
                 else (hour >= first) | (hour <= last))
        return np.column_stack([hour, weekday, weekday >= 5, night]).astype(np.float64)

    def offsets(self, times: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The zone's UTC offset (ms) at each time: looked up once per distinct hour, and per
        event only in an hour whose offset changes (a daylight-saving transition)."""
        if self._zone is None:
            return np.zeros(len(times), np.int64)
        hours, where = np.unique(times // _HOUR, return_inverse=True)
        starts = np.array([self._offset(int(h) * _HOUR) for h in hours], np.int64)
        ends = np.array([self._offset(int(h) * _HOUR + _HOUR - 1) for h in hours], np.int64)
        offsets = starts[where]
        changing = np.flatnonzero(starts[where] != ends[where])
        offsets[changing] = [self._offset(int(t)) for t in times[changing]]
        return offsets

    def _offset(self, ms: int) -> int:
        seconds = min(max(ms // 1000, _SAFE_S[0]), _SAFE_S[1])
        offset = dt.datetime.fromtimestamp(seconds, self._zone).utcoffset()
        return 0 if offset is None else offset // dt.timedelta(milliseconds=1)
