"""Realized accuracy: the scores the service logged, joined to the labels that come back
days later, per model version and event-day cohort, and the champion against each challenger.

``join``     :class:`JoinState`: scores and labels by event id, bounded, idempotent
``cohorts``  coverage, precision, recall, label delay; AUC, AP, card precision@k when mature
``compare``  champion against a challenger on the same mature events, bootstrap intervals
``feed``     record bytes (or JSON-lines files) into the join
``report``   ``monitor report``: table, JSON, HTML
``metrics``  ``monitor run``'s Prometheus metrics (``prometheus_client``)
``run``      ``monitor run`` (the Kafka adapter) and the report's topic reading

Everything but ``metrics`` and ``run`` is pure: rows in, figures out.
"""
