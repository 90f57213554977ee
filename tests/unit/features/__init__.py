"""The window features wing: the engine proved against an independent reference."""
