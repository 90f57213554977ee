"""The issue's features equal the Fraud-Detection-Handbook's baseline feature
transformation (pandas ``rolling("Nd")`` over ``TX_DATETIME``) on an in-order stream whose
labels are all known, and the calendar equals pandas' in any zone."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_infer.features import Label, WindowEngine, define
from stream_infer.features.calendar import Calendar

from .support import DAY, ISSUE, T0, tx


def simulated(seed: int = 7, count: int = 3000) -> pd.DataFrame:
    """Transactions of 40 customers at 60 terminals over 90 days, some in the same ms."""
    rng = np.random.default_rng(seed)
    times = T0 + np.sort(rng.integers(0, 90 * DAY, count))
    times[1::50] = times[0::50][: len(times[1::50])]
    return pd.DataFrame({
        "TRANSACTION_ID": [f"tx{i:05d}" for i in rng.permutation(count)],
        "TX_TIME_MS": times,
        "TX_DATETIME": pd.to_datetime(times, unit="ms"),
        "CUSTOMER_ID": rng.integers(0, 40, count).astype(str),
        "TERMINAL_ID": rng.integers(0, 60, count).astype(str),
        "TX_AMOUNT": rng.gamma(2.0, 30.0, count).round(2) + 0.01,
        "TX_FRAUD": (rng.random(count) < 0.1).astype(int),
    }).sort_values(["TX_DATETIME", "TRANSACTION_ID"], ignore_index=True)


def customer_spending(group: pd.DataFrame, windows: tuple[int, ...] = (1, 7, 30)
                      ) -> pd.DataFrame:
    """The handbook's get_customer_spending_behaviour_features."""
    group = group.set_index("TX_DATETIME", drop=False)
    for days in windows:
        total = group["TX_AMOUNT"].rolling(f"{days}D").sum()
        number = group["TX_AMOUNT"].rolling(f"{days}D").count()
        group[f"customer.count_{days}d"] = list(number)
        group[f"customer.mean_amount_{days}d"] = list(total / number)
    return group.reset_index(drop=True)


def terminal_risk(group: pd.DataFrame, delay: int = 7, windows: tuple[int, ...] = (1, 7, 30)
                  ) -> pd.DataFrame:
    """The handbook's get_count_risk_rolling_window."""
    group = group.set_index("TX_DATETIME", drop=False)
    frauds_delay = group["TX_FRAUD"].rolling(f"{delay}D").sum()
    count_delay = group["TX_FRAUD"].rolling(f"{delay}D").count()
    for days in windows:
        frauds = group["TX_FRAUD"].rolling(f"{delay + days}D").sum() - frauds_delay
        count = group["TX_FRAUD"].rolling(f"{delay + days}D").count() - count_delay
        group[f"terminal.count_{days}d"] = list(count)
        group[f"terminal.rate_label_{days}d"] = list(frauds / count)
    return group.fillna(0).reset_index(drop=True)


def by_entity(frame: pd.DataFrame, column: str, transform) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    parts = [transform(g) for _, g in frame.groupby(column, sort=False)]
    return pd.concat(parts).set_index("TRANSACTION_ID")


def test_the_engine_computes_the_handbook_baseline_features() -> None:
    frame = simulated()
    handbook = by_entity(frame, "CUSTOMER_ID", customer_spending).join(
        by_entity(frame, "TERMINAL_ID", terminal_risk).filter(like="terminal."))
    engine = WindowEngine(define(ISSUE), dtype=np.float64)
    rows = []
    for batch in np.array_split(np.arange(len(frame)), 37):
        part = frame.iloc[batch]
        events = [tx(r.TRANSACTION_ID, int(r.TX_TIME_MS), r.CUSTOMER_ID, r.TERMINAL_ID,
                     float(r.TX_AMOUNT)) for r in part.itertuples()]
        labels = [Label(r.TRANSACTION_ID, int(r.TX_FRAUD), int(r.TX_TIME_MS))
                  for r in part.itertuples()]
        rows.append(engine.apply(events, labels))
    ours = pd.DataFrame(np.concatenate(rows), columns=list(engine.names),
                        index=frame["TRANSACTION_ID"])
    window_names = [n for n in engine.names if not n.startswith("event.")]
    want = handbook.loc[ours.index, window_names]
    assert (want["terminal.count_30d"] > 0).mean() > 0.9
    for name in window_names:
        if "mean" in name:
            np.testing.assert_allclose(ours[name], want[name], rtol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(ours[name], want[name], err_msg=name)


ZONES = ["UTC", "Europe/Brussels", "America/New_York", "Asia/Kolkata",
         "Australia/Lord_Howe", "America/St_Johns"]


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(ZONES), night=st.sampled_from([(0, 6), (22, 5), (3, 3)]),
       times=st.lists(st.integers(-2_500_000_000_000, 4_000_000_000_000) | st.sampled_from(
           [1_711_846_799_999, 1_711_846_800_000,  # Brussels springs forward
            1_730_613_599_999, 1_730_613_600_000,  # New York falls back
            1_728_142_199_999, 1_728_142_200_000]),  # Lord Howe, half an hour into the hour
           min_size=1, max_size=30))
def test_the_calendar_equals_pandas_in_any_zone(zone: str, night: tuple[int, int],
                                                times: list[int]) -> None:
    got = Calendar(zone, night)(np.array(times, np.int64))
    local = pd.to_datetime(times, unit="ms", utc=True).tz_convert(zone)
    hour, weekday = np.asarray(local.hour), np.asarray(local.day_of_week)
    first, last = night
    is_night = ((hour >= first) & (hour <= last) if first <= last
                else (hour >= first) | (hour <= last))
    want = np.column_stack([hour, weekday, weekday >= 5, is_night]).astype(float)
    np.testing.assert_array_equal(got, want)
