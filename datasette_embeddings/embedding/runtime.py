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
from ..errors import EmbeddingError
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
    """Forget every model object and cached vector (tests; after installing a plugin)."""
    _registry.reset()
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
    offline caller with no query limits.  Identical texts for the same model come from
    an LRU cache: search pages and repeated SQL queries ask for the same phrase over and over.
    """
    if config is not None:
        require_enabled(config)
    _check_text(model_id, text, config)
    key = (get_model(model_id).model_id, text)
    cached = _text_cache.get(key)
    if cached is not None:
        return cached
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
    return _run(model_id, [prepare_image(data, config)])[0]


def embed_images(model_id: str, items: Sequence[bytes]) -> list[np.ndarray]:
    """Vectors for a batch of image bytes (already checked with :func:`prepare_image`)."""
    _check_images_supported(model_id)
    return _run(model_id, list(items)) if items else []


# ---------------------------------------------------------------- warm-up

_WARM_IMAGE_SIZE = 32


def warm(model_ids: Iterable[str]) -> dict[str, str | None]:
    """Load each model's weights now, so the first visitor does not wait; returns errors by id."""
    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (_WARM_IMAGE_SIZE, _WARM_IMAGE_SIZE), (128, 128, 128)).save(blank, format="PNG")
    results: dict[str, str | None] = {}
    for model_id in dict.fromkeys(model_ids):
        try:
            if supports_text(model_id):
                _run(model_id, ["warm-up"])
            elif supports_images(model_id):
                _run(model_id, [blank.getvalue()])
            results[model_id] = None
        except Exception as ex:  # a broken model must not stop Datasette from starting
            log.warning("datasette-embeddings: could not warm model %s: %s", model_id, ex)
            results[model_id] = str(ex)
    return results


def load_models_in_background(config: EmbeddingConfig) -> threading.Thread | None:
    """Load llm's plugins now, then start a daemon thread that loads the configured models.

    Loading llm's plugins can take seconds (llm-clip imports torch), and importing
    a large extension module holds the GIL throughout: done in a background thread
    after the server started listening, it froze every request for 9 to 14 s
    (benchmarks/http_load.py).  So the plugins are imported before Datasette
    serves, and only the models' weights load in the background.
    """
    if not config.query_embedding:
        return None
    ids = list(dict.fromkeys(config.models.values())) if config.warm_models else []
    try:
        refresh()
    except Exception as ex:  # pragma: no cover - a broken llm plugin
        log.warning("datasette-embeddings: could not read llm's embedding models: %s", ex)
        return None

    def run() -> None:
        warm(ids)

    thread = threading.Thread(target=run, name="datasette-embeddings-warm", daemon=True)
    thread.start()
    join_at_exit(thread)
    return thread


# ---------------------------------------------------------------- shutdown

#: how long the interpreter's exit waits for a model thread to finish its current call
EXIT_JOIN_SECONDS = 120.0
_exit_threads: list[threading.Thread] = []
_exit_lock = threading.Lock()


def join_at_exit(thread: threading.Thread) -> None:
    """Let ``thread`` finish before the interpreter exits.

    A daemon thread still inside torch when Python finalises aborts the process
    ("terminate called without an active exception", exit code 134): ``datasette
    ... --get`` answers its one request while the warm-up is loading or running a
    model, then exits.  The thread stays a daemon (a slow download cannot hold a
    server's Ctrl-C hostage for longer than :data:`EXIT_JOIN_SECONDS`), but exit
    waits for it; its work is one model call, so it ends soon.
    """
    with _exit_lock:
        if not _exit_threads:
            atexit.register(_join_exit_threads)
        _exit_threads[:] = [t for t in _exit_threads if t.is_alive()] + [thread]


def _join_exit_threads() -> None:
    deadline = time.monotonic() + EXIT_JOIN_SECONDS
    for thread in list(_exit_threads):
        thread.join(max(0.0, deadline - time.monotonic()))
