"""The URL of one of our static files, whatever name the installed distribution has.

Datasette serves a plugin's ``static/`` folder under the plugin's *distribution*
name (``/-/static-plugins/<name>/``), not its module name, and that name depends on
how the package was installed (a wheel of this project, an older checkout's
editable install).  So the name is looked up from Datasette's own list of plugins,
by the folder it serves.
"""
from __future__ import annotations

import functools
import os

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


@functools.lru_cache(maxsize=1)
def plugin_name() -> str:
    from datasette.plugins import get_plugins

    for plugin in get_plugins():
        path = plugin.get("static_path")
        if path and os.path.realpath(path) == os.path.realpath(STATIC):
            return plugin["name"]
    return "datasette_embeddings"  # not registered as a plugin (a bare import): the module name


def static_url(datasette, filename: str) -> str:
    return datasette.urls.static_plugins(plugin_name(), filename)


#: the one stylesheet of our pages (and of the cards on Datasette's table and query pages)
STYLESHEET = "embeddings.css"


@functools.lru_cache(maxsize=8)
def _content_hash(filename: str) -> str:
    import hashlib

    with open(os.path.join(STATIC, filename), "rb") as fp:
        return hashlib.sha256(fp.read()).hexdigest()[:12]


def stylesheet_url(datasette) -> str:
    """Our stylesheet's URL with its content hash, as Datasette versions app.css: a new release is fetched anew."""
    return f"{static_url(datasette, STYLESHEET)}?{_content_hash(STYLESHEET)}"
