"""Datasette hooks for datasette-embeddings: thin wrappers over the modules.

The package itself is the Datasette entry point (Datasette looks for a plugin's
``templates/`` inside the package that registers the hooks).
"""
from datasette import hookimpl

from . import sqlite_conn, tables


@hookimpl
def startup(datasette):
    # refuse to start on a Python whose sqlite3 cannot load sqlite-vec, with the fix in the message
    sqlite_conn.check_extension_loading()


@hookimpl
def prepare_connection(conn, database, datasette):
    sqlite_conn.load_vec(conn)
    tables.remember_vec_tables(conn, database)


@hookimpl
def get_metadata(datasette, key, database, table):
    return tables.hidden_tables_metadata()
