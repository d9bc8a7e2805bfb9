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
    from .search import index_warmup
    from .embedding import runtime as models
    from .storage import connection as sqlite_conn

    # refuse to start on a Python whose sqlite3 cannot load sqlite-vec, with the fix in the message
    sqlite_conn.check_extension_loading()
    # validates the embedding configuration now; loads the configured models in a thread
    models.warm_in_background(datasette)
    # validates fast_index settings now; builds each model's in-memory index in a thread
    index_warmup.warm_in_background(datasette)
    # validates who may judge links (the judges allow block) now
    from .web import judging

    judging.check_config(datasette)
    # requests side by side, one BLAS thread each (fast_index.blas_threads, default 1)
    from .search import blas_threads, memory_index as fast_index

    if fast_index.settings.blas_threads > 0:
        blas_threads.limit(fast_index.settings.blas_threads)


@hookimpl
def prepare_connection(conn, database, datasette):
    from .search import memory_index as fast_index
    from .embedding import runtime as models
    from .sql import functions as sql_functions
    from .storage import connection as sqlite_conn, hidden_tables as tables

    sqlite_conn.load_vec(conn)
    tables.remember_vec_tables(conn, database)
    sql_functions.register_functions(conn, models.config_of(datasette))
    fast_index.prepare_connection(conn, datasette)


@hookimpl
def get_metadata(datasette, key, database, table):
    from .storage import hidden_tables as tables

    return tables.hidden_tables_metadata()


@hookimpl
def register_routes(datasette):
    from .web import routes as views

    return views.routes()


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
