"""No request builds a fast index or waits for one (issue 12, items 1 and 6).

A request that built the index held a lock that other requests waited for while
SQLite held their connection's mutex; the garbage collector, in the building thread,
then waited for one of those mutexes: every database request hung for good.  Now
Datasette's connections hand builds to one builder thread (a private read-only
connection) and answer with vec0 meanwhile.
"""
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.search import memory_index as fast_index
from datasette_embeddings.search.similarity import NeighbourFilter, vec0_nearest_ids
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store
from tests.helpers import free_port, load_benchmark, write_synthetic

http_load = load_benchmark("http_load")


@pytest.fixture
def two_models(tmp_path):
    db = tmp_path / "two.db"
    write_synthetic(tmp_path / "a.parquet", 3000, 128, provider="pa", model="model-a", seed=1)
    write_synthetic(tmp_path / "b.parquet", 3000, 128, provider="pb", model="model-b", seed=2)
    loader.load(str(db), [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    fast_index.clear_cache()
    yield db
    fast_index.clear_cache()


def test_no_request_waits_for_an_index_build(two_models, monkeypatch):
    from datasette.app import Datasette

    release = threading.Event()
    real_build = fast_index._build_once
    building = []

    def slow_build(conn, model, token):
        building.append(threading.current_thread().name)
        release.wait(60)
        return real_build(conn, model, token)

    monkeypatch.setattr(fast_index, "_build_once", slow_build)
    monkeypatch.setattr(fast_index, "build", lambda conn, model, token: slow_build(conn, model, token))
    ds = Datasette([str(two_models)], metadata={"plugins": {"datasette-embeddings": {"fast_index": {"build_at_startup": False}}}})
    answers = {}

    def visitor():
        async def go():
            answers["record"] = await ds.client.get("/two/-/gallery/1.json?k=5")
            answers["sql"] = await ds.client.get(
                "/two.json?_shape=array&sql=" + "select embeddings_nearest('model-a', (select embedding from "
                + Store(connect(str(two_models))).model("model-a").vec_table + " where id = 2), 3) as n"
            )
        asyncio.run(go())

    thread = threading.Thread(target=visitor)
    thread.start()
    thread.join(20)
    try:
        assert not thread.is_alive(), "a request waited for an index build"
        assert answers["record"].status_code == 200 and answers["sql"].status_code == 200
        assert building and fast_index.BUILDER_THREAD_NAME in building  # the build was handed over
        # vec0 answered meanwhile, exactly
        conn = connect(str(two_models))
        store = Store(conn)
        model = store.model("model-a")
        expected = vec0_nearest_ids(conn, model, store.vector(1), 5, NeighbourFilter(), exclude_ids=(1,))
        assert [c["id"] for c in answers["record"].json()["similar"]] == [i for i, _ in expected]
    finally:
        release.set()
        thread.join(20)
    assert fast_index.wait_for_builds(30)
    status = json.loads(asyncio.run(ds.client.get("/two.json?_shape=array&sql=select+embeddings_index_status('model-a')+as+s")).json()[0]["s"])
    assert status["exact"] is True


def test_builds_on_our_own_connections_stay_synchronous(two_models):
    conn = connect(str(two_models))
    model = Store(conn).model("model-a")
    assert fast_index.index_for(conn, model) is not None  # the CLI, benchmarks and tests build here


def test_the_builder_reads_one_snapshot(two_models):
    index = fast_index.build_from_file(os.path.realpath(two_models), "model-a")
    assert index is not None and len(index.ids) == 3000
    assert fast_index.build_from_file(os.path.realpath(two_models), "model-a") is None  # current already


# ---------------------------------------------------------------- the stress test of the deadlock
def _start(db, port, metadata, immutable=True):
    return http_load.start_server(str(db), port, metadata=metadata, immutable=immutable)


def _two_models(tmp_path, name: str, n: int) -> tuple:
    """A database of two 128-d models of ``n`` records each: its path, vec0 table and record ids by label."""
    db = tmp_path / f"{name}.db"
    write_synthetic(tmp_path / "a.parquet", n, 128, provider="pa", model="model-a", seed=1)
    write_synthetic(tmp_path / "b.parquet", n, 128, provider="pb", model="model-b", seed=2)
    loader.load(str(db), [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    conn = connect(str(db))
    tables = {m.label: m.vec_table for m in Store(conn).models()}
    ids = {label: [r[0] for r in conn.execute("select id from records where model = ?", [label])] for label in tables}
    conn.close()
    return db, tables, ids


def test_concurrent_builds_under_a_small_memory_budget_never_hang(tmp_path):
    """Two models that do not fit the budget together; four clients alternate both models' record
    JSON and embeddings_nearest(): every request answers, no 5xx, bounded (issue 12: hung after 100 s).

    A smoke test of a real server under that load, not a reproduction of the hang: it passed on the
    design before the fix as well (3 runs of 3; the hang also needed the garbage collector to free
    another connection's cursor at the wrong moment).  The test below checks the hang's precondition
    directly, and fails on the old design every time.
    """
    db, tables, ids = _two_models(tmp_path, "stress", 6000)
    metadata = tmp_path / "metadata.json"
    # one index is 6000 x (128 x 4 + 16) bytes = 3.2 MB: the budget holds one, not both
    metadata.write_text(json.dumps({"plugins": {"datasette-embeddings": {"fast_index": {"max_memory_mb": 5}}}}))
    port = free_port()
    proc = _start(db, port, str(metadata))
    statuses: list[int] = []
    try:
        def client(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                for i in range(60):
                    label = ("model-a", "model-b")[i % 2]
                    rid = rng.choice(ids[label])
                    if i % 4 < 2:
                        response = http.get(f"/stress/-/gallery/{rid}.json?k=10")
                    else:
                        sql = f"select embeddings_nearest('{label}', embedding, 5) as n from {tables[label]} where id = {rid}"
                        response = http.get("/stress.json", params={"sql": sql, "_shape": "array"})
                    statuses.append(response.status_code)

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client, range(4)))  # a hang raises httpx's timeout here
        assert time.monotonic() - started < 60
        assert statuses and set(statuses) == {200}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get(f"/stress/-/gallery/{ids['model-a'][0]}.json").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _RecordingLock:
    """A build lock that notes which thread takes it (the lock itself is the real one)."""

    def __init__(self, lock, takers: list):
        self.lock, self.takers = lock, takers

    def __enter__(self):
        self.takers.append(threading.current_thread().name)
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)


def test_under_concurrent_load_no_request_thread_takes_a_build_lock(tmp_path, monkeypatch):
    """The deadlock's precondition, checked directly instead of waiting for the garbage collector.

    The hang needed a request thread to hold a build lock while another request thread,
    inside ``embeddings_nearest`` with its connection's SQLite mutex held, waited for it.
    The stress test above cannot make the collector free the wrong cursor at the wrong
    moment (it passed on the old design in 3 of 3 runs); this one records every thread
    that takes a build lock during the same mixed load (two models, a budget that holds
    one, Datasette's own SQL threads, no startup build) and fails at once if any is not
    the builder thread, as every request thread did before the fix.
    """
    from datasette.app import Datasette

    db, tables, ids = _two_models(tmp_path, "locks", 3000)
    fast_index.clear_cache()
    takers: list[str] = []
    real_build_lock = fast_index._cache.build_lock
    monkeypatch.setattr(fast_index._cache, "build_lock", lambda key: _RecordingLock(real_build_lock(key), takers))
    # one index is 3000 x (128 x 4 + 16) bytes = 1.6 MB: the budget holds one, not both
    # no startup build: every build is asked for by a request
    settings = {"max_memory_mb": 2, "build_at_startup": False}
    ds = Datasette([str(db)], metadata={"plugins": {"datasette-embeddings": {"fast_index": settings}}})
    statuses: list[int] = []

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(40):
            label = ("model-a", "model-b")[i % 2]
            rid = rng.choice(ids[label])
            if i % 4 < 2:
                response = await ds.client.get(f"/locks/-/gallery/{rid}.json?k=10")
            else:
                sql = f"select embeddings_nearest('{label}', embedding, 5) as n from {tables[label]} where id = {rid}"
                response = await ds.client.get("/locks.json?_shape=array&sql=" + sql.replace(" ", "+"))
            statuses.append(response.status_code)
            if i % 10 == 9:
                await asyncio.sleep(0.05)  # let the builder thread run between bursts

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(client(s) for s in range(4))), 120)  # a hang fails here

    try:
        asyncio.run(run())
        assert fast_index.wait_for_builds(60)
    finally:
        fast_index.clear_cache()
    assert statuses and set(statuses) == {200}
    assert takers.count(fast_index.BUILDER_THREAD_NAME) >= 2, takers  # both models built, one evicting the other
    assert set(takers) == {fast_index.BUILDER_THREAD_NAME}, sorted(set(takers))


# ---------------------------------------------------------------- readers during a load (item 6)
def test_readers_during_a_load_never_see_an_error(tmp_path):
    db = tmp_path / "live.db"
    write_synthetic(tmp_path / "base.parquet", 4000, 64, provider="provider-with-a-long-name", model="m", seed=1)
    loader.load(str(db), [str(tmp_path / "base.parquet")])
    for i in range(3):  # updates of every record, then new records, in turn
        write_synthetic(tmp_path / f"u{i}.parquet", 4000, 64, provider="provider-with-a-long-name" if i % 2 == 0 else f"new-{i}",
                        model="m", seed=10 + i, created=1_700_000_001 + i)
    port = free_port()
    proc = _start(db, port, None, immutable=False)
    statuses: list[tuple[int, str]] = []
    done = threading.Event()
    try:
        def reader(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                while not done.is_set():
                    rid = rng.randint(1, 4000)
                    response = http.get(f"/live/-/gallery/{rid}.json?k=5&provider=provider-with-a-long-name")
                    statuses.append((response.status_code, response.text[:200]))

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        cli = [sys.executable, "-c", "from datasette_embeddings.cli import cli; cli()", "load", str(db)]
        for i in range(3):
            result = subprocess.run(cli + [str(tmp_path / f"u{i}.parquet")], capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr
        done.set()
        for t in threads:
            t.join(60)
    finally:
        done.set()
        proc.terminate()
        proc.wait(timeout=30)
    assert statuses
    errors = [s for s in statuses if s[0] != 200]
    assert not errors, errors[:5]
