"""One HTTP GET for health probes: how ``run --workers N`` asks its workers' endpoints."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy from the environment: the workers listen on this machine."""


def get(url: str, timeout_s: float) -> tuple[int | None, str]:
    """The status and body of ``GET url`` (an error status too); ``None`` and the reason
    when nothing answered (refused, timed out, not HTTP). Never raises."""
    try:
        with _DIRECT.open(url, timeout=timeout_s) as reply:
            return int(reply.status), reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except urllib.error.URLError as exc:
        return None, str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc) or type(exc).__name__
