"""The simulator's cards and merchants, and their features loaded into Redis."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from stream_infer.adapters.redis import connect
from stream_infer.config import FeatureView, load_settings
from stream_infer.offline import simulate
from stream_infer.offline.features import load_features

HASH_VIEWS: dict[str, dict[str, Any]] = {
    "card": {"key": "card:{card_id}", "fields": list(simulate.CARD_FIELDS)},
    "merchant": {"key": "merchant:{merchant_id}", "fields": list(simulate.MERCHANT_FIELDS)},
}
"""The feature views as Redis hashes (the ``features`` section of a config)."""

PACKED_VIEWS: dict[str, dict[str, Any]] = {
    "card": {"key": "cardv:{card_id}", "fields": list(simulate.CARD_FIELDS), "layout": "packed"},
    "merchant": {"key": "merchantv:{merchant_id}", "fields": list(simulate.MERCHANT_FIELDS),
                 "layout": "packed"},
}
"""The same views as packed vectors, under keys of their own."""


@functools.cache
def population() -> simulate.Population:
    """300 cards and 40 merchants (seed 3): what the integration and fault tests score."""
    return simulate.make_population(cards=300, merchants=40, seed=3)


def load_population(redis_url: str, directory: Path, *, packed: bool = False,
                    pop: simulate.Population | None = None) -> simulate.Population:
    """Write ``pop``'s (default :func:`population`) feature files to ``directory`` and load
    them into the Redis at ``redis_url``, as :data:`HASH_VIEWS` and, with ``packed``, as
    :data:`PACKED_VIEWS` too. Returns the population."""
    pop = pop or population()
    views = [HASH_VIEWS, PACKED_VIEWS] if packed else [HASH_VIEWS]
    client = connect(load_settings(redis={"url": redis_url}).redis)
    try:
        for path in simulate.write_feature_csvs(pop, directory):
            name = path.name.split("_")[0]
            for view in views:
                load_features(client, path, name, FeatureView.model_validate(view[name]))
    finally:
        client.close()
    return pop
