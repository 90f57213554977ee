"""Tooling around the service: training, backtest reports, the simulator, feature loads and
tables in files."""
