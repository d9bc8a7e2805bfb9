"""Model weights load in a background thread at startup, never inside a request (issue 12, item 7).

The model here is a FAKE llm embedding model whose "weights load" (its first call,
as llm-clip's is) blocks on an event the test holds.  While it is held, the search
page and ``search.json`` answer 503 with ``Retry-After``, SQL functions fail naming
the model, and the gallery and record pages answer as usual; once it is released,
search answers 200.  A load that fails is reported with its cause, and not tried again.
Every request is guarded by a timeout: a request that waited for the load would hang
until the event is set, so finishing at all shows that it did not wait.
"""
from __future__ import annotations

import asyncio
import threading

import pytest
from datasette.app import Datasette

from datasette_embeddings.embedding import runtime
from tests.fake_model import FakeCountingModel, registered

#: a request answers long before this; only a request waiting for the held load reaches it
HANG_GUARD_SECONDS = 30


class FakeSlowLoadingModel(FakeCountingModel):
    """FAKE model: its first call (the "weights load") waits for ``release``, or fails with ``failure``."""

    loads_weights = True  # (the counting fake it extends says it has none)

    def __init__(self, model_id: str = "fake-slow-loading-model", failure: str | None = None):
        super().__init__(model_id)
        self.release = threading.Event()
        self.failure = failure
        self.loaded = False
        self.load_attempts = 0

    def embed_batch(self, items, *, key=None):
        if not self.loaded:
            self.load_attempts += 1
            assert self.release.wait(HANG_GUARD_SECONDS * 4), "the test never released the load"
            if self.failure:
                raise OSError(self.failure)
            self.loaded = True
        yield from super().embed_batch(items, key=key)


@pytest.fixture
def slow():
    model = FakeSlowLoadingModel()
    runtime.reset()
    with registered(model):
        yield model
        model.release.set()  # never leave the loader thread waiting
        runtime.wait_for_loads(timeout=30)
    runtime.reset()


def _datasette(db, **settings) -> Datasette:
    plugin = {"models": {"m-8": "fake-slow-loading-model"}, **settings}
    return Datasette([str(db)], metadata={"plugins": {"datasette-embeddings": plugin}})


def get(ds, path: str, **kwargs):
    async def run():
        return await asyncio.wait_for(ds.client.get(path, **kwargs), HANG_GUARD_SECONDS)

    return asyncio.run(run())


SEARCH = "/loaded/-/search.json?q=a+ship&model=m-8&mode=vector&k=3"
SQL = "/loaded.json?sql=select+length(embed_text('m-8','a+ship'))+as+n&_shape=array"


def test_requests_answer_503_while_the_model_loads_and_200_after(loaded_db, slow):
    ds = _datasette(loaded_db)
    asyncio.run(asyncio.wait_for(ds.invoke_startup(), HANG_GUARD_SECONDS))  # startup does not wait for the load
    assert runtime.load_states()["fake-slow-loading-model"]["state"] in ("queued", "loading")

    response = get(ds, SEARCH)
    assert response.status_code == 503, response.text[:300]
    assert response.headers["retry-after"] == str(runtime.RETRY_AFTER_SECONDS)
    error = response.json()["error"]
    assert "fake-slow-loading-model" in error and "loading" in error

    page = get(ds, "/loaded/-/search?q=a+ship&model=m-8&mode=vector")
    assert page.status_code == 503 and "fake-slow-loading-model" in page.text and "loading" in page.text
    assert page.headers["retry-after"] == str(runtime.RETRY_AFTER_SECONDS)

    sql = get(ds, SQL)
    assert sql.status_code == 400 and "fake-slow-loading-model" in sql.text and "loading" in sql.text

    # pages that need no model are served meanwhile
    assert get(ds, "/loaded/-/gallery.json").status_code == 200
    assert get(ds, "/loaded/-/gallery/1.json").status_code == 200
    assert get(ds, "/loaded/-/gallery/1").status_code == 200
    models = {m["label"]: m for m in get(ds, "/loaded/-/search.json").json()["models"]}
    assert models["m-8"]["load"] == {"state": "loading"} and models["m-8"]["text"]
    overview = get(ds, "/-/embeddings.json").json()
    assert overview["model_loads"]["fake-slow-loading-model"]["state"] == "loading"
    assert slow.load_attempts == 1  # only the loader thread ever called the model

    slow.release.set()
    assert runtime.wait_for_loads(["fake-slow-loading-model"], timeout=30)
    response = get(ds, SEARCH)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["results"]) == 3
    assert get(ds, SQL).json() == [{"n": 32}]
    assert get(ds, "/-/embeddings.json").json()["model_loads"]["fake-slow-loading-model"] == {"state": "ready"}
    models = {m["label"]: m for m in get(ds, "/loaded/-/search.json").json()["models"]}
    assert models["m-8"]["load"] == {"state": "ready"}


def test_a_failed_load_names_the_model_and_the_cause_and_is_not_retried(loaded_db):
    broken = FakeSlowLoadingModel("fake-slow-loading-model", failure="weights file is truncated")
    broken.release.set()
    runtime.reset()
    try:
        with registered(broken):
            ds = _datasette(loaded_db, wait_for_models=True)  # startup waits: the load has ended when it returns
            asyncio.run(asyncio.wait_for(ds.invoke_startup(), HANG_GUARD_SECONDS))
            assert runtime.load_states()["fake-slow-loading-model"]["state"] == "failed"
            for _ in range(2):
                response = get(ds, SEARCH)
                assert response.status_code == 503, response.text[:300]
                assert "retry-after" not in response.headers  # waiting does not help
                error = response.json()["error"]
                assert "fake-slow-loading-model" in error and "weights file is truncated" in error
                assert "could not be loaded" in error
            sql = get(ds, SQL)
            assert sql.status_code == 400 and "weights file is truncated" in sql.text
            assert broken.load_attempts == 1  # not a retry loop
    finally:
        runtime.reset()


def test_a_model_not_loaded_at_startup_is_loaded_by_the_thread_after_the_first_request(loaded_db, slow):
    ds = _datasette(loaded_db, warm_models=False)
    asyncio.run(ds.invoke_startup())
    assert "fake-slow-loading-model" not in runtime.load_states()
    assert get(ds, SEARCH).status_code == 503  # the first request queues the load, and does not wait for it
    assert runtime.load_states()["fake-slow-loading-model"]["state"] in ("queued", "loading")
    slow.release.set()
    assert runtime.wait_for_loads(timeout=30)
    assert get(ds, SEARCH).status_code == 200


def test_stored_labels_are_loaded_at_startup_without_configuration(tmp_path, slow):
    """A label the database maps itself (``models.llm_model_id``) is loaded at startup too."""
    from datasette_embeddings.files import loader
    from datasette_embeddings.storage.store import Store
    from datasette_embeddings.storage import connection
    from tests.helpers import make_records, write_parquet

    write_parquet(tmp_path / "x.parquet", make_records(n=4, models={"stored-8": 8}))
    loader.load(str(tmp_path / "x.db"), [str(tmp_path / "x.parquet")])
    conn = connection.connect(str(tmp_path / "x.db"))
    Store(conn).set_llm_model_id("stored-8", "fake-slow-loading-model")
    conn.commit()
    conn.close()
    ds = Datasette([str(tmp_path / "x.db")])
    asyncio.run(ds.invoke_startup())
    assert runtime.load_states()["fake-slow-loading-model"]["state"] in ("queued", "loading")


def test_offline_callers_load_the_model_themselves(slow):
    """The CLI (no instance config) still loads synchronously: it has no server to keep answering."""
    slow.release.set()
    assert runtime.embed_text("fake-slow-loading-model", "a ship").shape == (8,)
    assert slow.loaded
