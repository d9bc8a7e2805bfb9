"""The plugin configuration: parsed once per Datasette instance, every key checked and named."""
import asyncio

import pytest
from datasette.app import Datasette

from datasette_embeddings import config
from datasette_embeddings.config import EmbeddingConfig, IndexSettings, PluginConfig, UploadSettings
from datasette_embeddings.errors import ConfigError


def test_defaults_and_values():
    parsed = PluginConfig.from_dict(
        {"models": {"clip-ViT-B-32": "clip"}, "query_embedding": False, "max_text_length": 50, "text_cache_size": 0,
         "fast_index": {"max_memory_mb": 20, "ann_threshold": 1000}}
    )
    assert parsed.embedding.models == {"clip-ViT-B-32": "clip"}
    assert parsed.embedding.query_embedding is False and parsed.embedding.max_text_length == 50
    assert parsed.embedding.text_cache_size == 0
    assert parsed.fast_index.max_memory_mb == 20.0 and parsed.fast_index.ann_threshold == 1000
    assert PluginConfig.from_dict(None) == PluginConfig() == PluginConfig.from_dict({})


@pytest.mark.parametrize(
    "data,message",
    [
        ({"models": ["clip"]}, "models must map stored model labels"),
        ({"models": {"a": 3}}, "models must map stored model labels"),
        ({"query_embedding": "no"}, "query_embedding must be true or false"),
        ({"max_text_length": 0}, "max_text_length must be >= 1"),
        ({"max_upload_bytes": "10MB"}, "max_upload_bytes must be a number"),
        ({"max_image_pixels": True}, "max_image_pixels must be a number"),
        ({"max_text_length": 10.5}, "max_text_length must be a whole number"),
        ({"mdoels": {}}, "unknown setting 'mdoels'"),
        ({"warm": True}, "unknown setting 'warm' \\(renamed to 'warm_models'\\)"),
        ({"max_image_bytes": 10}, "renamed to 'max_upload_bytes'"),
        ({"fast_index": {"warm": False}}, "fast_index: unknown setting 'warm' \\(renamed to 'fast_index.build_at_startup'\\)"),
        ({"fast_index": {"nope": 1}}, "fast_index: unknown setting 'nope'"),
        ({"fast_index": {"ann_threshold": "many"}}, "fast_index: ann_threshold must be a number"),
        ({"fast_index": {"max_memory_mb": -1}}, "fast_index: max_memory_mb must be >= 0"),
        ({"fast_index": {"max_memory_mb": True}}, "fast_index: max_memory_mb must be a number"),
        ({"fast_index": {"max_memory_mb": float("nan")}}, "fast_index: max_memory_mb must be a finite number"),
        ({"fast_index": {"ann_threshold": 1.5}}, "fast_index: ann_threshold must be a whole number"),
        ({"fast_index": {"ann_connectivity": 0}}, "fast_index: ann_connectivity must be from 1 to 512"),
        ({"fast_index": {"enabled": "yes"}}, "fast_index: enabled must be true or false"),
        ({"fast_index": [1]}, "fast_index must be a mapping"),
        (["models"], "must be a mapping of settings, got list"),
        ("on", "must be a mapping of settings, got str"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        PluginConfig.from_dict(data)


def test_every_setting_has_a_default_that_passes_its_own_check():
    # the defaults are what an empty block gives, so they must be valid values themselves
    for section, prefix in ((EmbeddingConfig(), ""), (IndexSettings(), "fast_index"), (UploadSettings(), "uploads")):
        for key, value in vars(section).items():
            if key == "models":
                continue
            data = {key: value} if not prefix else {prefix: {key: value}}
            PluginConfig.from_dict(data)


def test_a_database_level_block_is_refused_not_ignored():
    ds = Datasette(memory=True, metadata={"databases": {"collection": {"plugins": {"datasette-embeddings": {"models": {}}}}}})
    with pytest.raises(ConfigError, match="databases: collection: plugins: datasette-embeddings: .*top-level"):
        config.for_datasette(ds)


def test_a_bad_key_stops_datasette_at_startup():
    ds = Datasette(memory=True, metadata={"plugins": {"datasette-embeddings": {"fast_index": {"ann_connectivity": 0}}}})
    with pytest.raises(ConfigError, match="ann_connectivity"):
        asyncio.run(ds.invoke_startup())


def test_two_instances_in_one_process_keep_their_own_settings():
    a = Datasette(memory=True, metadata={"plugins": {"datasette-embeddings": {"fast_index": {"max_memory_mb": 10}}}})
    b = Datasette(memory=True, metadata={"plugins": {"datasette-embeddings": {"fast_index": {"max_memory_mb": 99}}}})
    assert config.for_datasette(a).fast_index.max_memory_mb == 10
    assert config.for_datasette(b).fast_index.max_memory_mb == 99
    # parsed once: the same object on every later call
    assert config.for_datasette(a) is config.for_datasette(a)
    assert config.for_datasette(a).fast_index.max_memory_mb == 10
