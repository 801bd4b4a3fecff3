"""One deployment's namespace on a shared Redis server.

Redis pub/sub ignores the database number (``redis://host/1`` and ``/2`` share
every channel), so two deployments pointed at one Redis server would otherwise
see each other's event and signal traffic. Every Redis key and channel tenet
uses starts with one prefix: ``TENET_REDIS_PREFIX`` when set, else one derived
from the database URL, since the processes of one deployment share a database
and two deployments never do. The password is left out of the derivation, so
rotating it does not split a deployment in two.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.engine import make_url

from ..settings import Settings


def derived_prefix(database_url: str) -> str:
    """``tenet:<12 hex digits of the database URL's hash, password left out>:``."""
    try:
        url = make_url(database_url)._replace(password=None)
        canonical = url.render_as_string(hide_password=False)
    except Exception:  # an unusual URL still gets a stable namespace of its own
        canonical = database_url
    return "tenet:" + hashlib.sha256(canonical.encode()).hexdigest()[:12] + ":"


def redis_prefix(settings: Settings) -> str:
    """The prefix of every Redis key and channel of this deployment."""
    if settings.redis_prefix:
        return settings.redis_prefix
    return derived_prefix(settings.database_url)


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (PSUBSCRIBE, SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
