"""Window features computed from the stream: one definition for live scoring, backfill and
replay (issue 23). Pure: no I/O library, only the core modules.

The semantics are the Fraud-Detection-Handbook's baseline features (pandas
``rolling("Nd")`` over the event time), made exact for a stream that arrives out of order,
twice, and with its labels late:

``definition``  ``[windows.*]`` and ``[calendar]`` settings -> :class:`Definition`: the
                windows, :func:`feature_names` in a stable order, versioned state prefixes
``calendar``    ``event.hour``, ``event.weekday``, ``event.is_weekend``, ``event.is_night``
``labels``      :class:`Label` and the labels waiting for their event
``state``       an entity's log of events, retention, and the Redis layout it maps to
``windows``     the vectorized window aggregates of a run of new events
``engine``      :class:`WindowEngine`: ``apply(events, labels)`` -> a float32 row per event
"""

from .definition import Definition, define, feature_names, from_settings
from .engine import WindowEngine
from .labels import Label

__all__ = ["Definition", "Label", "WindowEngine", "define", "feature_names", "from_settings"]
