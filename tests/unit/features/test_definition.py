"""Settings -> definition: validation with clear errors, names, versioned prefixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream_infer.config import load_settings
from stream_infer.errors import ConfigError
from stream_infer.features import define, feature_names, from_settings
from stream_infer.features.definition import duration_name

from .support import ISSUE, groups

ISSUE_NAMES = [
    "customer.count_1d", "customer.mean_amount_1d", "customer.count_7d",
    "customer.mean_amount_7d", "customer.count_30d", "customer.mean_amount_30d",
    "terminal.count_1d", "terminal.rate_label_1d", "terminal.count_7d",
    "terminal.rate_label_7d", "terminal.count_30d", "terminal.rate_label_30d",
    "event.hour", "event.weekday", "event.is_weekend", "event.is_night",
]


def test_the_issue_config_names_its_features_in_a_stable_order() -> None:
    assert feature_names(define(ISSUE)) == ISSUE_NAMES
    backwards = dict(reversed(list(ISSUE.items())))
    assert feature_names(define(backwards)) == ISSUE_NAMES


def test_toml_sections_compile_and_lengths_are_named_in_their_largest_unit(
        tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[windows.card]\nkey = "card_id"\nlengths = ["24h", "90m", "500ms"]\n'
                    'aggregates = ["sum:attributes.velocity", "max:amount"]\n'
                    '[calendar]\ntime_zone = "Europe/Brussels"\nnight_hours = [22, 5]\n')
    definition = from_settings(load_settings(path))
    assert feature_names(definition)[:3] == [
        "card.sum_velocity_500ms", "card.max_amount_500ms", "card.sum_velocity_90m"]
    assert "card.max_amount_1d" in definition.names
    assert definition.windows[0].fields == ("attributes.velocity", "amount")
    assert (definition.time_zone, definition.night_hours) == ("Europe/Brussels", (22, 5))
    assert [duration_name(ms) for ms in (1, 1000, 60_000, 7 * 86_400_000)] == [
        "1ms", "1s", "1m", "7d"]


def test_the_state_prefix_changes_with_the_definition_and_only_then() -> None:
    customer, terminal = define(ISSUE).windows
    assert customer.prefix.startswith("win3:customer:") and len(customer.version) == 8
    assert define(ISSUE).windows[0].prefix == customer.prefix
    longer = groups(customer={**ISSUE["customer"].model_dump(), "lengths": ["1d", "60d"]})
    assert define(longer).windows[0].prefix != customer.prefix
    assert customer.horizon_ms == (30 * 24 + 1) * 3_600_000
    assert terminal.horizon_ms == (37 * 24 + 1) * 3_600_000


@pytest.mark.parametrize(("section", "message"), [
    ({"lengths": ["7 days"]}, "duration '7 days' must be an integer and a unit"),
    ({"lengths": ["7d", "168h"]}, "repeat a length"),
    ({"lengths": ["0d"]}, "must be positive"),
    ({"aggregates": ["avg:amount"]}, "unknown aggregate 'avg:amount'"),
    ({"aggregates": ["rate:label"]}, "rate:label needs a delay"),
    ({"key": "event_id"}, "windows.w.key"),
    ({"delay": "-1d"}, "duration '-1d'"),
])
def test_bad_window_settings_are_refused_with_their_path(section: dict[str, object],
                                                        message: str) -> None:
    window = {"key": "card_id", "lengths": ["1d"], "aggregates": ["count"], **section}
    with pytest.raises(ConfigError, match=r"windows\.w") as error:
        load_settings(None, windows={"w": window})
    assert message in str(error.value)


@pytest.mark.parametrize(("extra", "message"), [
    ({"windows": {"event": {"key": "card_id", "lengths": ["1d"], "aggregates": ["count"]}}},
     "must be lower_snake and not 'attributes', 'amount' or 'event'"),
    ({"windows": {"card": {"key": "card_id", "lengths": ["1d"], "aggregates": ["count"]}},
      "features": {"card": {"key": "card:{card_id}", "fields": ["x"]}}},
     "'card' names both a feature view and window features"),
    ({"calendar": {"time_zone": "Mars/Olympus"}}, "unknown time zone 'Mars/Olympus'"),
    ({"calendar": {"night_hours": [22, 24]}}, "calendar.night_hours.1"),
])
def test_bad_names_and_calendars_are_refused(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, **extra)
    assert message in str(error.value)


def test_an_attribute_named_like_a_field_collides() -> None:
    window = groups(w={"key": "card_id", "lengths": ["1d"],
                       "aggregates": ["mean:amount", "mean:attributes.amount"]})
    with pytest.raises(ValueError, match=r"feature names collide: w\.mean_amount_1d"):
        define(window)


def test_the_wing_loads_no_io_library_and_no_wing() -> None:
    code = ("import sys, stream_infer.features.engine\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('redis', 'confluent_kafka', 'xgboost', 'pandas') or m.startswith("
            "('stream_infer.service', 'stream_infer.replay', 'stream_infer.offline', "
            "'stream_infer.adapters', 'stream_infer.demo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
