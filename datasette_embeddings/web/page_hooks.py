"""How our pages plug into Datasette's own: thumbnails in tables, action links, gallery partials.

These are the bodies of the ``render_cell``, ``table_actions``, ``database_actions``,
``menu_links`` and ``extra_template_vars`` hooks.  Every URL that becomes an
``href``/``src`` goes through :mod:`safe_urls`; every text is escaped by markupsafe.
"""
from __future__ import annotations

import json
import re

from markupsafe import Markup

from . import gallery, overview
from .safe_urls import safe_http_url

IMAGE_URL = re.compile(r"\.(jpe?g|png|gif|webp|avif)(\?[^#]*)?$", re.IGNORECASE)
PREVIEW_COLUMNS = {"preview", "preview_url", "thumbnail", "thumbnail_url", "image_url"}


def _thumbnail(url: str, label: str) -> Markup:
    return Markup(
        '<a href="{u}" class="emb-cell-thumb"><img src="{u}" alt="{a}" loading="lazy" referrerpolicy="no-referrer" '
        'style="max-width: 120px; max-height: 120px; display: block; object-fit: contain; background: #f0ece5; border-radius: 4px"></a>'
    ).format(u=url, a=label)


def render_cell(value, column: str, table: str | None = None) -> Markup | None:
    """Cells people can read: a preview URL as a thumbnail, ``attributes`` as a list, ``records.created`` as a date.

    Every value is escaped; only http(s) URLs become links or images.
    """
    if column == "created" and table == "records" and isinstance(value, int) and not isinstance(value, bool):
        return _date(value)
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
        thumbnail = _thumbnail(url, "") if url else Markup("")
        return thumbnail + _attribute_list(attrs)
    url = safe_http_url(value)
    if url is None:
        return None
    if column.lower() in PREVIEW_COLUMNS or IMAGE_URL.search(url.split("#", 1)[0]):
        return _thumbnail(url, column)
    return None


def _date(seconds: int) -> Markup | None:
    """Seconds since 1970 as a UTC date a person reads, with the exact instant in ``datetime``."""
    import datetime

    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return Markup('<time datetime="{iso}" title="{n}">{text}</time>').format(
        iso=moment.strftime("%Y-%m-%dT%H:%M:%SZ"), n=seconds, text=moment.strftime("%Y-%m-%d %H:%M UTC")
    )


def _attribute_list(attrs: dict) -> Markup:
    """The attributes as a definition list: keys in bold, http(s) values as links, everything else as text."""
    items = Markup("")
    for key, value in attrs.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        url = safe_http_url(text)
        shown = Markup('<a href="{u}" rel="noopener noreferrer nofollow">{t}</a>').format(u=url, t=text) if url else text
        items += Markup("<dt>{k}</dt><dd>{v}</dd>").format(k=key, v=shown)
    return Markup('<dl class="emb-cell-attrs" style="margin: 0.3em 0 0; display: grid; grid-template-columns: max-content 1fr; '
                  'gap: 0 0.6em; overflow-wrap: anywhere">{}</dl>').format(items)


def gallery_url(datasette, database: str) -> str:
    return datasette.urls.database(database) + "/-/gallery"


def table_actions(datasette, database: str, table: str):
    if table != "records":
        return None

    async def links():
        if not await datasette.get_database(database).execute_fn(overview.has_embeddings_tables):
            return []
        return [{"href": gallery_url(datasette, database), "label": "Browse records as a gallery"}]

    return links


def database_actions(datasette, database: str):
    async def links():
        db = datasette.databases.get(database)
        if db is None or not await db.execute_fn(overview.has_embeddings_tables):
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

    static = {
        "embeddings_cards": embeddings_cards,
        "embeddings_table_url": _with_arg(request, "_embeddings", "table") if request else "",
        "embeddings_gallery_view_url": _with_arg(request, "_embeddings", None) if request else "",
    }
    if view_name not in ("query", "database", "table"):
        return static

    async def with_choices() -> dict:
        db = datasette.databases.get(database)
        choices = await db.execute_fn(lambda conn: param_choices(conn, database)) if db is not None else {}
        return {**static, "embeddings_param_choices": choices}

    return with_choices


#: canned-query parameters that become select boxes or checked number fields on query pages
NUMBER_PARAMS = {"k": {"min": 1, "max": 1000, "step": 1, "default": "10"},
                 "threshold": {"min": -1, "max": 1, "step": 0.01, "default": "0.8"}}


def param_choices(conn, cache_key: str = "") -> dict:
    """What the query page's script turns into select boxes: models and providers from the database.

    Defaults: the first model, provider_a the first provider and provider_b the
    second, so the form's first run returns rows instead of nothing.
    """
    if not overview.has_embeddings_tables(conn):
        return {}
    counts = gallery.facet_counts(conn, cache_key)
    models, providers = counts.models, counts.providers
    if not models:
        return {}
    by_model = {m: counts.providers_under(m) for m in models}
    out = {
        "model": {"options": models, "default": models[0]},
        "provider": {"options": providers, "default": by_model[models[0]][0] if by_model[models[0]] else ""},
        "provider_a": {"options": providers, "default": providers[0]},
        "provider_b": {"options": providers, "default": providers[1] if len(providers) > 1 else providers[0]},
        "providers_by_model": by_model,
    }
    out.update({name: {"number": spec} for name, spec in NUMBER_PARAMS.items()})
    return out


def _with_arg(request, name: str, value: str | None) -> str:
    from urllib.parse import urlencode

    pairs = [(k, v) for k in request.args.keys() if k != name for v in request.args.getlist(k)]
    if value is not None:
        pairs.append((name, value))
    return request.path + ("?" + urlencode(pairs) if pairs else "")
