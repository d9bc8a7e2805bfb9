"""Opening SQLite connections that can run vec0.

Many Python builds (pyenv, macOS system Python) ship an ``sqlite3`` that cannot
load extensions.  Datasette and sqlite-utils prefer ``pysqlite3`` when it is
importable, so we do the same: one module decides which driver is used, and
every connection we open (CLI or Datasette) goes through :func:`load_vec`.
"""
from __future__ import annotations

import sqlite_vec

try:  # same preference order as Datasette and sqlite-utils
    import pysqlite3.dbapi2 as sqlite3  # type: ignore
except ImportError:  # pragma: no cover - depends on the platform
    import sqlite3  # type: ignore

__all__ = ["sqlite3", "ExtensionLoadingError", "load_vec", "connect", "check_extension_loading"]

INSTALL_HINT = (
    "datasette-embeddings needs a Python sqlite3 module that can load SQLite "
    "extensions (for sqlite-vec). This Python's sqlite3 cannot. Fix it with "
    "'pip install pysqlite3-binary' (Linux x86-64), or use a Python built with "
    "--enable-loadable-sqlite-extensions (python.org installers, Homebrew, conda)."
)


class ExtensionLoadingError(RuntimeError):
    """Raised when sqlite-vec cannot be loaded into a connection."""


def load_vec(conn) -> None:
    """Load sqlite-vec into ``conn``; idempotent so hooks may call it freely."""
    try:
        conn.execute("select vec_version()")
        return
    except Exception:
        pass
    if not hasattr(conn, "enable_load_extension"):
        raise ExtensionLoadingError(INSTALL_HINT)
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
    except Exception as ex:
        raise ExtensionLoadingError(f"{INSTALL_HINT} (loading sqlite-vec failed: {ex})") from ex
    finally:
        try:
            conn.enable_load_extension(False)
        except Exception:
            pass


def check_extension_loading() -> str:
    """Fail early, with the install hint, on a Python that cannot load sqlite-vec."""
    conn = sqlite3.connect(":memory:")
    try:
        load_vec(conn)
        return conn.execute("select vec_version()").fetchone()[0]
    finally:
        conn.close()


def connect(path: str, *, readonly: bool = False, immutable: bool = False, timeout: float = 30.0):
    """A connection with sqlite-vec loaded; ``readonly`` opens with ``mode=ro``.

    ``immutable`` opens with ``immutable=1``, as Datasette opens ``-i`` databases: SQLite
    then takes no locks and needs no ``-shm`` file, so it works on a read-only disk.
    """
    if readonly or immutable:
        mode = "immutable=1" if immutable else "mode=ro"
        conn = sqlite3.connect(f"file:{path}?{mode}", uri=True, timeout=timeout, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    conn.isolation_level = None  # we manage transactions explicitly
    load_vec(conn)
    return conn
