"""Domain errors become Datasette's HTTP exceptions here, and only here.

The layers below raise the errors of :mod:`errors` (no status); the route
wrapper calls :func:`to_http` once and raises the result.  Datasette's
``handle_exception`` hook then renders it: for our own pages :func:`render`
answers (JSON ``{"ok": false, "error", "status"}`` for ``.json``, else our error
page with ways back to where the visitor came from), with CORS when ``--cors``
is on; every other page keeps Datasette's own rendering.
"""
from __future__ import annotations

import re

from datasette.utils import add_cors_headers
from datasette.utils.asgi import Base400, BadRequest, Response

from ..errors import (
    EmbeddingsError, ModelLoadingError, ModelNotReadyError, NotFoundError, TooLargeError, UnsupportedMediaError,
)


class Missing(Base400):
    """404 for a record, model or database our page was asked for.

    Not Datasette's own ``NotFound``: its router treats that as "no such route"
    and, for a path with a percent-escape, redirects to a tilde-encoded one
    instead of showing the message.
    """

    status = 404


class MethodNotAllowed(Base400):
    status = 405


class PayloadTooLarge(Base400):
    status = 413


class UnsupportedMediaType(Base400):
    status = 415


class ServiceUnavailable(Base400):
    """503: the database was rewritten under the request (see storage.store.TORN_READ_MESSAGES), or a
    query model is not loaded (still loading: with ``Retry-After``; failed: without)."""

    status = 503

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}


class HeaderFieldsTooLarge(Base400):
    """431: a multipart part's headers beyond the upload parser's limits (web/uploads.py)."""

    status = 431


def to_http(error: EmbeddingsError) -> Base400:
    """The Datasette exception for a domain error; its message is shown as it is."""
    message = str(error)
    if isinstance(error, NotFoundError):
        return Missing(message)
    if isinstance(error, TooLargeError):
        return PayloadTooLarge(message)
    if isinstance(error, UnsupportedMediaError):
        return UnsupportedMediaType(message)
    if isinstance(error, ModelLoadingError):
        return ServiceUnavailable(message, retry_after=error.retry_after)
    if isinstance(error, ModelNotReadyError):
        return ServiceUnavailable(message)
    return BadRequest(message)


#: the paths of this plugin's pages (``/-/embeddings`` and ``/<db>/-/...`` pages we register)
OUR_PAGES = re.compile(r"^(/-/embeddings|/[^/]+/-/(gallery|record|search|links|map|clusters))(/|\.|$)")


def is_ours(path: str, base_url: str = "/") -> bool:
    prefix = base_url.rstrip("/")
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    return bool(OUR_PAGES.match(path))


async def render(datasette, request, exception: Base400) -> Response:
    """The error response of one of our pages: JSON for ``.json`` paths, else a page with ways back."""
    status = exception.status
    message = str(exception.args[0]) if exception.args else "error"
    headers: dict = dict(getattr(exception, "headers", None) or {})
    if datasette.cors:
        add_cors_headers(headers)
    if request.path.split("?")[0].endswith((".json", ".csv")):
        return Response.json({"ok": False, "error": message, "status": status}, status=status, headers=headers)
    html = await datasette.render_template(
        ["embeddings_error.html"],
        {"error": message, "status": status, "ways_back": ways_back(datasette, request)},
        request=request,
    )
    return Response.html(html, status=status, headers=headers)


def ways_back(datasette, request) -> list[dict]:
    """Links out of an error page: where the visitor came from (same site only), then this database's pages."""
    from urllib.parse import urlsplit

    links = []
    referer = request.headers.get("referer") or ""
    parts = urlsplit(referer)
    if referer and parts.path.startswith("/") and (not parts.netloc or parts.netloc == request.host):
        back = parts.path + ("?" + parts.query if parts.query else "")
        if back != request.full_path:
            links.append({"href": back, "label": "Back to the page you came from"})
    route = request.url_vars.get("database")
    if route and route in {db.route for db in datasette.databases.values()}:
        base = datasette.urls.database(next(db.name for db in datasette.databases.values() if db.route == route))
        links.append({"href": base + "/-/gallery", "label": "The gallery"})
        links.append({"href": base + "/-/search", "label": "Search"})
    links.append({"href": datasette.urls.path("/-/embeddings"), "label": "Embeddings overview"})
    return links


