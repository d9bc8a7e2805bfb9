"""The real llm-clip plugin, run offline on a tiny random-weight CLIP staged in the HF cache."""
import os

import llm
import numpy as np
import pytest
from datasette.app import Datasette

from datasette_embeddings.files import harvest as embed
from datasette_embeddings.files import loader
from datasette_embeddings.embedding import runtime as models
from datasette_embeddings.sql import functions as sql_functions
from datasette_embeddings.config import EmbeddingConfig, PluginConfig
from datasette_embeddings.storage.connection import connect
from tests import tiny_clip
from tests.conftest import TEST_DATA

pytest.importorskip("llm_clip")


@pytest.fixture(scope="module")
def clip_staged():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return tiny_clip.stage(os.environ["HF_HOME"])


@pytest.fixture(scope="module")
def clip_db(clip_staged, tmp_path_factory):
    """The real images embedded with llm-clip by ``embed``, stored under the hub label, loaded from Parquet."""
    folder = tmp_path_factory.mktemp("clip")
    parquet = folder / "clip.parquet"
    report = embed.embed_to_parquet(
        str(TEST_DATA / "images"), str(parquet), model_id="clip", label="clip-ViT-B-32", provider="shared"
    )
    assert report.written == 6
    db = folder / "clip.db"
    loader.load(str(db), [str(parquet)])
    return db


def test_llm_clip_text_and_image_vectors_have_the_same_length(clip_staged, data_dir):
    model = llm.get_embedding_model("clip")  # llm-clip's own object, its own SentenceTransformer load
    text = model.embed("a ship at sea in a storm")
    image = model.embed((data_dir / "images" / "SK-C-5.jpg").read_bytes())
    assert len(text) == len(image) == tiny_clip.PROJECTION_DIM
    assert models.supports_text("clip") and models.supports_images("clip")
    ours = models.embed_text("clip", "a ship at sea in a storm")
    np.testing.assert_allclose(ours, text, rtol=1e-4, atol=1e-6)


def test_embed_image_in_sql_feeds_a_vec0_knn(clip_db, data_dir):
    conn = connect(str(clip_db))
    sql_functions.register_functions(conn, PluginConfig(embedding=EmbeddingConfig(models={"clip-ViT-B-32": "clip"})))
    # as a server does at startup: SQL functions never load weights, the loader thread does
    models.load_in_background(["clip"])
    assert models.wait_for_loads(["clip"], timeout=300)
    (table, dims) = conn.execute("select vec_table, dimensions from models where label = 'clip-ViT-B-32'").fetchone()
    assert dims == tiny_clip.PROJECTION_DIM
    query = (data_dir / "images" / "DP259541.jpg").read_bytes()
    rows = conn.execute(
        f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
        "where v.embedding match embed_image('clip-ViT-B-32', ?) and k = 4 order by v.distance",
        [query],
    ).fetchall()
    assert len(rows) == 4
    assert rows[0][0] == "DP259541" and rows[0][1] == pytest.approx(0.0, abs=1e-4)
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    conn.close()


@pytest.mark.asyncio
async def test_text_search_through_datasette(clip_db):
    ds = Datasette([str(clip_db)], metadata={"plugins": {"datasette-embeddings": {"models": {"clip-ViT-B-32": "clip"}}}})
    conn = connect(str(clip_db))
    table = conn.execute("select vec_table from models where label = 'clip-ViT-B-32'").fetchone()[0]
    conn.close()
    response = await ds.client.get(
        "/clip.json",
        params={
            "sql": f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
            "where v.embedding match embed_text('clip-ViT-B-32', :q) and k = 5",
            "q": "a portrait of a woman at a window",
            "_shape": "array",
        },
    )
    assert response.status_code == 200, response.text
    rows = response.json()
    assert len(rows) == 5 and all(0 <= r["distance"] <= 2 for r in rows)
