"""``python -m stream_infer`` is the ``stream-infer`` command."""

from .cli import main

raise SystemExit(main())
