"""What the tests share, one definition each; test modules import from here, never from
each other.

- ``brokers``     the two brokers the tests run on (Tansu, Apache Kafka): :func:`start` either,
                  :func:`require` one (skip where it cannot run, fail in CI)
- ``wait``        :func:`wait_until` a condition holds, or fail naming what never happened
- ``metrics``     :func:`scrape` a running service's ``/metrics`` into :class:`Samples`;
                  :func:`get` any of its endpoints
- ``configs``     :func:`service_config` (the sections of a run's config),
                  :func:`settings_for` (the same as ``Settings``), :func:`write_config` (TOML)
- ``service``     :class:`Service`, ``python -m stream_infer run`` in a subprocess;
                  :func:`cli`, one command run to its end
- ``population``  the simulator's :func:`population` and :func:`load_population` into Redis
- ``events``      inputs: good events, malformed records, replay histories
- ``topics``      :func:`produce`, :func:`read_all` back to the end, committed offsets, spans
- ``pipeline``    a :class:`~stream_infer.pipeline.Pipeline` over the in-memory fakes

The fixtures (broker, Redis, topics, the loaded population) are in ``tests/conftest.py``.
"""
