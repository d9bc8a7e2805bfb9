"""Embedding models: the llm registry, one object per model id, labels, limits and a text cache.

Every embedding this package makes goes through here, whether it is asked for in
SQL, by the search page or by ``datasette-embeddings embed``:

* models are looked up in the ``llm`` embedding-model registry by id or alias, so
  any llm plugin works (llm-clip, llm-sentence-transformers, remote APIs, and the
  built-in ``colour-layout-v1``);
* ``llm.get_embedding_model()`` builds a fresh object (and a local model reloads its
  weights) on every call, so we keep exactly one object per model id for the whole
  process and serialise calls into it with a per-model lock;
* stored model labels (what a Parquet file calls its model, e.g. ``clip-ViT-B-32``)
  map to llm model ids through plugin configuration first, then the ``models``
  table's ``llm_model_id`` column, then the label itself when llm knows it;
* images are decoded, bounded and normalised by :mod:`images` before any model sees
  them; texts and images always travel in separate batches.
"""
from __future__ import annotations

import atexit
import io
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import llm
import numpy as np

from ..config import PLUGIN_NAME, EmbeddingConfig
from ..errors import EmbeddingError, ModelLoadFailedError, ModelLoadingError
from . import colour_layout, images

BUILTIN_IMAGE_MODEL = colour_layout.MODEL_ID
#: images are handed to models at most this many pixels on the long side; every model
#: we know resizes far below this, and it keeps a 40-megapixel upload from costing seconds
MODEL_IMAGE_SIDE = 1024
#: after a miss, the registry is re-read at most this often (a plugin may have been registered)
REFRESH_INTERVAL = 5.0

log = logging.getLogger(__name__)


def require_enabled(config: EmbeddingConfig) -> None:
    """Refuse query-time embedding when the operator switched it off."""
    if not config.query_embedding:
        raise EmbeddingError(
            "query-time embedding is disabled on this instance "
            f"(plugins: {PLUGIN_NAME}: query_embedding: false)"
        )


# ---------------------------------------------------------------- the registry

class _Registry:
    """One llm model object per model id, found by id or alias, for the whole process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, llm.EmbeddingModel] = {}
        self._by_id: dict[str, llm.EmbeddingModel] = {}
        self.model_locks: dict[str, threading.Lock] = {}
        self._last_refresh = float("-inf")

    def _refresh(self) -> None:
        # llm builds new objects on each call; keep the ones we already hold so each
        # model id keeps a single object (and its loaded weights)
        by_id: dict[str, llm.EmbeddingModel] = {}
        by_name: dict[str, llm.EmbeddingModel] = {}
        for name, model in llm.get_embedding_model_aliases().items():
            held = by_id.get(model.model_id) or self._by_id.get(model.model_id) or model
            by_id[model.model_id] = held
            by_name[name] = held
            self.model_locks.setdefault(model.model_id, threading.Lock())
        self._by_id, self._by_name = by_id, by_name
        self._last_refresh = time.monotonic()

    def get(self, name: str) -> llm.EmbeddingModel:
        with self._lock:
            model = self._by_name.get(name)
            if model is None and time.monotonic() - self._last_refresh > (
                REFRESH_INTERVAL if self._by_name else -1
            ):
                self._refresh()
                model = self._by_name.get(name)
            if model is None:
                known = ", ".join(sorted(self._by_id)) or "none"
                raise EmbeddingError(
                    f"unknown embedding model '{name}': not an llm embedding model id or alias "
                    f"(installed: {known}) and not a configured model label"
                )
            return model

    def known(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except EmbeddingError:
            return False

    def reset(self) -> None:
        with self._lock:
            self._by_name.clear()
            self._by_id.clear()
            self.model_locks.clear()
            self._last_refresh = float("-inf")


_registry = _Registry()


def get_model(model_id: str) -> llm.EmbeddingModel:
    """The process-wide llm model object for an llm model id or alias."""
    return _registry.get(model_id)


def refresh() -> None:
    """Re-read llm's registry now (after registering a plugin), keeping the model objects held."""
    with _registry._lock:
        _registry._refresh()


def reset() -> None:
    """Forget every model object, its load state and cached vector (tests; after installing a plugin)."""
    _registry.reset()
    _loader.reset()
    _text_cache.clear()


def is_known(name: str) -> bool:
    """Whether llm has an embedding model with this id or alias."""
    return _registry.known(name)


def supports_text(model_id: str) -> bool:
    return bool(get_model(model_id).supports_text)


def supports_images(model_id: str) -> bool:
    return bool(get_model(model_id).supports_binary)


def is_available(model_id: str) -> bool:
    """Whether the model can embed here now (a registered model may still lack its packages)."""
    check = getattr(get_model(model_id), "is_available", None)
    return True if check is None else bool(check())


# ---------------------------------------------------------------- embedding

class _LRU:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value, size: int) -> None:
        if size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_text_cache = _LRU()


def _run(model_id: str, items: Sequence[str | bytes]) -> list[np.ndarray]:
    """Call the model (under its lock: lazy weight loading and torch are not re-entrant)."""
    model = get_model(model_id)
    lock = _registry.model_locks.setdefault(model.model_id, threading.Lock())
    try:
        with lock:
            raw = list(model.embed_multi(items, batch_size=len(items) or 1))
    except EmbeddingError:
        raise
    except Exception as ex:
        raise EmbeddingError(f"model '{model_id}' failed to embed: {type(ex).__name__}: {ex}") from ex
    vectors = []
    for values in raw:
        vector = np.asarray(values, dtype="<f4").ravel()
        if vector.size == 0 or not np.isfinite(vector).all():
            raise EmbeddingError(f"model '{model_id}' returned an empty or non-finite vector")
        vectors.append(vector)
    if len(vectors) != len(items):
        raise EmbeddingError(f"model '{model_id}' returned {len(vectors)} vectors for {len(items)} items")
    return vectors


def _check_text(model_id: str, text: Any, config: EmbeddingConfig | None) -> str:
    if not isinstance(text, str):
        raise EmbeddingError(f"text to embed must be text, got {type(text).__name__}")
    if not text.strip():
        raise EmbeddingError("text to embed is empty")
    if config is not None and len(text) > config.max_text_length:
        raise EmbeddingError(
            f"text is {len(text):,} characters; at most {config.max_text_length:,} are allowed "
            f"(plugins: {PLUGIN_NAME}: max_text_length)"
        )
    if not supports_text(model_id):
        raise EmbeddingError(f"model '{model_id}' cannot embed text (it embeds images only)")
    return text


def embed_text(model_id: str, text: str, *, config=None) -> np.ndarray:
    """One text's vector; with ``config`` (query time) its switch and limits apply.

    ``config`` is the instance's :class:`EmbeddingConfig`; None means an
    offline caller with no query limits, which loads the model's weights itself if
    needed (the CLI); with it the model must already be loaded (:func:`require_loaded`).  Identical texts for the same model come from
    an LRU cache: search pages and repeated SQL queries ask for the same phrase over and over.
    """
    if config is not None:
        require_enabled(config)
    _check_text(model_id, text, config)
    key = (get_model(model_id).model_id, text)
    cached = _text_cache.get(key)
    if cached is not None:
        return cached
    if config is not None:
        require_loaded(model_id)  # query time: never load weights here
    vector = _run(model_id, [text])[0]
    vector.flags.writeable = False
    _text_cache.put(key, vector, (config or EmbeddingConfig()).text_cache_size)
    return vector


def embed_texts(model_id: str, texts: Sequence[str]) -> list[np.ndarray]:
    """Vectors for a batch of texts (offline use: no query limits, no cache)."""
    checked = [_check_text(model_id, t, None) for t in texts]
    return _run(model_id, checked) if checked else []


def prepare_image(data: bytes, config: EmbeddingConfig | None = None, *, name: str = "image") -> bytes:
    """Image bytes as every model should get them: bounded, RGB, upright, lossless PNG."""
    config = config or EmbeddingConfig()
    if isinstance(data, str):
        raise EmbeddingError(
            f"{name}: expected image bytes (a BLOB), got text; embed_image never reads files or URLs"
        )
    try:
        image = images.load_image(
            data, max_bytes=config.max_upload_bytes, max_pixels=config.max_image_pixels, name=name,
            max_side=MODEL_IMAGE_SIDE, max_concurrent_decodes=config.max_concurrent_decodes,
        )
    except images.ImageError as ex:
        raise EmbeddingError(str(ex)) from None
    if max(image.size) > MODEL_IMAGE_SIDE:
        image.thumbnail((MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _check_images_supported(model_id: str) -> None:
    if not supports_images(model_id):
        raise EmbeddingError(f"model '{model_id}' cannot embed images (it embeds text only)")


def embed_image(model_id: str, data: bytes, *, config=None) -> np.ndarray:
    """One image's vector; with ``config`` (the instance's :class:`EmbeddingConfig`) its switch and limits apply."""
    if config is not None:
        require_enabled(config)
    _check_images_supported(model_id)
    if config is not None:
        require_loaded(model_id)  # query time: never load weights here, and answer before decoding
    return _run(model_id, [prepare_image(data, config)])[0]


def embed_images(model_id: str, items: Sequence[bytes]) -> list[np.ndarray]:
    """Vectors for a batch of image bytes (already checked with :func:`prepare_image`)."""
    _check_images_supported(model_id)
    return _run(model_id, list(items)) if items else []


# ---------------------------------------------------------------- loading weights, never in a request

_WARM_IMAGE_SIZE = 32
#: what a request is told to wait (``Retry-After``) while its model loads
RETRY_AFTER_SECONDS = 5
LOADER_THREAD_NAME = "datasette-embeddings-model-loader"


def needs_loading(model: llm.EmbeddingModel) -> bool:
    """Whether a model has weights to load before it answers; a model without says ``loads_weights = False``."""
    return getattr(model, "loads_weights", True) is not False


def _load(model_id: str) -> str | None:
    """Load one model's weights by embedding a throwaway input; the error (its cause), or None."""
    from PIL import Image

    try:
        if supports_text(model_id):
            _run(model_id, ["warm-up"])
        elif supports_images(model_id):
            blank = io.BytesIO()
            Image.new("RGB", (_WARM_IMAGE_SIZE, _WARM_IMAGE_SIZE), (128, 128, 128)).save(blank, format="PNG")
            _run(model_id, [blank.getvalue()])
        return None
    except Exception as ex:  # a broken model must not stop Datasette from starting
        log.warning("datasette-embeddings: could not load model %s: %s", model_id, ex)
        return str(ex) or type(ex).__name__


class _Loader:
    """Loads query models' weights in one background thread, one model at a time.

    A request never loads weights: loading a local model takes seconds to minutes
    (a download, torch moving gigabytes) and, done inside a request, it held a SQL
    thread past the time limit and every other request for that model behind its
    lock.  So the server's models load here, started at startup
    (:func:`load_in_background`), and a request asks :func:`require_loaded`, which
    only reads the state: ``queued`` or ``loading`` is a quick "try again" (and a
    model nobody asked for yet is queued by that first request), ``failed`` is an
    error carrying the cause, not retried until a restart (a load that failed
    once, a missing download or a broken package, fails again).  The state is the
    process's, like the model objects it describes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.states: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._queue: list[str] = []
        self._thread: threading.Thread | None = None
        self._generation = 0
        self.stopping = False

    def request(self, model_ids: Iterable[str]) -> None:
        """Queue the models not asked for yet; start the thread when it is not running."""
        with self._lock:
            for model_id in model_ids:
                if model_id not in self.states:
                    self.states[model_id] = "queued"
                    self._queue.append(model_id)
            if self._queue and not self.stopping and (self._thread is None or not self._thread.is_alive()):
                thread = threading.Thread(target=self._run, args=(self._generation,), name=LOADER_THREAD_NAME, daemon=True)
                self._thread = thread
                thread.start()
                join_at_exit(thread)

    def _run(self, generation: int) -> None:
        while True:
            with self._lock:
                if self.stopping or generation != self._generation or not self._queue:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    self._changed.notify_all()
                    return
                model_id = self._queue.pop(0)
                self.states[model_id] = "loading"
            error = _load(model_id)
            with self._lock:
                if generation == self._generation:  # not forgotten meanwhile (reset)
                    self.states[model_id] = "failed" if error else "ready"
                    if error:
                        self.errors[model_id] = error
                self._changed.notify_all()

    def state(self, model_id: str) -> tuple[str | None, str | None]:
        with self._lock:
            return self.states.get(model_id), self.errors.get(model_id)

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {m: {"state": s, **({"error": self.errors[m]} if m in self.errors else {})} for m, s in self.states.items()}

    def wait(self, model_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
        """Until the models (default: all asked for) are loaded or failed; False on timeout."""
        wanted = None if model_ids is None else list(model_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                ids = self.states if wanted is None else wanted
                if not any(self.states.get(m) in ("queued", "loading") for m in ids):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self.states.clear()
            self.errors.clear()
            self._queue.clear()
            self._thread = None
            self._changed.notify_all()

    def stop(self) -> None:
        """At exit: load nothing more after the current model."""
        with self._lock:
            self.stopping = True
            self._queue.clear()


_loader = _Loader()


def require_loaded(name: str) -> None:
    """Return at once when the model behind ``name`` can embed now; else a quick error naming it.

    :class:`ModelLoadingError` while it loads (a model not asked for yet is queued by this
    call), :class:`ModelLoadFailedError` with the cause when its load failed.  Never loads.
    """
    model = get_model(name)
    if not needs_loading(model):
        return
    state, error = _loader.state(model.model_id)
    if state == "ready":
        return
    shown = name if name == model.model_id else f"{name}' (llm model '{model.model_id}"
    if state == "failed":
        raise ModelLoadFailedError(
            f"model '{shown}' could not be loaded on this server: {error}. It is not tried again until the "
            "server restarts", model=name,
        )
    _loader.request([model.model_id])
    raise ModelLoadingError(
        f"model '{shown}' is still loading in the background (weights are never loaded inside a request); "
        f"try again in a few seconds", model=name, retry_after=RETRY_AFTER_SECONDS,
    )


def load_state(name: str) -> dict:
    """``{"state": ready | queued | loading | failed | not started, "error"?}`` of the model behind ``name``."""
    model = get_model(name)
    if not needs_loading(model):
        return {"state": "ready"}
    state, error = _loader.state(model.model_id)
    return {"state": state or "not started", **({"error": error} if error else {})}


def load_states() -> dict[str, dict]:
    """``{llm model id: {"state": queued | loading | ready | failed, "error"?}}`` for the models asked for."""
    return _loader.snapshot()


def wait_for_loads(model_ids: Iterable[str] | None = None, timeout: float | None = None) -> bool:
    """Block until the models (default: every one asked for) are loaded or failed; False on timeout."""
    ids = None if model_ids is None else [_canonical(m) for m in model_ids]
    return _loader.wait(ids, timeout)


def _canonical(name: str) -> str:
    try:
        return get_model(name).model_id
    except EmbeddingError:
        return name


def import_plugins() -> bool:
    """Import llm's plugins now (before Datasette serves); False when llm's registry cannot be read.

    Loading llm's plugins can take seconds (llm-clip imports torch), and importing
    a large extension module holds the GIL throughout: done in a background thread
    after the server started listening, it froze every request for 9 to 14 s
    (benchmarks/http_load.py).  So the plugins are imported before Datasette
    serves, and only the models' weights load in the background.
    """
    try:
        refresh()
        return True
    except Exception as ex:  # pragma: no cover - a broken llm plugin
        log.warning("datasette-embeddings: could not read llm's embedding models: %s", ex)
        return False


def load_in_background(model_ids: Iterable[str]) -> list[str]:
    """Start loading these models' weights in the loader thread (one at a time); the llm ids queued.

    Unknown names are queued too: their load fails at once, with the runtime's message
    listing the installed models, and requests for them say so.
    """
    ids = [_canonical(m) for m in dict.fromkeys(model_ids)]
    ids = [m for m in ids if not (is_known(m) and not needs_loading(get_model(m)))]
    _loader.request(ids)
    return ids


# ---------------------------------------------------------------- shutdown

#: how long the interpreter's exit waits for a model thread to finish its current call
EXIT_JOIN_SECONDS = 120.0
_exit_threads: list[threading.Thread] = []
_exit_lock = threading.Lock()


def join_at_exit(thread: threading.Thread) -> None:
    """Let ``thread`` finish before the interpreter exits.

    A daemon thread still inside torch when Python finalises aborts the process
    ("terminate called without an active exception", exit code 134): ``datasette
    ... --get`` answers its one request while the loader thread is loading or running a
    model, then exits.  The thread stays a daemon (a slow download cannot hold a
    server's Ctrl-C hostage for longer than :data:`EXIT_JOIN_SECONDS`), but exit
    waits for it; its work is one model call, so it ends soon.
    """
    with _exit_lock:
        if not _exit_threads:
            atexit.register(_join_exit_threads)
        _exit_threads[:] = [t for t in _exit_threads if t.is_alive()] + [thread]


def _join_exit_threads() -> None:
    _loader.stop()
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for thread in list(_exit_threads):
        thread.join(max(0.0, deadline - time.monotonic()))
