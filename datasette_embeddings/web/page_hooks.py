"""How our pages plug into Datasette's own: thumbnails in tables, action links, gallery partials.

These are the bodies of the ``render_cell``, ``table_actions``, ``database_actions``,
``menu_links`` and ``extra_template_vars`` hooks.  Every URL that becomes an
``href``/``src`` goes through :mod:`safe_urls`; every text is escaped by markupsafe.
"""
from __future__ import annotations

import json
import re

from markupsafe import Markup

from . import gallery
from .safe_urls import safe_http_url

IMAGE_URL = re.compile(r"\.(jpe?g|png|gif|webp|avif)(\?[^#]*)?$", re.IGNORECASE)
PREVIEW_COLUMNS = {"preview", "preview_url", "thumbnail", "thumbnail_url", "image_url"}


def _thumbnail(url: str, label: str) -> Markup:
    return Markup(
        '<a href="{u}" class="emb-cell-thumb"><img src="{u}" alt="{a}" loading="lazy" referrerpolicy="no-referrer" '
        'style="max-width: 120px; max-height: 120px; display: block; object-fit: contain; background: #f0ece5; border-radius: 4px"></a>'
    ).format(u=url, a=label)


def render_cell(value, column: str) -> Markup | None:
    """A preview URL becomes a thumbnail; a records ``attributes`` cell gets its preview beside the JSON."""
    if not isinstance(value, str):
        return None
    if column == "attributes" and value.startswith("{"):
        try:
            attrs = json.loads(value)
        except ValueError:
            return None
        if not isinstance(attrs, dict):
            return None
        url = safe_http_url(attrs.get("preview")) if attrs.get("type", "image") == "image" else None
        if url is None:
            return None
        return Markup("{}<pre style=\"white-space: pre-wrap; margin: 0.3em 0 0\">{}</pre>").format(
            _thumbnail(url, str(attrs.get("subject_title") or "")), value
        )
    url = safe_http_url(value)
    if url is None:
        return None
    if column.lower() in PREVIEW_COLUMNS or IMAGE_URL.search(url.split("#", 1)[0]):
        return _thumbnail(url, column)
    return None


def gallery_url(datasette, database: str) -> str:
    return datasette.urls.database(database) + "/-/gallery"


def table_actions(datasette, database: str, table: str):
    if table != "records":
        return None

    async def links():
        if not await datasette.get_database(database).execute_fn(gallery.has_embeddings_tables):
            return []
        return [{"href": gallery_url(datasette, database), "label": "Browse records as a gallery"}]

    return links


def database_actions(datasette, database: str):
    async def links():
        db = datasette.databases.get(database)
        if db is None or not await db.execute_fn(gallery.has_embeddings_tables):
            return []
        return [
            {"href": gallery_url(datasette, database), "label": "Browse the collection gallery"},
            {"href": datasette.urls.database(database) + "/-/search", "label": "Search by text or image"},
        ]

    return links


def menu_links(datasette):
    return [{"href": datasette.urls.path("/-/embeddings"), "label": "Embeddings overview"}]


def extra_template_vars(datasette, database: str | None, view_name: str, request) -> dict:
    """``embeddings_cards(columns, rows)`` for the table and query templates' gallery partials."""
    if view_name not in ("table", "database", "query", "row") or not database:
        return {}
    base = gallery_url(datasette, database)

    def embeddings_cards(columns, rows):
        if request is not None and request.args.get("_embeddings") == "table":
            return None
        try:
            return gallery.cards_from_rows([str(c) for c in columns or []], rows or [], base)
        except Exception:  # an odd result shape must never break Datasette's own page
            return None

    return {
        "embeddings_cards": embeddings_cards,
        "embeddings_table_url": _with_arg(request, "_embeddings", "table") if request else "",
        "embeddings_gallery_view_url": _with_arg(request, "_embeddings", None) if request else "",
    }


def _with_arg(request, name: str, value: str | None) -> str:
    from urllib.parse import urlencode

    pairs = [(k, v) for k in request.args.keys() if k != name for v in request.args.getlist(k)]
    if value is not None:
        pairs.append((name, value))
    return request.path + ("?" + urlencode(pairs) if pairs else "")
