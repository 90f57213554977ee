"""The demo: the real service on an embedded broker and Redis."""
