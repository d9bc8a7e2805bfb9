"""SQL functions whose errors keep their message.

Python's ``sqlite3`` turns every exception raised inside a user-defined function
into the same ``user-defined function raised exception``, so a visitor who typed
the wrong model name would never learn why the query failed.  SQLite itself can
carry any message (``sqlite3_result_error``); this module registers functions
through the SQLite C API with ctypes so that an exception's text becomes the SQL
error text.  Where that is not possible (an unknown driver, a library that does
not export the API), it falls back to ``create_function``: the query still fails,
only with the generic message.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

SQLITE_UTF8 = 1
SQLITE_DETERMINISTIC = 0x800
SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL = 1, 2, 3, 4, 5
SQLITE_TRANSIENT = ctypes.c_void_p(-1)

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p))

# the Python callables live here while SQLite holds them; SQLite gets their key as user data
# and calls _DESTROY with it when the function goes (its connection closes, or it is replaced),
# so a connection's closures do not outlive it
_functions: dict[int, Callable[..., Any]] = {}
_functions_lock = threading.Lock()
_next_key = [0]


def _new_key() -> int:
    """A fresh user-data key (never 0: user data 0 would read back as NULL); call under the lock."""
    _next_key[0] += 1
    return _next_key[0]


def _forget(user_data) -> None:
    try:
        with _functions_lock:
            _functions.pop(user_data or 0, None)
            _aggregates.pop(user_data or 0, None)
    except (AttributeError, TypeError, NameError):  # a connection closed while the interpreter shuts down (globals gone)
        pass


_DESTROY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_forget)
_apis: dict[str, Any] = {}


def _driver(conn) -> str | None:
    """"pysqlite3" or "sqlite3" when ``conn`` is (a subclass of) that driver's C Connection type.

    Only that type has the memory layout :func:`_db_handle` reads.
    """
    for base in type(conn).__mro__:
        root = base.__module__.split(".")[0]
        if base.__name__ == "Connection" and root in ("pysqlite3", "sqlite3"):
            return root
    return None


def _api_for(module_name: str):
    """The SQLite library of a driver (pysqlite3 bundles its own copy), or None."""
    if module_name in _apis:
        return _apis[module_name]
    api = None
    try:
        extension = importlib.import_module("pysqlite3._sqlite3" if module_name == "pysqlite3" else "_sqlite3")
        lib = ctypes.CDLL(extension.__file__)
        vp, ci = ctypes.c_void_p, ctypes.c_int
        lib.sqlite3_create_function_v2.argtypes = [vp, ctypes.c_char_p, ci, ci, vp, _CALLBACK, vp, vp, vp]
        lib.sqlite3_create_function_v2.restype = ci
        lib.sqlite3_user_data.argtypes = [vp]
        lib.sqlite3_user_data.restype = vp
        lib.sqlite3_value_type.argtypes = [vp]
        for name, restype in (("sqlite3_value_blob", vp), ("sqlite3_value_text", vp), ("sqlite3_value_bytes", ci),
                              ("sqlite3_value_int64", ctypes.c_int64), ("sqlite3_value_double", ctypes.c_double)):
            getattr(lib, name).argtypes = [vp]
            getattr(lib, name).restype = restype
        lib.sqlite3_result_error.argtypes = [vp, ctypes.c_char_p, ci]
        lib.sqlite3_result_blob.argtypes = [vp, ctypes.c_char_p, ci, vp]
        lib.sqlite3_result_text.argtypes = [vp, ctypes.c_char_p, ci, vp]
        lib.sqlite3_result_double.argtypes = [vp, ctypes.c_double]
        lib.sqlite3_result_int64.argtypes = [vp, ctypes.c_int64]
        lib.sqlite3_result_null.argtypes = [vp]
        lib.sqlite3_total_changes.argtypes = [vp]
        api = lib
    except Exception as ex:  # pragma: no cover - depends on the platform
        log.info("SQL function errors will be generic (no SQLite C API through ctypes: %s)", ex)
    _apis[module_name] = api
    return api


def _db_handle(conn, api) -> int | None:
    """The ``sqlite3*`` inside a CPython/pysqlite3 Connection (its first field after the object header)."""
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not handle or api.sqlite3_total_changes(handle) != conn.total_changes:
        return None  # not the layout we expect: do not touch it
    return handle


def _read_args(api, argc: int, argv) -> list[Any]:
    args: list[Any] = []
    for i in range(argc):
        value = argv[i]
        kind = api.sqlite3_value_type(value)
        if kind == SQLITE_INTEGER:
            args.append(api.sqlite3_value_int64(value))
        elif kind == SQLITE_FLOAT:
            args.append(api.sqlite3_value_double(value))
        elif kind == SQLITE_TEXT:
            pointer = api.sqlite3_value_text(value)
            args.append(ctypes.string_at(pointer, api.sqlite3_value_bytes(value)).decode("utf-8", "replace"))
        elif kind == SQLITE_BLOB:
            pointer = api.sqlite3_value_blob(value)
            size = api.sqlite3_value_bytes(value)
            args.append(ctypes.string_at(pointer, size) if size else b"")
        else:
            args.append(None)
    return args


def _set_result(api, ctx, result: Any) -> None:
    if result is None:
        api.sqlite3_result_null(ctx)
    elif isinstance(result, (bytes, bytearray, memoryview)):
        data = bytes(result)
        api.sqlite3_result_blob(ctx, data, len(data), SQLITE_TRANSIENT)
    elif isinstance(result, str):
        data = result.encode("utf-8")
        api.sqlite3_result_text(ctx, data, len(data), SQLITE_TRANSIENT)
    elif isinstance(result, bool) or isinstance(result, int):
        api.sqlite3_result_int64(ctx, int(result))
    elif isinstance(result, float):
        api.sqlite3_result_double(ctx, result)
    else:
        raise TypeError(f"SQL functions cannot return {type(result).__name__}")


def _make_callback(api) -> Any:
    def callback(ctx, argc, argv):
        function = _functions[api.sqlite3_user_data(ctx)]
        try:
            _set_result(api, ctx, function(*_read_args(api, argc, argv)))
        except Exception as ex:
            api.sqlite3_result_error(ctx, str(ex).encode("utf-8", "replace"), -1)

    return _CALLBACK(callback)


_callbacks: dict[int, Any] = {}  # one C callback per library, alive for the whole process


def create_function(conn, name: str, narg: int, function: Callable[..., Any], *, deterministic: bool = False) -> None:
    """Like ``conn.create_function`` but an exception's message becomes the SQL error message."""
    driver = _driver(conn)
    api = _api_for(driver) if driver else None
    handle = _db_handle(conn, api) if api is not None else None
    if handle is None:
        conn.create_function(name, narg, function, deterministic=deterministic)
        return
    with _functions_lock:
        callback = _callbacks.get(id(api))
        if callback is None:
            callback = _callbacks[id(api)] = _make_callback(api)
        key = _new_key()
        _functions[key] = function
    flags = SQLITE_UTF8 | (SQLITE_DETERMINISTIC if deterministic else 0)
    destroy = ctypes.cast(_DESTROY, ctypes.c_void_p)
    rc = api.sqlite3_create_function_v2(handle, name.encode(), narg, flags, key, callback, None, None, destroy)
    if rc != 0:  # SQLite has called _DESTROY for the key already
        conn.create_function(name, narg, function, deterministic=deterministic)


# ---------------------------------------------------------------- aggregates
_FINAL = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_aggregates: dict[int, Callable[[], Any]] = {}  # factories, keyed like _functions (and forgotten the same way)
_states: dict[int, Any] = {}  # one live state per group being aggregated, keyed by the id in its context
_next_state = [0]
_aggregate_callbacks: dict[int, tuple[Any, Any, Any]] = {}


def _aggregate_api(api):
    """``(create_function_v2 taking step/final pointers, step callback, final callback)`` for one library."""
    found = _aggregate_callbacks.get(id(api))
    if found:
        return found
    vp, ci = ctypes.c_void_p, ctypes.c_int
    create = ctypes.CFUNCTYPE(ci, vp, ctypes.c_char_p, ci, ci, vp, vp, _CALLBACK, _FINAL, vp)(
        ("sqlite3_create_function_v2", api)
    )
    api.sqlite3_aggregate_context.argtypes = [vp, ci]
    api.sqlite3_aggregate_context.restype = vp

    def state_of(ctx, create_it: bool):
        pointer = api.sqlite3_aggregate_context(ctx, 8 if create_it else 0)
        if not pointer:
            return None, None
        slot = ctypes.c_int64.from_address(pointer)
        if slot.value == 0:
            if not create_it:
                return None, None
            with _functions_lock:
                _next_state[0] += 1
                slot.value = _next_state[0]
                _states[slot.value] = _aggregates[api.sqlite3_user_data(ctx)]()
        return slot.value, _states.get(slot.value)

    def step(ctx, argc, argv):
        try:
            _key, state = state_of(ctx, True)
            state.step(*_read_args(api, argc, argv))
        except Exception as ex:
            api.sqlite3_result_error(ctx, str(ex).encode("utf-8", "replace"), -1)

    def final(ctx):
        key, state = state_of(ctx, False)
        if key is not None:
            with _functions_lock:
                _states.pop(key, None)
        try:
            if state is None:  # no rows: a fresh state says what an empty group gives
                state = _aggregates[api.sqlite3_user_data(ctx)]()
            _set_result(api, ctx, state.finalize())
        except Exception as ex:
            api.sqlite3_result_error(ctx, str(ex).encode("utf-8", "replace"), -1)

    found = _aggregate_callbacks[id(api)] = (create, _CALLBACK(step), _FINAL(final))
    return found


def create_aggregate(conn, name: str, narg: int, factory: Callable[[], Any]) -> None:
    """Like ``conn.create_aggregate`` (``factory()`` has ``step`` and ``finalize``), keeping error messages."""
    driver = _driver(conn)
    api = _api_for(driver) if driver else None
    handle = _db_handle(conn, api) if api is not None else None
    if handle is None:
        conn.create_aggregate(name, narg, factory)
        return
    create, step, final = _aggregate_api(api)
    with _functions_lock:
        key = _new_key()
        _aggregates[key] = factory
    rc = create(handle, name.encode(), narg, SQLITE_UTF8, key, None, step, final, ctypes.cast(_DESTROY, ctypes.c_void_p))
    if rc != 0:
        conn.create_aggregate(name, narg, factory)
