import io
import json

import numpy as np
import pytest
from datasette.app import Datasette
from PIL import Image

from datasette_embeddings.files import harvest as embed
from datasette_embeddings.files import loader
from datasette_embeddings.embedding import runtime as models
from datasette_embeddings.sql import functions as sql_functions
from datasette_embeddings.config import EmbeddingConfig, PluginConfig
from datasette_embeddings.errors import ConfigError
from datasette_embeddings.storage.connection import connect, sqlite3
from datasette_embeddings.storage.store import Store
from datasette_embeddings.storage.vectors import from_blob
from tests.conftest import TEST_DATA
from tests.fake_model import FakeCountingModel, registered

RIJKS_PRINTS = {"RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487"}


def png(size=(8, 8), colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def images_db(tmp_path_factory):
    """The six real images embedded by ``embed`` into real Parquet, loaded into a real database."""
    folder = tmp_path_factory.mktemp("images-db")
    parquet = folder / "images.parquet"
    embed.embed_to_parquet(str(TEST_DATA / "images"), str(parquet), provider="shared-images", created=1_700_000_000)
    db = folder / "images.db"
    loader.load(str(db), [str(parquet)])
    return db


@pytest.fixture
def conn(images_db):
    c = connect(str(images_db))
    sql_functions.register_functions(c, PluginConfig(embedding=EmbeddingConfig(max_text_length=40, max_upload_bytes=2_000_000, max_image_pixels=5_000_000)))
    yield c
    c.close()


def vec_table(conn, label="colour-layout-v1") -> str:
    return conn.execute("select vec_table from models where label = ?", [label]).fetchone()[0]


def test_embed_image_blob_feeds_a_vec0_knn(conn):
    table = vec_table(conn)
    query = (TEST_DATA / "images" / "RP-P-1906-1485.jpg").read_bytes()
    rows = conn.execute(
        f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
        "where v.embedding match embed_image('colour-layout-v1', ?) and k = 3 order by v.distance",
        [query],
    ).fetchall()
    assert {r[0] for r in rows} == RIJKS_PRINTS
    assert rows[0][0] == "RP-P-1906-1485" and rows[0][1] == pytest.approx(0.0, abs=1e-5)


def test_vec0_distance_is_one_minus_vec_cosine(conn):
    table = vec_table(conn)
    query = png((40, 30), (10, 120, 200))
    rows = conn.execute(
        f"select v.distance, vec_cosine(v.embedding, embed_image('colour-layout-v1', :q)) "
        f"from {table} v where v.embedding match embed_image('colour-layout-v1', :q) and k = 6",
        {"q": query},
    ).fetchall()
    assert len(rows) == 6
    for distance, similarity in rows:
        assert distance == pytest.approx(1 - similarity, abs=1e-5)


def test_embed_image_returns_float32_blob_like_the_model(conn):
    data = (TEST_DATA / "images" / "DP159891.jpg").read_bytes()
    (blob,) = conn.execute("select embed_image('colour-layout-v1', ?)", [data]).fetchone()
    np.testing.assert_array_equal(from_blob(blob), models.embed_image("colour-layout-v1", data))
    assert conn.execute("select vec_length(?)", [blob]).fetchone()[0] == len(blob) // 4


def test_vec_cosine_blobs_and_json():
    c = connect(":memory:")
    sql_functions.register_functions(c)
    a = np.array([1, 0, 0], dtype="<f4").tobytes()
    assert c.execute("select vec_cosine(?, '[1, 1, 0]')", [a]).fetchone()[0] == pytest.approx(2 ** -0.5)
    assert c.execute("select vec_cosine('[1,2,3]', '[2,4,6]')").fetchone()[0] == pytest.approx(1.0)
    assert c.execute("select vec_cosine('[1,0]', '[-1,0]')").fetchone()[0] == pytest.approx(-1.0)
    assert c.execute("select vec_cosine(null, '[1]')").fetchone()[0] is None


def test_stored_label_maps_through_models_table_and_config(conn, images_db):
    w = connect(str(images_db))
    loader_store = Store(w)
    blob = png()
    # a label unknown to llm, stored with its llm model in the models table
    w.execute("update models set label = 'museum-colours' where label = 'colour-layout-v1'")
    w.execute("update records set model = 'museum-colours'")
    try:
        with pytest.raises(sqlite3.OperationalError, match="'museum-colours' is stored in this database but no llm model"):
            conn.execute("select embed_image('museum-colours', ?)", [blob]).fetchone()
        loader_store.set_llm_model_id("museum-colours", "colour-layout-v1")
        assert len(conn.execute("select embed_image('museum-colours', ?)", [blob]).fetchone()[0]) > 0
        # configuration wins over the column: map the label to a text-only model and see it refuse images
        fake = FakeCountingModel("fake-text-only-model")
        with registered(fake):
            c2 = connect(str(images_db))
            sql_functions.register_functions(c2, PluginConfig(embedding=EmbeddingConfig(models={"museum-colours": "fake-text-only-model"})))
            with pytest.raises(sqlite3.OperationalError, match="model 'fake-text-only-model' cannot embed images"):
                c2.execute("select embed_image('museum-colours', ?)", [blob]).fetchone()
            assert from_blob(c2.execute("select embed_text('museum-colours', 'hi')").fetchone()[0]).shape == (8,)
            c2.close()
    finally:
        w.execute("update models set label = 'colour-layout-v1', llm_model_id = null where label = 'museum-colours'")
        w.execute("update records set model = 'colour-layout-v1'")
        w.close()


def test_repeated_text_in_sql_is_cached(images_db):
    fake = FakeCountingModel("fake-sql-cache-model")
    c = connect(str(images_db))
    sql_functions.register_functions(c, PluginConfig(embedding=EmbeddingConfig(models={"words": "fake-sql-cache-model"})))
    try:
        with registered(fake):
            for _ in range(3):
                c.execute("select embed_text('words', 'gold purple faucet')").fetchone()
    finally:
        c.close()
    assert fake.calls == 1


BOMB = None


def bomb() -> bytes:
    global BOMB
    if BOMB is None:
        out = io.BytesIO()
        Image.new("L", (3000, 3000)).save(out, format="PNG")  # 9 megapixels, a few KB
        BOMB = out.getvalue()
    return BOMB


def truncated() -> bytes:
    data = (TEST_DATA / "images" / "SK-C-5.jpg").read_bytes()
    return data[: len(data) // 3]


ERRORS = [
    ("select embed_text('no-such-model', 'x')", [], "unknown embedding model 'no-such-model'"),
    ("select embed_image('no-such-model', ?)", [png()], "unknown embedding model 'no-such-model'"),
    ("select embed_text('colour-layout-v1', 'a red vase')", [], "model 'colour-layout-v1' cannot embed text"),
    ("select embed_image('colour-layout-v1', ?)", [b"\x00\x01 definitely not an image"], "is not an image"),
    ("select embed_image('colour-layout-v1', 'RP-P-1906-1485.jpg')", [], r"got TEXT \(embed_image never reads files or fetches URLs\)"),
    ("select embed_image('colour-layout-v1', 'https://example.org/a.jpg')", [], "got TEXT"),
    ("select embed_image('colour-layout-v1', 42)", [], "got INTEGER"),
    ("select embed_image('colour-layout-v1', null)", [], "image is NULL"),
    ("select embed_image('colour-layout-v1', ?)", [bomb], "3000x3000 = 9,000,000 pixels; at most 5,000,000"),
    ("select embed_image('colour-layout-v1', ?)", [truncated], "damaged or truncated|cannot be read as an image"),
    ("select embed_image('colour-layout-v1', zeroblob(2000001))", [], "at most 2,000,000 bytes"),
    ("select embed_text('colour-layout-v1', ?)", ["x" * 41], "text is 41 characters; at most 40"),
    ("select embed_text(null, 'x')", [], "first argument must be a model label"),
    ("select vec_cosine('[1,2]', '[1,2,3]')", [], "vec_cosine\\(\\): vectors differ in length: 2 and 3"),
    ("select vec_cosine('[1,2', '[1,2]')", [], "vec_cosine\\(\\): not a JSON array"),
    ("select vec_cosine('{\"a\": 1}', '[1,2]')", [], "must be a JSON array of numbers"),
    ("select vec_cosine('[0,0]', '[1,2]')", [], "undefined for a zero vector"),
    ("select vec_cosine(x'000000', '[1]')", [], "multiple of 4 bytes"),
]


@pytest.mark.parametrize("sql,params,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_errors_are_sql_errors_with_clear_messages(conn, sql, params, message):
    params = [p() if callable(p) else p for p in params]
    with pytest.raises(sqlite3.OperationalError, match=message):
        conn.execute(sql, params).fetchall()


def test_embedding_disabled():
    c = connect(":memory:")
    sql_functions.register_functions(c, PluginConfig(embedding=EmbeddingConfig(query_embedding=False)))
    for sql in ("select embed_text('colour-layout-v1', 'x')", "select embed_image('colour-layout-v1', x'00')"):
        with pytest.raises(sqlite3.OperationalError, match="query-time embedding is disabled on this instance"):
            c.execute(sql).fetchall()
    assert c.execute("select vec_cosine('[1]', '[2]')").fetchone()[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- through Datasette


def datasette_for(images_db, **plugin_config) -> Datasette:
    return Datasette([str(images_db)], metadata={"plugins": {"datasette-embeddings": plugin_config}})


async def query(ds: Datasette, sql: str):
    return await ds.client.get("/images.json", params={"sql": sql, "_shape": "array"})


@pytest.mark.asyncio
async def test_datasette_knn_with_embed_image(images_db):
    ds = datasette_for(images_db)
    await ds.invoke_startup()
    hex_png = png((16, 16), (120, 90, 60)).hex()
    conn = connect(str(images_db))
    table = vec_table(conn)
    conn.close()
    response = await query(
        ds,
        f"select v.id, v.distance, vec_cosine(v.embedding, embed_image('colour-layout-v1', x'{hex_png}')) as similarity "
        f"from {table} v where v.embedding match embed_image('colour-layout-v1', x'{hex_png}') and k = 5",
    )
    assert response.status_code == 200, response.text
    rows = response.json()
    assert len(rows) == 5
    for row in rows:
        assert row["distance"] == pytest.approx(1 - row["similarity"], abs=1e-5)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "config,sql,message",
    [
        ({}, "select embed_text('no-such-model', 'x')", "unknown embedding model 'no-such-model'"),
        ({}, "select embed_image('colour-layout-v1', 'RP-P-1906-1485.jpg')", "embed_image never reads files or fetches URLs"),
        ({}, "select embed_image('colour-layout-v1', x'00010203')", "is not an image"),
        ({}, "select embed_text('colour-layout-v1', 'a red vase')", "cannot embed text"),
        ({"max_text_length": 5}, "select embed_text('colour-layout-v1', 'a long text')", "at most 5 are allowed"),
        ({"max_upload_bytes": 10}, "select embed_image('colour-layout-v1', zeroblob(11))", "at most 10 bytes"),
        ({"query_embedding": False}, "select embed_text('colour-layout-v1', 'x')", "query-time embedding is disabled"),
        ({}, "select vec_cosine('[1]', '[1,2]')", "vectors differ in length"),
    ],
)
async def test_datasette_returns_400_with_the_message(images_db, config, sql, message):
    ds = datasette_for(images_db, **config)
    response = await ds.client.get("/images.json", params={"sql": sql})
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.asyncio
async def test_datasette_refuses_to_start_with_bad_config(images_db):
    ds = datasette_for(images_db, max_text_length="long")
    with pytest.raises(ConfigError, match="max_text_length must be a number"):
        await ds.invoke_startup()


@pytest.mark.parametrize("driver", ["pysqlite3.dbapi2", "sqlite3"])
def test_function_errors_keep_their_message_on_both_drivers(driver):
    import importlib

    from datasette_embeddings.sql import udf as sqlite_udf
    module = importlib.import_module(driver)

    class Subclassed(module.Connection):
        pass

    def echo(value):
        if value == "boom":
            raise ValueError("a clear message, not a generic one")
        return value

    for c in (module.connect(":memory:"), module.connect(":memory:", factory=Subclassed)):
        sqlite_udf.create_function(c, "echo", 1, echo)
        assert c.execute("select echo(1), echo(2.5), echo('té'), echo(x'00ff'), echo(null)").fetchone() == (1, 2.5, "té", b"\x00\xff", None)
        with pytest.raises(module.OperationalError, match="^a clear message, not a generic one$"):
            c.execute("select echo('boom')").fetchone()
        c.close()


def test_closed_connections_leave_no_registered_functions_behind(images_db):
    """Each connection's Python callables are freed when SQLite drops its functions (xDestroy)."""
    from datasette_embeddings.sql import udf

    def open_and_close():
        c = connect(str(images_db))
        sql_functions.register_functions(c)
        assert c.execute("select vec_cosine('[1, 0]', '[1, 0]')").fetchone()[0] == pytest.approx(1.0)
        c.close()

    open_and_close()
    held = len(udf._functions) + len(udf._aggregates)
    for _ in range(20):
        open_and_close()
    assert len(udf._functions) + len(udf._aggregates) <= held


def test_a_script_that_never_closes_its_connection_exits_quietly(tmp_path):
    """README: register_functions(conn) "on your own" connection.  A script that leaves the connection
    open at exit has SQLite drop its functions while the interpreter tears down udf's globals; that
    printed a NameError traceback per function ("Exception ignored on calling ctypes callback")."""
    import subprocess
    import sys

    script = (
        "from datasette_embeddings.storage.connection import connect\n"
        "from datasette_embeddings.sql.functions import register_functions\n"
        "conn = connect(':memory:', readonly=False)\n"
        "register_functions(conn)\n"
        "print(conn.execute(\"select vec_cosine('[1,0]', '[1,1]')\").fetchone()[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0.7071")
    assert done.stderr == "", done.stderr
