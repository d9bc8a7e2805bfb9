"""Route handlers: parse and check parameters, call the data functions, answer.

Every page answers HTML or, with ``.json``, the same dict as JSON.  Bad input
(an unknown record, model or provider, a k that is not 1..MAX_K) is a 4xx with
a message naming the parameter, in both forms; nothing a visitor types can
reach a 500.  CORS follows Datasette's own switch (``datasette --cors``).
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from datasette.utils import add_cors_headers
from datasette.utils.asgi import Response

from .. import config as plugin_config
from ..config import LinksSettings
from ..embedding import resolver, runtime
from ..errors import EmbeddingsError, InvalidRequestError, NotFoundError, TooLargeError
from ..search import agreement, distribution, evaluation, keywords
from ..search.filters import MAX_K, NeighbourFilter
from ..storage.store import stored_version
from . import compare_page, evaluation_page, judging, links_page, map_page
from ..storage.store import TORN_READ_MESSAGES, Store
from . import gallery, overview, record_page, search_page as search, uploads
from .http_errors import MethodNotAllowed, Missing, ServiceUnavailable, to_http
from .params import int_param
from .static_files import static_url

DEFAULT_K = 20
TRUE_VALUES = {"1", "true", "on", "yes"}


# ---------------------------------------------------------------- helpers
def _respond(datasette, response: Response) -> Response:
    if datasette.cors:
        add_cors_headers(response.headers)
    return response


def _database_color(datasette, database: str | None) -> str | None:
    """The colour Datasette marks a database's page headers with (1.0: per database; 0.65: red for all)."""
    if not database or database not in datasette.databases:
        return None
    return getattr(datasette.databases[database], "color", None) or "ff0000"


async def _render(datasette, request, template: str, context: dict) -> Response:
    context = {"database_color": _database_color(datasette, context.get("database")), **context}
    html = await datasette.render_template([template], context, request=request)
    return _respond(datasette, Response.html(html))


def _url(path: str, params: list[tuple[str, Any]]) -> str:
    params = [(k, v) for k, v in params if v not in (None, "", False)]
    return path + ("?" + urlencode(params) if params else "")


#: the query parameters each page reads; only these are carried into the links a page makes, so
#: a 100 KB query string of other parameters is not echoed into every facet link (issue 12)
GALLERY_PARAMS = ("provider", "model", "type", "size", "facet_size", "after")
RECORD_PARAMS = ("k", "provider", "exclude_provider", "exclude_subject", "model")
LINKS_PARAMS = ("from", "to", "model", "level", "comparison", "min", "max", "sort", "size", "k", "after")
CLUSTERS_PARAMS = ("model", "sort")
CLUSTER_PARAMS = ("model", "size", "after")
SIMILAR_PARAMS = ("id", "k", "provider", "exclude_provider")
EVALUATION_PARAMS = ("positive", "precision", "model")
COMPARE_RECORD_PARAMS = ("with", "k")
COMPARE_PARAMS = ("database", "a", "b", "k")
#: at most this many values of one repeated parameter are carried (the page reads no more)
MAX_REPEATED_PARAM = 100
MAX_PARAM_CHARS = 1024


def _params(request, keep: tuple[str, ...], drop: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The page's own query parameters (``keep``), bounded, for building its links."""
    return [
        (k, v)
        for k in keep if k not in drop
        for v in request.args.getlist(k)[:MAX_REPEATED_PARAM] if len(v) <= MAX_PARAM_CHARS
    ]


def _path_number(request, name: str, what: str, max_digits: int = 18) -> int:
    """A whole number from the URL path (18 digits fit SQLite's 64-bit integers); anything else is no page."""
    raw = request.url_vars[name]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= max_digits):
        raise Missing(f"{what} must be a whole number, got '{raw[:40]}'")
    return int(raw)


async def _database(datasette, request):
    """The requested database, after Datasette's permission check, holding our tables."""
    route = request.url_vars["database"]
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise Missing(f"no database '{route}'")
    await datasette.ensure_permissions(request.actor, [("view-database", db.name), "view-instance"])
    if not await db.execute_fn(overview.has_embeddings_tables):
        raise Missing(f"database '{db.name}' has no records and models tables (load Parquet files into it first)")
    return db


def _handler(template: str) -> Callable:
    """Wrap a data coroutine into a view that renders HTML or JSON; domain errors become Datasette's 4xx.

    Datasette renders those (HTML, or JSON for ``.json`` paths, with CORS) itself.
    """

    def decorate(fn: Callable[..., Awaitable[dict]]) -> Callable:
        async def view(datasette, request):
            as_json = bool(request.url_vars.get("format"))
            try:
                data = await fn(datasette, request)
            except EmbeddingsError as ex:
                raise to_http(ex) from None
            except Exception as ex:
                if not any(m in str(ex) for m in TORN_READ_MESSAGES):
                    raise
                # vec0 kept reading chunks rewritten under it (store.read_again_if_torn tried again):
                # a database served with -i (immutable: no locks, cached pages) written meanwhile
                raise ServiceUnavailable(
                    "the database changed while it was read; a database written while it is served must be "
                    "served without -i (immutable), as Datasette's mutable databases see each load whole"
                ) from None
            if as_json:
                return _respond(datasette, Response.json({"ok": True, **data}))
            return await _render(datasette, request, template, data)

        return view

    return decorate


def _base(datasette, db) -> str:
    return datasette.urls.database(db.name) + "/-/gallery"


# ---------------------------------------------------------------- gallery
@_handler("embeddings_gallery.html")
async def gallery_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    args = request.args
    flt = gallery.GalleryFilter(
        providers=tuple(dict.fromkeys(p for p in args.getlist("provider") if p)),
        model=args.get("model") or None,
        type=args.get("type") or None,
        q=(args.get("q") or "").strip() or None,
    )
    after = int_param(args, "after", 0, 0, 2**63 - 1)
    size = int_param(args, "size", gallery.DEFAULT_PAGE_SIZE, 1, gallery.MAX_PAGE_SIZE)
    facet_size = int_param(args, "facet_size", gallery.DEFAULT_FACET_SIZE, 1, gallery.MAX_FACET_SIZE)
    base = _base(datasette, db)
    data = await db.execute_fn(
        lambda conn: gallery.gallery_page(
            conn, flt, after=after, size=size, base_url=base, cache_key=db.name, facet_size=facet_size
        )
    )
    here = _params(request, GALLERY_PARAMS, drop=("after",))
    data["next_url"] = _url(base, here + [("after", data["next_after"])]) if data["next_after"] else None
    data["first_url"] = _url(base, here) if after else None
    for facet, items in data["facets"].items():
        for item in items:
            item["url"] = _facet_toggle_url(base, here, facet, item["value"], item["selected"])
    data["facets_more"] = {
        facet: {
            "hidden": hidden,
            "url": _url(base, [(k, v) for k, v in here if k != "facet_size"]
                        + [("facet_size", min(gallery.MAX_FACET_SIZE, facet_size * 10))]),
        }
        for facet, hidden in data.pop("facets_hidden").items() if hidden
    }
    data["json_url"] = _url(base + ".json", here + [("after", after or None)])
    data["clear_url"] = base
    data["count_limit"] = gallery.KEYWORD_COUNT_LIMIT
    data["database"] = db.name
    data["search_url"] = datasette.urls.database(db.name) + "/-/search"
    data["table_url"] = datasette.urls.table(db.name, "records")
    mapped = await db.execute_fn(map_page.mapped_models)
    if mapped:
        chosen = flt.model if flt.model in mapped else mapped[0]
        data["map_url"] = _url(datasette.urls.database(db.name) + "/-/map", [("model", chosen)])
    return data


def _facet_toggle_url(base: str, here: list, facet: str, value: str, selected: bool) -> str:
    """Providers add and remove one by one; model and type replace the current choice."""
    if facet == "provider":
        rest = [(k, v) for k, v in here if not (k == "provider" and v == value)]
        return _url(base, rest if selected else rest + [("provider", value)])
    rest = [(k, v) for k, v in here if k != facet]
    return _url(base, rest if selected else rest + [(facet, value)])


# ---------------------------------------------------------------- record
@_handler("embeddings_record.html")
async def record_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    record_id = _path_number(request, "record_id", "record id")
    args = request.args
    k = int_param(args, "k", DEFAULT_K, 1, MAX_K)
    providers = tuple(dict.fromkeys(p for p in args.getlist("provider") if p))
    exclude = tuple(dict.fromkeys(p for p in args.getlist("exclude_provider") if p))
    exclude_subject = (args.get("exclude_subject") or "").lower() in TRUE_VALUES
    base = _base(datasette, db)
    def page(conn) -> dict:
        data = record_page.record_page(
            conn, record_id, k=k, providers=providers, exclude_providers=exclude,
            exclude_subject=exclude_subject, model=args.get("model") or None, base_url=base, cache_key=db.name,
            settings=plugin_config.for_datasette(datasette).fast_index,
        )
        model = data["record"]["model"]
        # where each score falls among random pairs of this model (when `map`/`neighbours` stored it)
        map_page.with_percentiles(data["similar"], distribution.current(conn, model, stored_version(conn, model)))
        subject = {"provider": data["record"]["provider"], "subject_id": data["record"]["subject_id"], "model": model}
        data["compare_models"] = compare_page.other_models(conn, subject)
        return data

    data = await db.execute_fn(page)
    record = data["record"]
    data["compare_links"] = [
        {"model": m, "url": _url(f"{record['url']}/compare", [("with", m)])} for m in data.pop("compare_models")
    ]
    path = record["url"]
    keep = [("k", k if k != DEFAULT_K else None), ("exclude_subject", "1" if exclude_subject else None)]
    this = record["provider"]
    scope = [
        {"label": "All providers", "url": _url(path, keep), "selected": not providers and not exclude},
        {"label": "Only this provider", "url": _url(path, keep + [("provider", this)]), "selected": providers == (this,) and not exclude},
        {"label": "Only other providers", "url": _url(path, keep + [("exclude_provider", this)]), "selected": exclude == (this,) and not providers},
    ]
    listed = gallery.largest(data.pop("provider_counts"), gallery.DEFAULT_FACET_SIZE, chosen=providers)
    scope += [
        {"label": p, "url": _url(path, keep + [("provider", p)]), "selected": providers == (p,) and not exclude, "provider": True}
        for p in listed if p != this
    ]
    data["providers_total"] = len(data["providers"])
    data["providers"] = listed  # the largest providers (and the chosen ones), not all 50,000
    data["providers_more"] = data["providers_total"] - len(listed)
    filters = [("provider", p) for p in providers] + [("exclude_provider", p) for p in exclude]
    for sibling in data["models"]:
        sibling["url"] = _url(f"{base}/{sibling['id']}", filters + keep)
    data["scope"] = scope
    data["subject_toggle_url"] = _url(
        path, filters + [("k", k if k != DEFAULT_K else None), ("exclude_subject", None if exclude_subject else "1")]
    )
    data["hidden_filters"] = filters + [("exclude_subject", "1")] * exclude_subject
    data["database"] = db.name
    data["gallery_url"] = base
    data["search_url"] = datasette.urls.database(db.name) + "/-/search"
    data["json_url"] = _url(path + ".json", _params(request, RECORD_PARAMS))
    data["max_k"] = MAX_K
    return data


# ---------------------------------------------------------------- stable addresses
async def address_view(datasette, request):
    """``/<db>/-/record/<provider>/<depiction_id>[.json]``: a redirect to the record's page.

    The page keeps its own (load-order) id in its URL; this address is the one
    to link to from elsewhere.  Every query parameter but ``model`` is passed on.
    """
    as_json = bool(request.url_vars.get("format"))
    try:
        db = await _database(datasette, request)
        provider = gallery.decode_address_part(request.url_vars["provider"])
        depiction = gallery.decode_address_part(request.url_vars["depiction"])
        model = request.args.get("model") or None
        rid = await db.execute_fn(lambda conn: record_page.find_by_address(conn, provider, depiction, model))
    except EmbeddingsError as ex:
        raise to_http(ex) from None
    target = _url(f"{_base(datasette, db)}/{rid}" + (".json" if as_json else ""), _params(request, RECORD_PARAMS, drop=("model",)))
    return _respond(datasette, Response.redirect(target))


# ---------------------------------------------------------------- search
@_handler("embeddings_search.html")
async def search_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    settings = plugin_config.for_datasette(datasette)
    config = settings.embedding
    form = search.SearchForm()
    if request.method == "POST":
        form = await search.read_form(request.receive, request.headers, uploads.FormLimits.from_config(settings))
        if request.headers.get("content-type", "").lower().startswith("multipart/"):
            search.check_csrf(request.scope, request.headers, form)  # asgi-csrf skips these: see search.py
    # the query string also counts, so API clients can POST raw image bytes to ?model=...&k=...
    fields = {k: request.args.getlist(k) for k in request.args.keys()}
    for name, values in form.fields.items():
        fields[name] = values
    get = lambda name: (fields.get(name) or [None])[0]  # noqa: E731
    k = int_param({"k": get("k")}, "k", DEFAULT_K, 1, MAX_K)
    providers = tuple(dict.fromkeys(p for p in fields.get("provider", []) if p))
    stored, counts, has_index = await db.execute_fn(
        lambda conn: (Store(conn).models(), gallery.facet_counts(conn, db.name), keywords.has_keyword_index(conn))
    )
    models = [search.model_capabilities(m, config) for m in stored]
    data = search.plan_search(
        models, counts, model_label=get("model") or None, text=get("q"), image=form.image, k=k, providers=providers,
        mode=get("mode") or None, keyword_index=has_index,
    )
    data["providers"] = gallery.largest(gallery.provider_totals(counts), gallery.DEFAULT_FACET_SIZE, chosen=providers)
    data["providers_more"] = len(counts.providers) - len(data["providers"])
    query = data["query"]
    base = _base(datasette, db)
    if query["text"] and query["mode"] == "keyword":
        data["results"] = await db.execute_fn(
            lambda conn: search.run_keyword_search(conn, query["text"], query["model"], k=k, providers=providers, base_url=base)
        )
    elif query["text"] or query["image"]:
        model = next(m for m in stored if m.label == query["model"])
        vector = await asyncio.to_thread(
            search.query_vector, model, config, text=query["text"], image=form.image
        )
        if query["mode"] == "hybrid":
            data["results"] = await db.execute_fn(
                lambda conn: search.run_hybrid_search(
                    conn, model.label, vector, query["text"], k=k, providers=providers, base_url=base,
                    settings=settings.fast_index,
                )
            )
        else:
            data["results"] = await db.execute_fn(
                lambda conn: search.run_search(
                    conn, model.label, vector, k=k, providers=providers, base_url=base, settings=settings.fast_index
                )
            )
    if form.image is not None and not request.url_vars.get("format"):
        data["query_image"] = await asyncio.to_thread(search.thumbnail_data_url, form.image, config)
    data["database"] = db.name
    data["gallery_url"] = _base(datasette, db)
    data["search_url"] = datasette.urls.database(db.name) + "/-/search"
    data["max_k"] = MAX_K
    data["max_upload_mb"] = round(config.max_upload_bytes / (1024 * 1024), 1)
    return data


# ---------------------------------------------------------------- overview
@_handler("embeddings_overview.html")
async def overview_view(datasette, request) -> dict:
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    config = plugin_config.for_datasette(datasette).embedding
    databases = []
    for name, db in datasette.databases.items():
        if name == "_internal":
            continue
        if not await datasette.permission_allowed(request.actor, "view-database", name, default=True):
            continue
        if not await db.execute_fn(overview.has_embeddings_tables):
            continue
        info = await db.execute_fn(lambda conn: overview.database_overview(conn, name))
        mapped = set(await db.execute_fn(map_page.mapped_models))
        base = datasette.urls.database(name)
        for model in info["models"]:
            model["query_model"] = await asyncio.to_thread(
                resolver.query_model_id, config, model["label"], stored=True, stored_llm_id=model["llm_model_id"]
            )
            if model["label"] in mapped:
                model["map_url"] = _url(base + "/-/map", [("model", model["label"])])
                model["clusters_url"] = _url(base + "/-/clusters", [("model", model["label"])])
        info["compare_url"] = datasette.urls.path("/-/embeddings/compare")
        databases.append({"name": name, "gallery_url": base + "/-/gallery", "search_url": base + "/-/search", **info})
    # which query models are loaded, loading or failed (a request for one not loaded answers 503)
    return {"databases": databases, "model_loads": runtime.load_states()}


# ---------------------------------------------------------------- links
def _links_settings(datasette) -> LinksSettings:
    return plugin_config.for_datasette(datasette).links


@_handler("embeddings_links.html")
async def links_html_or_json(datasette, request) -> dict:
    db = await _database(datasette, request)
    q = links_page.parse(request.args)
    settings = _links_settings(datasette)
    record_base = _base(datasette, db)
    def page(conn) -> dict:
        found = links_page.links_page(conn, q, settings, record_base=record_base, cache_key=db.name)
        judging.attach(conn, found["links"])  # each link's stored judgements, for everyone
        return {**found, "choices": links_page.choices(conn)}

    data = await db.execute_fn(page)
    base = datasette.urls.database(db.name) + "/-/links"
    if not request.url_vars.get("format"):  # the buttons (and their CSRF token) are for the HTML page only
        allowed = await judging.can_judge(datasette, request.actor, db)
        data["judging"] = judging.controls(datasette, request, db, allowed, base)
    data["evaluation_url"] = base + "/evaluation"
    here = _params(request, LINKS_PARAMS, drop=("after",))
    data["next_url"] = _url(base, here + [("after", data["next"])]) if data["next"] else None
    data["first_url"] = _url(base, here) if q.after is not None else None
    data["json_url"] = _url(base + ".json", _params(request, LINKS_PARAMS))
    data["csv_url"] = _url(base + ".csv", here)
    data["query"] = {
        "from": q.source, "to": list(q.targets), "model": q.model, "level": q.level, "comparison": q.comparison,
        "min": q.min, "max": q.max, "sort": q.sort, "size": q.size, "k": q.k, "judged": q.judged,
    }
    data["database"] = db.name
    data["links_url"] = base
    data["gallery_url"] = record_base
    data["search_url"] = datasette.urls.database(db.name) + "/-/search"
    return data


async def links_view(datasette, request):
    """``/<db>/-/links`` (HTML), ``.json`` (the same dict) and ``.csv`` (every matching row, streamed)."""
    if request.url_vars.get("format") == ".csv":
        return await links_csv(datasette, request)
    return await links_html_or_json(datasette, request)


async def links_csv(datasette, request):
    import csv
    import io

    from datasette.utils.asgi import AsgiStream

    try:
        db = await _database(datasette, request)
        q = links_page.parse(request.args)
        settings = _links_settings(datasette)
        # the first batch runs before the response starts, so a bad request is still a 4xx
        first = await db.execute_fn(lambda conn: links_page.csv_batch(conn, links_page.with_after(q, None, 1000), settings, db.name))
    except EmbeddingsError as ex:
        # a CSV client reads the refusal as JSON, as with `.json`
        status = to_http(ex).status
        return _respond(datasette, Response.json({"ok": False, "error": str(ex), "status": status}, status=status))

    def encode(rows) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return buffer.getvalue()

    async def stream(writer) -> None:
        rows, token = first
        await writer.write(encode([links_page.CSV_COLUMNS]) + encode(rows))
        while token is not None:
            batch_query = links_page.with_after(q, token, 1000)
            rows, token = await db.execute_fn(lambda conn: links_page.csv_batch(conn, batch_query, settings, db.name))
            await writer.write(encode(rows))

    headers = {"content-disposition": f'attachment; filename="{db.name}-links.csv"'}
    if datasette.cors:
        headers["access-control-allow-origin"] = "*"
    return AsgiStream(stream, headers=headers, content_type="text/csv; charset=utf-8")


# ---------------------------------------------------------------- map, clusters, more like these
def _ids(args) -> list[int]:
    raw = [v for v in args.getlist("id") if v != ""]
    ids = []
    for value in raw:
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise InvalidRequestError(f"id must be a whole number, got '{value[:40]}'")
        ids.append(int(value))
    if not ids:
        raise InvalidRequestError("name at least one record: ?id=1&id=2 (an empty selection has nothing to compare)")
    if len(set(ids)) > map_page.MAX_SELECTION:
        raise TooLargeError(f"at most {map_page.MAX_SELECTION} records at once, got {len(set(ids)):,}: select fewer")
    return ids


def _map_urls(datasette, db) -> dict:
    base = datasette.urls.database(db.name)
    return {
        "database": db.name,
        "gallery_url": base + "/-/gallery",
        "search_url": base + "/-/search",
        "map_url": base + "/-/map",
        "clusters_url": base + "/-/clusters",
        "similar_url": base + "/-/gallery/similar",
    }


@_handler("embeddings_map.html")
async def map_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    data = await db.execute_fn(lambda conn: map_page.map_page(conn, request.args.get("model") or None))
    urls = _map_urls(datasette, db)
    data.update(urls)
    data["points_url"] = _url(urls["map_url"] + ".json", [("model", data["model"])])
    data["records_url"] = urls["map_url"] + "/records.json"
    data["script_url"] = static_url(datasette, "map.js")
    data["json_url"] = data["points_url"]
    for m in data["models"]:
        m["url"] = _url(urls["map_url"], [("model", m["label"])])
    data["clusters_page_url"] = _url(urls["clusters_url"], [("model", data["model"])])
    return data


async def map_json_view(datasette, request) -> Response:
    """The points as compact arrays; paged with ``after`` (a record id) and ``size``."""
    try:
        db = await _database(datasette, request)
        args = request.args
        after = int_param(args, "after", 0, 0, 2**63 - 1)
        size = int_param(args, "size", map_page.DEFAULT_POINTS_PAGE, 1, map_page.MAX_POINTS_PAGE)
        data = await db.execute_fn(lambda conn: map_page.map_points(conn, args.get("model") or None, after, size))
    except EmbeddingsError as ex:
        raise to_http(ex) from None
    path = datasette.urls.database(db.name) + "/-/map.json"
    data["next_url"] = (
        _url(path, [("model", data["model"]), ("size", size if size != map_page.DEFAULT_POINTS_PAGE else None),
                    ("after", data["next_after"])])
        if data["next_after"] else None
    )
    body = map_page.compact_json({"ok": True, **data})
    return _respond(datasette, Response(body, content_type="application/json; charset=utf-8"))


@_handler("embeddings_error.html")
async def map_records_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    ids = _ids(request.args)
    base = _base(datasette, db)
    return {"records": await db.execute_fn(lambda conn: map_page.record_cards(conn, ids, base))}


@_handler("embeddings_clusters.html")
async def clusters_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    urls = _map_urls(datasette, db)
    model = request.args.get("model") or None
    sort = request.args.get("sort") or "size"
    base = _base(datasette, db)

    def cluster_url(label):
        return lambda n: _url(f"{urls['clusters_url']}/{n}", [("model", label)])

    def page(conn):
        label, _ = map_page.resolve_model(conn, model)
        return map_page.clusters_page(conn, label, sort, base, cluster_url(label))

    data = await db.execute_fn(page)
    data.update(urls)
    data["sort_links"] = [
        {"sort": s, "url": _url(urls["clusters_url"], [("model", data["model"]), ("sort", s)]), "selected": s == sort}
        for s in data["sorts"]
    ]
    for m in data["models"]:
        m["url"] = _url(urls["clusters_url"], [("model", m["label"]), ("sort", sort if sort != "size" else None)])
    data["map_page_url"] = _url(urls["map_url"], [("model", data["model"])])
    data["json_url"] = _url(urls["clusters_url"] + ".json", _params(request, CLUSTERS_PARAMS))
    return data


@_handler("embeddings_cluster.html")
async def cluster_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    cluster = _path_number(request, "cluster", "cluster", max_digits=9)
    urls = _map_urls(datasette, db)
    args = request.args
    after = int_param(args, "after", 0, 0, 2**63 - 1)
    size = int_param(args, "size", map_page.DEFAULT_MEMBERS_PAGE, 1, map_page.MAX_MEMBERS_PAGE)
    model = args.get("model") or None
    base = _base(datasette, db)

    def page(conn):
        label, _ = map_page.resolve_model(conn, model)
        cluster_url = lambda n: _url(f"{urls['clusters_url']}/{n}", [("model", label)])  # noqa: E731
        return map_page.cluster_page(conn, label, cluster, after=after, size=size, base_url=base, cluster_url=cluster_url)

    data = await db.execute_fn(page)
    data.update(urls)
    here = _params(request, CLUSTER_PARAMS, drop=("after",))
    path = f"{urls['clusters_url']}/{cluster}"
    data["next_url"] = _url(path, here + [("after", data["next_after"])]) if data["next_after"] else None
    data["first_url"] = _url(path, here) if after else None
    data["clusters_page_url"] = _url(urls["clusters_url"], [("model", data["model"])])
    data["map_page_url"] = _url(urls["map_url"], [("model", data["model"])])
    data["more_url"] = _url(urls["similar_url"], [("id", c["id"]) for c in data["members"][:map_page.MAX_SELECTION]])
    data["json_url"] = _url(path + ".json", _params(request, CLUSTER_PARAMS))
    return data


@_handler("embeddings_similar.html")
async def similar_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    args = request.args
    ids = _ids(args)
    k = int_param(args, "k", DEFAULT_K, 1, MAX_K)
    flt = NeighbourFilter(
        tuple(dict.fromkeys(p for p in args.getlist("provider") if p)),
        tuple(dict.fromkeys(p for p in args.getlist("exclude_provider") if p)),
    )
    base = _base(datasette, db)

    def page(conn):
        gallery.check_filter(gallery.facet_counts(conn, db.name), flt)
        return map_page.more_like_these(conn, ids, k=k, flt=flt, base_url=base)

    data = await db.execute_fn(page)
    data.update(_map_urls(datasette, db))
    data["json_url"] = _url(request.path + ".json", _params(request, SIMILAR_PARAMS))
    data["max_k"] = MAX_K
    data["ids"] = ids
    return data


# ---------------------------------------------------------------- links: evaluation and judging
def _float_param(args, name: str) -> float | None:
    raw = args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number, got '{raw[:40]}'")


@_handler("embeddings_evaluation.html")
async def evaluation_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    args = request.args
    positives = [p for p in args.getlist("positive") if p]
    target = _float_param(args, "precision")
    models = [m for m in args.getlist("model") if m]
    report = await db.execute_fn(
        lambda conn: evaluation.evaluate(conn, positives=positives, target=target, models=models)
    )
    base = datasette.urls.database(db.name)
    if request.url_vars.get("format"):
        return report
    data = evaluation_page.page_context(report)
    data["database"] = db.name
    data["links_url"] = base + "/-/links"
    data["gallery_url"] = base + "/-/gallery"
    data["evaluation_url"] = base + "/-/links/evaluation"
    data["json_url"] = _url(base + "/-/links/evaluation.json", _params(request, EVALUATION_PARAMS))
    return data


async def judge_view(datasette, request) -> Response:
    """POST one verdict on a link; 403 (nothing written) unless mutable, permitted and CSRF-checked."""
    as_json = bool(request.url_vars.get("format"))
    if request.method != "POST":
        raise MethodNotAllowed("judgements are recorded with POST from the links page")
    try:
        db = await _database(datasette, request)
        return await judging.judge(
            datasette, request, db, links_url=datasette.urls.database(db.name) + "/-/links", as_json=as_json
        )
    except EmbeddingsError as ex:
        raise to_http(ex) from None


# ---------------------------------------------------------------- models side by side
@_handler("embeddings_compare_record.html")
async def compare_record_view(datasette, request) -> dict:
    db = await _database(datasette, request)
    record_id = _path_number(request, "record_id", "record id")
    args = request.args
    k = int_param(args, "k", agreement.DEFAULT_K, 1, agreement.MAX_K)
    base = _base(datasette, db)

    def page(conn):
        record = Store(conn).record(record_id)
        if record is None:
            raise NotFoundError(f"no record with id {record_id}")
        others = compare_page.other_models(conn, record)
        other = args.get("with") or (others[0] if others else None)
        if other is None:
            raise NotFoundError(f"no other model holds subject {record['subject_id']} ({record['provider']}): nothing to compare")
        return compare_page.compare_record(conn, record_id, other, k, base)

    data = await db.execute_fn(page)
    path = f"{base}/{record_id}/compare"
    data["model_links"] = [
        {"model": m, "url": _url(path, [("with", m), ("k", k if k != agreement.DEFAULT_K else None)]),
         "selected": m == data["b"]["model"]}
        for m in data["models"]
    ]
    data["database"] = db.name
    data["gallery_url"] = base
    data["json_url"] = _url(path + ".json", _params(request, COMPARE_RECORD_PARAMS))
    return data


@_handler("embeddings_compare.html")
async def compare_models_view(datasette, request) -> dict:
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    args = request.args
    name = args.get("database") or ""
    if not name:
        names = [n for n in datasette.databases if n != "_internal"]
        if len(names) != 1:
            raise InvalidRequestError(f"name the database: ?database=... (one of: {', '.join(names) or 'none'})")
        name = names[0]
    try:
        db = datasette.get_database(name)
    except KeyError:
        raise Missing(f"no database '{name[:60]}'")
    await datasette.ensure_permissions(request.actor, [("view-database", db.name), "view-instance"])
    if not await db.execute_fn(overview.has_embeddings_tables):
        raise Missing(f"database '{db.name}' has no records and models tables")
    k = int_param(args, "k", agreement.DEFAULT_K, 1, agreement.MAX_K)
    a, b = args.get("a") or "", args.get("b") or ""
    base = _base(datasette, db)
    data = await db.execute_fn(lambda conn: compare_page.agreement_page(conn, a, b, k, base))
    data["database"] = db.name
    data["overview_url"] = datasette.urls.path("/-/embeddings")
    data["json_url"] = _url(datasette.urls.path("/-/embeddings/compare.json"), _params(request, COMPARE_PARAMS))
    return data


def only(methods: tuple[str, ...], view: Callable) -> Callable:
    """Answer ``methods`` with ``view``; HEAD as GET without a body; OPTIONS 200 (a CORS
    preflight, as Datasette's JSON views answer it); any other method 405, as Datasette does."""
    allowed = ", ".join(dict.fromkeys(methods + (("HEAD",) if "GET" in methods else ()) + ("OPTIONS",)))

    async def guarded(datasette, request):
        method = request.method.upper()
        if method == "OPTIONS":
            response = Response.text("ok")
            response.headers["Allow"] = allowed
            return _respond(datasette, response)
        if method not in methods and not (method == "HEAD" and "GET" in methods):
            response = Response.text("Method not allowed", status=405)
            response.headers["Allow"] = allowed
            return _respond(datasette, response)
        response = await view(datasette, request)
        if method == "HEAD" and hasattr(response, "body"):
            response.body = b""
        return response

    return guarded


def routes() -> list[tuple[str, Callable]]:
    db = r"^/(?P<database>[^/]+)/-/"
    get = ("GET",)
    return [
        (r"^/-/embeddings(?P<format>\.json)?$", only(get, overview_view)),
        (r"^/-/embeddings/compare(?P<format>\.json)?$", only(get, compare_models_view)),
        (db + r"gallery(?P<format>\.json)?$", only(get, gallery_view)),
        (db + r"gallery/similar(?P<format>\.json)?$", only(get, similar_view)),
        (db + r"gallery/(?P<record_id>[^/]+?)/compare(?P<format>\.json)?$", only(get, compare_record_view)),
        (db + r"map\.json$", only(get, map_json_view)),
        (db + r"map/records(?P<format>\.json)$", only(get, map_records_view)),
        (db + r"map$", only(get, map_view)),
        (db + r"clusters(?P<format>\.json)?$", only(get, clusters_view)),
        (db + r"clusters/(?P<cluster>[^/]+?)(?P<format>\.json)?$", only(get, cluster_view)),
        (db + r"gallery/(?P<record_id>[^/]+?)(?P<format>\.json)?$", only(get, record_view)),
        (db + r"search(?P<format>\.json)?$", only(("GET", "POST"), search_view)),
        (db + r"links(?P<format>\.json|\.csv)?$", only(get, links_view)),
        (db + r"links/evaluation(?P<format>\.json)?$", only(get, evaluation_view)),
        (db + r"links/judge(?P<format>\.json)?$", only(("GET", "POST"), judge_view)),
        # tilde-encoded segments hold no "/" and no ".", so ".json" can only be the format
        (db + r"record/(?P<provider>[^/]+)/(?P<depiction>[^/.]+)(?P<format>\.json)?$", only(get, address_view)),
    ]
