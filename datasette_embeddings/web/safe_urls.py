"""Which third-party strings may become an ``href`` or ``src``.

Attribute values come from other institutions' files.  Escaping stops them from
breaking out of an attribute, but a perfectly escaped ``javascript:alert(1)``
still runs when clicked, and ``data:`` URLs can smuggle documents.  So every link
and image source on our pages passes through :func:`safe_http_url`: absolute
http(s) URLs with a host survive, everything else is shown as plain text.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})


def safe_http_url(value: Any) -> str | None:
    """``value`` if it is an absolute http(s) URL with a host or a site-relative path, else ``None``."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    # control characters and whitespace inside a URL are how scheme checks get dodged
    if not url or any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        return None
    if url.startswith("/"):
        # one leading slash only: "//host" is scheme-relative, and browsers read "/\\host" the same way
        return url if len(url) == 1 or url[1] not in "/\\" else None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return None
    return url
