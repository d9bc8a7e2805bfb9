"""The plugin configuration, parsed once per Datasette instance and handed down.

Why one object: before it, two config classes, a module-global ``settings`` swapped
on every new connection, and the same key name (``warm``) meaning two things made
two Datasette instances in one process overwrite each other's settings.  Now the
``startup`` hook parses ``plugins: datasette-embeddings`` into a frozen
:class:`PluginConfig` (stored on that Datasette instance), every key is checked
with a message naming it, and the modules below receive the part they need as an
argument.  This module imports nothing of the package, so every layer may use it.

``metadata.yml``::

    plugins:
      datasette-embeddings:
        models:                      # stored model label -> llm model id
          clip-ViT-B-32: clip
        query_embedding: true        # false: embed_text / embed_image / search refuse
        allow_any_model: false       # true: SQL may name any installed llm model
        max_text_length: 1000        # characters
        max_upload_bytes: 10485760   # one image upload or embed_image() argument
        max_image_pixels: 40000000
        text_cache_size: 1024        # identical query texts are embedded once
        max_concurrent_decodes: 2    # image decodes at once in the process (each holds one canvas)
        warm_models: true            # start loading the query models at startup (in the background)
        wait_for_models: false       # true: startup waits until they are loaded
        fast_index:
          enabled: true
          build_at_startup: true
          max_memory_mb: 4096
          ann: true
          ann_threshold: 1500000
          ann_connectivity: 16
          ann_expansion_add: 128
          ann_expansion_search: 128
          ann_overfetch: 2
          blas_threads: 1
        judges:                      # who may judge links (a Datasette allow block)
          id: root
        links:
          on_the_fly: true
          on_the_fly_max_sources: 10000
        uploads:                     # a search request's body (web/uploads.py)
          max_parts: 16
          max_headers_per_part: 4
          max_header_bytes: 1024
          max_field_bytes: 8192
          max_overhead_bytes: 65536  # body limit = max_upload_bytes + this
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import ConfigError

PLUGIN_NAME = "datasette-embeddings"

#: one limit for an uploaded image, everywhere it is checked (10 MiB)
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

#: keys renamed in this version: the old name is refused with the new one in the message
RENAMED = {"warm": "warm_models", "max_image_bytes": "max_upload_bytes", "fast_index.warm": "fast_index.build_at_startup"}


@dataclass(frozen=True)
class EmbeddingConfig:
    """What concerns query-time embedding (SQL functions, the search page, ``embed``)."""

    models: Mapping[str, str] = field(default_factory=dict)
    query_embedding: bool = True
    allow_any_model: bool = False
    max_text_length: int = 1000
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    text_cache_size: int = 1024
    #: image decodes running at once in the process (embedding/images.py); more wait their turn
    max_concurrent_decodes: int = 2
    #: start loading every model a request may use at startup, in a background thread; false: a model
    #: starts loading when a request first needs it.  Requests never load weights themselves.
    warm_models: bool = True
    #: startup (and so the server's first answer) waits until those models are loaded or failed
    wait_for_models: bool = False


@dataclass(frozen=True)
class IndexSettings:
    """The in-memory similarity index (``search/memory_index.py``)."""

    enabled: bool = True
    build_at_startup: bool = True
    max_memory_mb: float = 4096.0
    ann: bool = True
    ann_threshold: int = 1_500_000
    ann_connectivity: int = 16
    ann_expansion_add: int = 128
    ann_expansion_search: int = 128
    ann_overfetch: int = 2
    #: BLAS threads for the server's matrix products (search/blas_threads.py); 0 keeps BLAS's default
    blas_threads: int = 1


@dataclass(frozen=True)
class LinksSettings:
    """The links page (``web/links_page.py``): computing links on the fly when none are stored."""

    on_the_fly: bool = True
    #: source records a page may link on the fly; more need ``datasette-embeddings links``
    on_the_fly_max_sources: int = 10_000


@dataclass(frozen=True)
class UploadSettings:
    """What one search request's body may hold (``web/uploads.py``); the image itself: ``max_upload_bytes``."""

    #: parts of a multipart form (the image and the search fields)
    max_parts: int = 16
    #: header lines of one part
    max_headers_per_part: int = 4
    #: bytes of one part header line (and of the request's Content-Type)
    max_header_bytes: int = 1024
    #: bytes of one text field
    max_field_bytes: int = 8 * 1024
    #: the form's fields, part headers and boundaries on top of the image: the whole body may be
    #: ``max_upload_bytes + max_overhead_bytes``
    max_overhead_bytes: int = 64 * 1024


#: the smallest value each number may take (everything else: 1)
_MINIMUM = {"text_cache_size": 0, "max_memory_mb": 0.0, "ann_threshold": 0, "blas_threads": 0}
#: the largest value, where a larger one would crash a library rather than be merely slow
_MAXIMUM = {"max_concurrent_decodes": 64, "ann_connectivity": 512, "ann_overfetch": 100, "ann_expansion_add": 100_000, "ann_expansion_search": 100_000}


@dataclass(frozen=True)
class PluginConfig:
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    fast_index: IndexSettings = field(default_factory=IndexSettings)
    links: LinksSettings = field(default_factory=LinksSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    #: who may judge links in the browser: a Datasette allow block (default: the root actor)
    judges: Any = field(default_factory=lambda: {"id": "root"})

    @classmethod
    def from_dict(cls, data: Any) -> "PluginConfig":
        """Check every key; unknown keys, wrong types and out-of-range numbers are errors naming the key."""
        where = f"plugins: {PLUGIN_NAME}"
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping of settings, got {type(data).__name__}")
        data = dict(data)
        judges = data.pop("judges", {"id": "root"})
        if not isinstance(judges, (Mapping, bool)) and judges is not None:
            raise ConfigError(f"{where}: judges must be an allow block such as {{id: [alice, bob]}}, or true or false, got {str(judges)[:60]!r}")
        block = _block(data, "fast_index", where)
        links = _block(data, "links", where)
        uploads = _block(data, "uploads", where)
        models = data.pop("models", None) or {}
        if not isinstance(models, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in models.items()
        ):
            raise ConfigError(f"{where}: models must map stored model labels to llm model ids (strings)")
        embedding = _section(EmbeddingConfig, data, where, "", models=dict(models))
        index = _section(IndexSettings, block, f"{where}: fast_index", "fast_index.")
        links_settings = _section(LinksSettings, links, f"{where}: links", "links.")
        upload_settings = _section(UploadSettings, uploads, f"{where}: uploads", "uploads.")
        return cls(embedding=embedding, fast_index=index, links=links_settings, uploads=upload_settings, judges=judges)

    @classmethod
    def from_datasette(cls, datasette) -> "PluginConfig":
        """Parse the instance's plugin block; a per-database block is refused (it was silently ignored)."""
        metadata = datasette.metadata() or {}
        for name, db_meta in (metadata.get("databases") or {}).items():
            if isinstance(db_meta, Mapping) and PLUGIN_NAME in (db_meta.get("plugins") or {}):
                raise ConfigError(
                    f"databases: {name}: plugins: {PLUGIN_NAME}: this plugin is configured for the whole "
                    f"instance; move the block to the top-level plugins: {PLUGIN_NAME}"
                )
        return cls.from_dict((metadata.get("plugins") or {}).get(PLUGIN_NAME))


def _block(data: dict, key: str, where: str) -> dict:
    block = data.pop(key, None)
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: {key} must be a mapping of settings, got {type(block).__name__}")
    return dict(block)


def _section(cls, data: dict, where: str, prefix: str, **given: Any):
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = dict(given)
    for key, value in data.items():
        if key not in known or key in given:
            renamed = RENAMED.get(prefix + str(key))
            hint = f" (renamed to '{renamed}')" if renamed else f" (known: {', '.join(k for k in known if k not in given)})"
            raise ConfigError(f"{where}: unknown setting '{key}'{hint}")
        default = known[key].default
        values[key] = _checked(where, key, value, default)
    return cls(**values)


def _checked(where: str, key: str, value: Any, default: Any) -> Any:
    name = f"{where}: {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if isinstance(default, int) and not (isinstance(value, int) or float(value).is_integer()):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    low = _MINIMUM.get(key, 1)
    high = _MAXIMUM.get(key)
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")
    return type(default)(value)


def for_datasette(datasette) -> PluginConfig:
    """The instance's configuration, parsed on first use (the ``startup`` hook) and kept on the instance."""
    config = datasette.__dict__.get("_datasette_embeddings_config")
    if config is None:
        config = PluginConfig.from_datasette(datasette)
        datasette.__dict__["_datasette_embeddings_config"] = config
    return config


def documented_keys() -> list[str]:
    """Every key the configuration accepts, for the README's self-check."""
    return (
        ["models"] + [f.name for f in fields(EmbeddingConfig) if f.name != "models"]
        + ["fast_index"] + ["fast_index." + f.name for f in fields(IndexSettings)]
        + ["links"] + ["links." + f.name for f in fields(LinksSettings)]
        + ["uploads"] + ["uploads." + f.name for f in fields(UploadSettings)]
        + ["judges"]
    )
