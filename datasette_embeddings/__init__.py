"""Datasette hooks for datasette-embeddings: thin wrappers over the modules.

The package itself is the Datasette entry point (Datasette looks for a plugin's
``templates/`` inside the package that registers the hooks).  Importing the
package is also the first step of every ``datasette-embeddings`` command, so
the hooks import their modules when first called: ``load`` then starts without
paying for Datasette, llm and their plugins (about 0.4 s of a 3 s load).
"""
from pluggy import HookimplMarker

#: the marker ``datasette.hookimpl`` is, without importing Datasette to get it
hookimpl = HookimplMarker("datasette")


@hookimpl
def startup(datasette):
    from . import config
    from .embedding import resolver
    from .search import blas_threads, index_warmup
    from .storage import connection

    # refuse to start on a Python whose sqlite3 cannot load sqlite-vec, with the fix in the message
    connection.check_extension_loading()
    # parsed and checked once for this Datasette instance: a bad key stops it here, named
    settings = config.for_datasette(datasette)
    # builds each model's in-memory index in a thread
    index_warmup.build_indexes_in_background(datasette, settings.fast_index)
    # requests side by side, one BLAS thread each (fast_index: blas_threads, default 1)
    if settings.fast_index.blas_threads > 0:
        blas_threads.limit(settings.fast_index.blas_threads)

    async def load_models():
        # imports llm's plugins now; loads the query models' weights in another thread (never in a request)
        await resolver.load_served_models(datasette, settings.embedding)

    return load_models


@hookimpl
def prepare_connection(conn, database, datasette):
    from . import config
    from .sql import functions
    from .storage import connection, hidden_tables

    from .search import memory_index

    connection.load_vec(conn)
    hidden_tables.remember_vec_tables(conn, database)
    functions.register_functions(conn, config.for_datasette(datasette))
    # this connection serves requests: its queries never build a fast index, the builder thread does
    db = datasette.databases.get(database)
    memory_index.mark_served(conn, immutable=bool(db is not None and not db.is_mutable))


@hookimpl
def get_metadata(datasette, key, database, table):
    from .storage import hidden_tables

    return hidden_tables.hidden_tables_metadata()


@hookimpl
def register_routes(datasette):
    from .web import routes

    return routes.routes()


@hookimpl
def render_cell(value, column, table, database, datasette):
    from .web import page_hooks

    return page_hooks.render_cell(value, column, table)


@hookimpl
def table_actions(datasette, actor, database, table, request):
    from .web import page_hooks

    return page_hooks.table_actions(datasette, database, table)


@hookimpl
def database_actions(datasette, actor, database, request):
    from .web import page_hooks

    return page_hooks.database_actions(datasette, database)


@hookimpl
def menu_links(datasette, actor, request):
    from .web import page_hooks

    return page_hooks.menu_links(datasette)


@hookimpl
def canned_queries(datasette, database, actor):
    from .web import canned

    return canned.canned_queries(datasette, database)


@hookimpl
def extra_template_vars(template, database, table, columns, view_name, request, datasette):
    from .web import page_hooks

    return page_hooks.extra_template_vars(datasette, database, view_name, request)


@hookimpl
def extra_css_urls(datasette):
    from .web import static_files

    # every page: ours, and Datasette's table and query pages, which show records as cards
    return [static_files.stylesheet_url(datasette)]


@hookimpl
def permission_allowed(datasette, actor, action, resource):
    if action != "embeddings-judge":  # answer only our own permission, without importing anything
        return None
    from .web import judging

    return judging.permission_allowed(datasette, actor, action, resource)


@hookimpl
def skip_csrf(datasette, scope):
    from .web import search_page as search

    return search.skips_asgi_csrf(scope, datasette.setting("base_url"))


@hookimpl
def asgi_wrapper(datasette):
    from .web import html_lang

    return html_lang.with_lang


@hookimpl
def handle_exception(datasette, request, exception):
    from datasette.utils.asgi import Base400

    from .web import http_errors

    if not isinstance(exception, Base400) or not http_errors.is_ours(request.path, datasette.setting("base_url")):
        return None  # Datasette's own pages keep Datasette's own error rendering

    async def inner():
        return await http_errors.render(datasette, request, exception)

    return inner
