"""The live service: the composition root (``app``), the engines (native, Faust), worker
processes, hot reload, metrics and tracing."""
