"""The I/O edge: the only modules that import Kafka, Redis, XGBoost and HTTP clients."""
