"""Builders shared by the window feature tests."""

from __future__ import annotations

from typing import Any

from stream_infer.config import CalendarSettings, WindowGroup
from stream_infer.records import Transaction

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_700_000_000_000
"""2023-11-14T22:13:20Z, a Tuesday."""

ISSUE = {
    "customer": WindowGroup(key="customer_id", lengths=["1d", "7d", "30d"],
                            aggregates=["count", "mean:amount"]),
    "terminal": WindowGroup(key="terminal_id", lengths=["1d", "7d", "30d"], delay="7d",
                            aggregates=["count", "rate:label"]),
}
"""The configuration of issue 23."""


def tx(event_id: str, time: int, customer: str | None = "c1", terminal: str | None = "t1",
       amount: float = 10.0, **attributes: float) -> Transaction:
    return Transaction(event_id=event_id, event_time=time, card_id="card-1", merchant_id="m",
                       amount=amount, currency="EUR", customer_id=customer,
                       terminal_id=terminal, attributes=attributes)


def groups(**sections: dict[str, Any]) -> dict[str, WindowGroup]:
    return {name: WindowGroup(**section) for name, section in sections.items()}


UTC = CalendarSettings()
