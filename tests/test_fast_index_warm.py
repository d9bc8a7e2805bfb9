"""The fast index is built when Datasette starts, before any similarity query, on real loaded databases."""
from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import sqlite_utils
from datasette.app import Datasette

from datasette_embeddings.config import IndexSettings
from datasette_embeddings.search import memory_index as fast_index
from datasette_embeddings.search import index_warmup
from datasette_embeddings.files import loader
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store
from tests.gallery_fixtures import fetch
from tests.helpers import file_hashes, make_records, write_parquet

MODELS = {"m": 16, "n": 8}
PROVIDERS = ("met", "nga")
PER_PROVIDER = 100  # records per provider and model


def _join_warmups(timeout: float = 60) -> None:
    """Wait for every warm-up thread of this process (other tests' Datasettes start them too)."""
    for thread in threading.enumerate():
        if thread.name == index_warmup.THREAD_NAME:
            thread.join(timeout)
            assert not thread.is_alive(), "the warm-up did not finish"


@pytest.fixture(autouse=True)
def fresh_cache():
    _join_warmups()
    fast_index.clear_cache()
    yield
    _join_warmups()
    fast_index.clear_cache()


@pytest.fixture(scope="module")
def records():
    return make_records(n=PER_PROVIDER, providers=PROVIDERS, models=MODELS, seed=3)


@pytest.fixture(scope="module")
def warm_db(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("warm") / "warm.db"
    parquet = path.parent / "warm.parquet"
    write_parquet(parquet, records)
    loader.load(str(path), [str(parquet)])
    return path


def _datasette(*paths, **fast) -> Datasette:
    metadata = {"plugins": {"datasette-embeddings": {"fast_index": fast}}} if fast else {}
    return Datasette([str(p) for p in paths], metadata=metadata)


def _start(ds: Datasette) -> None:
    """Datasette starts on its first request; this one touches no similarity code."""
    assert fetch(ds, "/-/versions.json").status_code == 200


def _status_sql(ds: Datasette, label: str) -> dict:
    r = fetch(ds, "/warm.json", params={"sql": f"select embeddings_index_status('{label}') as s", "_shape": "array"})
    assert r.status_code == 200, r.text
    return json.loads(r.json()[0]["s"])


def _status(path, label: str) -> dict:
    conn = connect(str(path), readonly=True)
    try:
        return fast_index.status(conn, Store(conn).model(label))
    finally:
        conn.close()


def _record_builds(monkeypatch) -> list[tuple[str, str]]:
    """(model, thread name) of every index build from now on."""
    calls = []
    real = fast_index.build

    def counted(conn, model, token):
        calls.append((model.label, threading.current_thread().name))
        return real(conn, model, token)

    monkeypatch.setattr(fast_index, "build", counted)
    return calls


def _brute_force(records, path, label: str, query: np.ndarray, k: int, exclude=()) -> list[tuple[int, float]]:
    """Cosine similarities by NumPy over the Parquet vectors (ids from the database)."""
    conn = connect(str(path), readonly=True)
    try:
        ids = {(p, d): i for i, p, d in conn.execute("select id, provider, depiction_id from records where model = ?", [label])}
    finally:
        conn.close()
    q = query / np.linalg.norm(query)
    scored = []
    for r in records:
        if r["model"] == label and ids[(r["provider"], r["depiction_id"])] not in exclude:
            v = np.asarray(r["embeddings"], dtype=np.float64)
            scored.append((ids[(r["provider"], r["depiction_id"])], float(v @ q / np.linalg.norm(v))))
    return sorted(scored, key=lambda p: -p[1])[:k]


def test_startup_builds_every_model_before_any_query(warm_db, monkeypatch):
    builds = _record_builds(monkeypatch)
    assert _status(warm_db, "m")["exact"] is False
    ds = _datasette(warm_db)
    _start(ds)
    _join_warmups()
    # built by the warm-up thread, with no similarity request made
    assert sorted(builds) == [("m", index_warmup.THREAD_NAME), ("n", index_warmup.THREAD_NAME)]
    for label in MODELS:
        status = _status_sql(ds, label)
        assert status["exact"] is True
        assert status["rows"] == PER_PROVIDER * len(PROVIDERS)


def test_startup_readiness_is_visible_by_polling_sql(warm_db):
    """What an operator sees: embeddings_index_status turns exact=true on its own."""
    ds = _datasette(warm_db)
    _start(ds)
    deadline = time.monotonic() + 30
    while not all(_status_sql(ds, label)["exact"] for label in MODELS):
        assert time.monotonic() < deadline, "the index never became ready"
        time.sleep(0.05)


def test_warm_false_builds_nothing_at_startup(warm_db, monkeypatch):
    builds = _record_builds(monkeypatch)
    ds = _datasette(warm_db, build_at_startup=False)
    _start(ds)
    assert not [t for t in threading.enumerate() if t.name == index_warmup.THREAD_NAME]
    time.sleep(0.3)
    assert _status_sql(ds, "m")["exact"] is False
    assert builds == []
    # the first query (answered by vec0) hands the build to the builder thread
    vector = json.dumps([1.0] * MODELS["m"])
    r = fetch(ds, "/warm.json", params={"sql": f"select embeddings_nearest('m', '{vector}', 3) as n", "_shape": "array"})
    assert r.status_code == 200 and len(json.loads(r.json()[0]["n"])) == 3
    assert fast_index.wait_for_builds(30)
    assert _status_sql(ds, "m")["exact"] is True
    assert builds == [("m", fast_index.BUILDER_THREAD_NAME)]


def test_disabled_fast_index_is_not_warmed(warm_db, monkeypatch):
    builds = _record_builds(monkeypatch)
    _start(_datasette(warm_db, enabled=False))
    _join_warmups()
    assert builds == [] and _status(warm_db, "m")["exact"] is False


def test_bad_warm_setting_stops_startup(warm_db):
    with pytest.raises(ValueError, match="fast_index: build_at_startup must be true or false"):
        _start(_datasette(warm_db, build_at_startup="yes"))


def test_query_during_warm_up_does_not_wait_and_is_right(warm_db, records, monkeypatch):
    """Queries arriving mid-build never wait for it (vec0 answers, exactly), and the model is built once."""
    started, release = threading.Event(), threading.Event()
    builds = []
    real = fast_index.build

    def gated(conn, model, token):
        builds.append((model.label, threading.current_thread().name))
        if model.label == "m":
            started.set()
            assert release.wait(30)
        return real(conn, model, token)

    monkeypatch.setattr(fast_index, "build", gated)
    ds = _datasette(warm_db)
    _start(ds)
    assert started.wait(30), "the warm-up never started building"

    conn = connect(str(warm_db), readonly=True)
    try:
        model = Store(conn).model("m")
        target = conn.execute("select id from records where model = 'm' order by id limit 1 offset 7").fetchone()[0]
        target_vector = np.frombuffer(
            conn.execute(f"select embedding from {model.vec_table} where id = ?", [target]).fetchone()[0], "<f4"
        )
    finally:
        conn.close()

    answers = {}

    def record_page():
        answers["page"] = fetch(ds, f"/warm/-/gallery/{target}.json", params={"k": "5"})

    def sql_function():
        sql = f"select embeddings_nearest('m', embedding, 4, 'nga') as n from {model.vec_table} where id = {target}"
        answers["sql"] = fetch(ds, "/warm.json", params={"sql": sql, "_shape": "array"})

    askers = [threading.Thread(target=record_page), threading.Thread(target=sql_function)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(30)
    assert not any(asker.is_alive() for asker in askers), "a query waited for the build in progress"
    release.set()
    _join_warmups()
    assert fast_index.wait_for_builds(30)
    assert [label for label, _ in builds].count("m") == 1
    assert ("m", index_warmup.THREAD_NAME) in builds

    page = answers["page"]
    assert page.status_code == 200, page.text
    expected = _brute_force(records, warm_db, "m", target_vector, 5, exclude=(target,))
    assert [card["id"] for card in page.json()["similar"]] == [rid for rid, _ in expected]
    np.testing.assert_allclose([c["similarity"] for c in page.json()["similar"]], [s for _, s in expected], atol=1e-4)

    sql = answers["sql"]
    assert sql.status_code == 200, sql.text
    nga = _brute_force([r for r in records if r["provider"] == "nga"], warm_db, "m", target_vector, 4)
    assert [d["id"] for d in json.loads(sql.json()[0]["n"])] == [rid for rid, _ in nga]


def test_databases_without_embeddings_are_skipped(warm_db, tmp_path, caplog):
    plain = tmp_path / "plain.db"
    sqlite_utils.Database(plain)["things"].insert({"a": 1})
    empty = tmp_path / "empty.db"
    sqlite_utils.Database(empty).execute("vacuum")
    with caplog.at_level(logging.WARNING, logger=index_warmup.__name__):
        ds = _datasette(plain, empty, warm_db)
        _start(ds)
        _join_warmups()
    assert not caplog.records
    # it went on to the database after them
    assert all(_status_sql(ds, label)["exact"] for label in MODELS)
    assert fetch(ds, "/plain/things.json").status_code == 200


def test_a_foreign_models_table_is_logged_and_skipped(warm_db, tmp_path, caplog):
    """Someone else's ``models`` table: a warning, then the next database is warmed."""
    foreign = tmp_path / "foreign.db"
    sqlite_utils.Database(foreign)["models"].insert({"name": "gpt", "size": 7})
    with caplog.at_level(logging.WARNING, logger=index_warmup.__name__):
        _start(_datasette(foreign, warm_db))
        _join_warmups()
    assert any("foreign.db" in r.getMessage() for r in caplog.records)
    assert _status(warm_db, "m")["exact"] is True


def test_memory_budget_and_lru_are_respected(warm_db, monkeypatch):
    """The warm-up builds what fits beside the indexes already held and never evicts one."""
    rows = PER_PROVIDER * len(PROVIDERS)
    size = {label: rows * (dims * 4 + 16) for label, dims in MODELS.items()}
    # room for either model alone, not both
    room_for_one = IndexSettings(max_memory_mb=(max(size.values()) + 100) / 1e6)
    assert index_warmup.warm_database(str(warm_db), settings=room_for_one) == ["m"]
    assert _status(warm_db, "m")["exact"] and not _status(warm_db, "n")["exact"]

    # a query built n; the warm-up leaves it held rather than push it out for m
    fast_index.clear_cache()
    conn = connect(str(warm_db), readonly=True)
    try:
        assert fast_index.index_for(conn, Store(conn).model("n"), room_for_one) is not None
    finally:
        conn.close()
    assert index_warmup.warm_database(str(warm_db), settings=room_for_one) == []
    assert _status(warm_db, "n")["exact"] and not _status(warm_db, "m")["exact"]

    # a model alone over the budget is never built (vec0 answers it)
    fast_index.clear_cache()
    room_for_small = IndexSettings(max_memory_mb=(min(size.values()) + 100) / 1e6)
    assert index_warmup.warm_database(str(warm_db), settings=room_for_small) == ["n"]


def test_warm_database_reads_immutable_files_without_changing_them(warm_db):
    before = file_hashes(warm_db)
    assert index_warmup.warm_database(str(warm_db), immutable=True) == sorted(MODELS)
    assert _status(warm_db, "n")["rows"] == PER_PROVIDER * len(PROVIDERS)
    assert file_hashes(warm_db) == before


def test_immutable_databases_are_opened_as_datasette_opens_them(warm_db):
    ds = Datasette(immutables=[str(warm_db)])
    assert index_warmup.file_databases(ds) == [(str(warm_db), True)]
    _start(ds)
    _join_warmups()
    assert _status_sql(ds, "m")["exact"] is True
