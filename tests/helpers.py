"""Builders for real Parquet files in the layouts other writers use."""
from __future__ import annotations

import contextlib
import json
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasette_embeddings.files.parquet_io import to_arrow


def make_records(
    n: int = 10,
    providers: Sequence[str] = ("met",),
    models: Mapping[str, int] | None = None,
    seed: int = 0,
    created: int = 1_700_000_000,
) -> list[dict]:
    """n records per (provider, model) with random vectors and OEmbeddings attributes."""
    rng = np.random.default_rng(seed)
    models = models or {"test-model": 8}
    records = []
    for provider in providers:
        for label, dims in models.items():
            for i in range(n):
                records.append(
                    {
                        "provider": provider,
                        "depiction_id": f"{provider}-d{i}",
                        "subject_id": f"{provider}-s{i // 2}",
                        "model": label,
                        "embeddings": rng.standard_normal(dims).astype(np.float32),
                        "created": created,
                        "attributes": {
                            "type": "image",
                            "subject_title": f"Object {i} of {provider}",
                            "subject_url": f"https://example.org/{provider}/{i}",
                            "preview": f"https://example.org/{provider}/{i}.jpg",
                        },
                    }
                )
    return records


def write_parquet(path, records: list[dict], **kwargs) -> None:
    """pyarrow defaults: the canonical schema as pyarrow writes it."""
    pq.write_table(to_arrow(records), str(path), **kwargs)


def write_met_plain(path, n=5, dims=8, model="apple/MobileCLIP-S1", seed=0, dim_column=None):
    """The Met's plain layout as its Hugging Face files have it: objectID, embedding, model, dim."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    ids = np.arange(34, 34 + n, dtype=np.int64)
    table = pa.table({
        "objectID": pa.array(ids, pa.int64()),
        "embedding": pa.array(list(vectors), pa.list_(pa.float32())),
        "model": pa.array([model] * n, pa.string()),
        "dim": pa.array(dim_column if dim_column is not None else [dims] * n, pa.int32()),
    })
    pq.write_table(table, str(path))
    return ids, vectors


def write_go_layout(path, records: list[dict], footer: Mapping[str, str] | None = None) -> None:
    """Like parquet-go: every column required, list element 'element', map as 'key_value'.

    ``footer``: key/value metadata for the file, as go-embeddingsdb writes its summary.
    """
    schema = pa.schema(
        [
            pa.field("provider", pa.string(), nullable=False),
            pa.field("depiction_id", pa.string(), nullable=False),
            pa.field("subject_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("embeddings", pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),
            pa.field("created", pa.int64(), nullable=False),
            pa.field("attributes", pa.map_(pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)), nullable=False),
        ]
    )
    table = pa.table(
        {
            "provider": [r["provider"] for r in records],
            "depiction_id": [r["depiction_id"] for r in records],
            "subject_id": [r["subject_id"] for r in records],
            "model": [r["model"] for r in records],
            "embeddings": [list(map(float, r["embeddings"])) for r in records],
            "created": [r["created"] for r in records],
            "attributes": [sorted(r["attributes"].items()) for r in records],
        },
        schema=schema,
    )
    if footer:
        table = table.replace_schema_metadata(dict(footer))
    pq.write_table(table, str(path), use_compliant_nested_type=True)


def write_duckdb_layout(path, records: list[dict]) -> None:
    """Like DuckDB's COPY of a JSON column: attributes as JSON text, vectors as double."""
    table = pa.table(
        {
            "provider": pa.array([r["provider"] for r in records], pa.string()),
            "depiction_id": pa.array([r["depiction_id"] for r in records], pa.string()),
            "subject_id": pa.array([r["subject_id"] for r in records], pa.string()),
            "model": pa.array([r["model"] for r in records], pa.string()),
            "embeddings": pa.array([np.asarray(r["embeddings"], dtype=np.float64) for r in records], pa.list_(pa.float64())),
            "created": pa.array([r["created"] for r in records], pa.int64()),
            "attributes": pa.array([json.dumps(r["attributes"]) for r in records], pa.string()),
        }
    )
    pq.write_table(table, str(path))


def write_with_embedding_type(path, records: list[dict], list_type: pa.DataType) -> None:
    """The canonical columns but with embeddings as large_list / fixed_size_list / other floats."""
    table = to_arrow(records)
    values = [np.asarray(r["embeddings"]) for r in records]
    if pa.types.is_fixed_size_list(list_type):
        arr = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(values), list_type.value_type), list_type.list_size)
    else:
        arr = pa.array(values, list_type)
    table = table.set_column(table.schema.get_field_index("embeddings"), "embeddings", arr)
    pq.write_table(table, str(path))


def table_without(records: list[dict], column: str) -> pa.Table:
    table = to_arrow(records)
    return table.drop_columns([column])


def replace_column(records: list[dict], column: str, array: pa.Array | Iterable) -> pa.Table:
    table = to_arrow(records)
    if not isinstance(array, (pa.Array, pa.ChunkedArray)):
        array = pa.array(list(array))
    return table.set_column(table.schema.get_field_index(column), column, array)


def dump_database(db) -> list[tuple]:
    """Every record with its vector bytes and id, for exact before/after comparisons."""
    from datasette_embeddings.storage.connection import connect
    from datasette_embeddings.storage.store import Store

    conn = connect(str(db), readonly=True)
    try:
        return sorted(
            (r["provider"], r["depiction_id"], r["model"], r["subject_id"], r["created"],
             json.dumps(r["attributes"], sort_keys=True), r["embeddings"].tobytes(), r["id"])
            for r in Store(conn).iter_records()
        )
    finally:
        conn.close()


def file_hashes(db) -> dict:
    """SHA-256 of a database and of its WAL (None when absent).

    A finished load closes its connection, which checkpoints and removes the WAL,
    so the main file alone holds the data; a leftover ``-wal`` is hashed too so a
    change hiding there still shows.  ``-shm`` is only a shared-memory index of
    the WAL, rebuilt on open, and is left out.  A zero-byte ``-wal`` (what a
    read-only connection leaves, as it may not delete the file) holds no frames
    and counts as absent.
    """
    import hashlib
    import os

    out = {}
    for suffix in ("", "-wal"):
        path = str(db) + suffix
        if os.path.exists(path) and (suffix == "" or os.path.getsize(path)):
            with open(path, "rb") as fp:
                out[suffix] = hashlib.sha256(fp.read()).hexdigest()
        else:
            out[suffix] = None
    return out


def write_synthetic(path, n: int, dims: int, *, provider: str = "synthetic", model: str = "synthetic-model",
                    seed: int = 0, created: int = 1_700_000_000, row_group_size: int = 10_000) -> None:
    """A large canonical file built column-wise (make_records is too slow for 10^4+ rows)."""
    from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    offsets = pa.array(np.arange(0, (n + 1) * dims, dims, dtype=np.int32))
    embeddings = pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel())).cast(CANONICAL_SCHEMA.field("embeddings").type)
    table = pa.Table.from_arrays(
        [
            pa.array([provider] * n),
            pa.array([f"{provider}-d{i}" for i in range(n)]),
            pa.array([f"{provider}-s{i // 2}" for i in range(n)]),
            pa.array([model] * n),
            embeddings,
            pa.array(np.full(n, created, dtype=np.int64)),
            pa.array([[("type", "image"), ("subject_title", f"Object {i}")] for i in range(n)],
                     CANONICAL_SCHEMA.field("attributes").type),
        ],
        schema=CANONICAL_SCHEMA,
    )
    pq.write_table(table, str(path), row_group_size=row_group_size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_benchmark(name: str):
    """Import a script from benchmarks/ (not a package) so tests run its code in a small size."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: headless Chromium from Debian's package, as every browser test launches it
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def wait_until_serving(proc, base: str, timeout: float = 90, log=None) -> None:
    """Block until the datasette started as ``proc`` answers at ``base``; its output in the error if it died.

    ``log``: the file the server writes its output to, for a server whose output is not a pipe (a pipe
    nobody reads fills up after a few hundred access-log lines, and the server then blocks on it).
    """
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/-/versions.json", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                output = open(log, "rb").read() if log is not None else proc.stdout.read()
                raise RuntimeError("datasette did not start: " + output.decode(errors="replace")[-2000:])
            time.sleep(0.3)
    wait_until_models_loaded(base, deadline - time.time())


def wait_until_models_loaded(base: str, timeout: float = 90) -> None:
    """Block until the server's query models are loaded or failed (``model_loads`` in ``/-/embeddings.json``).

    Requests never load a model: until its background load ends they answer 503, which
    a test that means to search is not about.
    """
    import json
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        with urllib.request.urlopen(f"{base}/-/embeddings.json", timeout=10) as response:
            loads = json.load(response).get("model_loads", {})
        if not any(m["state"] in ("queued", "loading") for m in loads.values()):
            return
        if time.time() > deadline:
            raise RuntimeError(f"the server's models did not load in time: {loads}")
        time.sleep(0.3)


@contextlib.contextmanager
def serving_datasette(args: list, folder, env: dict | None = None, timeout: float = 90, port: int | None = None):
    """A real ``datasette`` on a free port of 127.0.0.1 for the block: yields ``(base URL, process)``.

    Its output goes to ``folder/datasette-<port>.log``, never to a pipe: a pipe nobody reads fills
    after a few hundred access-log lines and the server then blocks writing to it (a browser test
    hung that way).  ``args`` are datasette's (databases and options, no host or port); ``port``:
    one chosen beforehand (:func:`free_port`), for data that must name the server's address.
    """
    import os
    import pathlib
    import subprocess
    import sys

    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    datasette = pathlib.Path(sys.executable).parent / "datasette"
    log_path = pathlib.Path(folder) / f"datasette-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(datasette), *map(str, args), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env if env is not None else {**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            wait_until_serving(proc, base, timeout=timeout, log=log_path)
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def launch_chromium():
    """Debian's headless Chromium driven by playwright (no browser download): a context manager."""
    from contextlib import contextmanager

    from playwright.sync_api import sync_playwright

    @contextmanager
    def launched():
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()

    return launched()
