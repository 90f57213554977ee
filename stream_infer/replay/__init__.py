"""Replay and backtests: bounded sources and a collector around the live :class:`Pipeline`."""
