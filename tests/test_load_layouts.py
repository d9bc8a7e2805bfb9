"""Every Parquet layout real writers produce loads to the same records.

Each case writes real Parquet in one writer's layout and checks the full dump
(records, attributes and vector bytes) against what the records say, so a
layout that silently dropped a field or rounded a vector would fail.
"""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA
from tests.helpers import (
    dump_database,
    make_records,
    replace_column,
    write_duckdb_layout,
    write_go_layout,
    write_parquet,
    write_with_embedding_type,
)

DIMS = 6


def base_records() -> list[dict]:
    return make_records(n=7, providers=("met", "nga"), models={"m": DIMS}, seed=11)


def expected(records: list[dict], vector_dtype=np.float32) -> list[tuple]:
    """The dump a correct load gives: float32 of the written vector (rounded through ``vector_dtype``)."""
    return sorted(
        (
            r["provider"], str(r["depiction_id"]), r["model"], str(r["subject_id"]) or str(r["depiction_id"]), int(r["created"]),
            json.dumps(r["attributes"], sort_keys=True),
            np.asarray(r["embeddings"]).astype(vector_dtype).astype("<f4").tobytes(),
        )
        for r in records
    )


def loaded(tmp_path, path) -> list[tuple]:
    db = tmp_path / "layout.db"
    loader.load(str(db), [str(path)])
    return [row[:7] for row in dump_database(db)]


def _canonical_with(records, column, array) -> pa.Table:
    return replace_column(records, column, array)


def layout_pyarrow(path, records):
    write_parquet(path, records)
    return expected(records)


def layout_go(path, records):
    write_go_layout(path, records)
    schema = pq.ParquetFile(str(path)).schema
    assert "element" in str(schema) and "key_value" in str(schema)
    return expected(records)


def layout_duckdb(path, records):
    write_duckdb_layout(path, records)
    assert pq.read_schema(str(path)).field("embeddings").type == pa.list_(pa.float64())
    return expected(records, np.float64)


def layout_large_list(path, records):
    write_with_embedding_type(path, records, pa.large_list(pa.float32()))
    return expected(records)


def layout_fixed_size_list(path, records):
    write_with_embedding_type(path, records, pa.list_(pa.float32(), DIMS))
    return expected(records)


def layout_float16(path, records):
    for r in records:
        r["embeddings"] = np.asarray(r["embeddings"], np.float16)
    write_with_embedding_type(path, records, pa.list_(pa.float16()))
    assert pq.read_schema(str(path)).field("embeddings").type.value_type == pa.float16()
    return expected(records, np.float16)


def layout_dictionary_strings(path, records):
    table = pa.Table.from_pydict(
        {name: records_column(records, name) for name in CANONICAL_SCHEMA.names}, schema=CANONICAL_SCHEMA
    )
    for name in ("provider", "model", "subject_id"):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).dictionary_encode())
    pq.write_table(table, str(path), use_dictionary=True)
    assert "RLE_DICTIONARY" in str(pq.ParquetFile(str(path)).metadata.row_group(0).column(0).encodings)
    return expected(records)


def records_column(records, name):
    if name == "embeddings":
        return [np.asarray(r["embeddings"], np.float32) for r in records]
    if name == "attributes":
        return [sorted(r["attributes"].items()) for r in records]
    return [r[name] for r in records]


def layout_integer_ids(path, records):
    table = replace_column(records, "depiction_id", pa.array([1000 + i for i in range(len(records))], pa.int64()))
    table = table.set_column(2, "subject_id", pa.array([500 + i // 2 for i in range(len(records))], pa.int32()))
    pq.write_table(table, str(path))
    for i, r in enumerate(records):
        r["depiction_id"], r["subject_id"] = str(1000 + i), str(500 + i // 2)
    return expected(records)


def layout_timestamp_created(path, records):
    for i, r in enumerate(records):
        r["created"] = 1_700_000_000 + i
    millis = pa.array([r["created"] * 1000 + 999 for r in records], pa.timestamp("ms", tz="UTC"))
    pq.write_table(replace_column(records, "created", millis), str(path))
    return expected(records)


def layout_attributes_list_of_structs(path, records):
    typ = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    arr = pa.array([[{"key": k, "value": v} for k, v in sorted(r["attributes"].items())] for r in records], typ)
    pq.write_table(replace_column(records, "attributes", arr), str(path))
    return expected(records)


def layout_attributes_json_with_numbers(path, records):
    """DuckDB's JSON column may carry numbers and booleans; they are stored as text."""
    arr = pa.array([json.dumps({"year": 1889, "public_domain": True, "title": r["attributes"]["subject_title"]}) for r in records])
    for r in records:
        r["attributes"] = {"year": "1889", "public_domain": "true", "title": r["attributes"]["subject_title"]}
    pq.write_table(replace_column(records, "attributes", arr), str(path))
    return expected(records)


def layout_large_strings(path, records):
    table = replace_column(records, "provider", pa.array([r["provider"] for r in records], pa.large_string()))
    table = table.set_column(1, "depiction_id", pa.array([r["depiction_id"] for r in records], pa.large_string()))
    pq.write_table(table, str(path))
    return expected(records)


def layout_many_row_groups(path, records):
    records.extend(make_records(n=300, providers=("big",), models={"m": DIMS}, seed=2))
    write_parquet(path, records, row_group_size=64)
    assert pq.ParquetFile(str(path)).num_row_groups > 4
    return expected(records)


def layout_nullable_optional_columns(path, records):
    """pyarrow's default: every column optional, nulls allowed where the format allows them."""
    schema = pa.schema([pa.field(f.name, f.type, nullable=True) for f in CANONICAL_SCHEMA])
    table = pa.Table.from_pydict({name: records_column(records, name) for name in CANONICAL_SCHEMA.names}, schema=schema)
    pq.write_table(table, str(path))
    assert all(f.nullable for f in pq.read_schema(str(path)))
    return expected(records)


LAYOUTS = [
    layout_pyarrow,
    layout_go,
    layout_duckdb,
    layout_large_list,
    layout_fixed_size_list,
    layout_float16,
    layout_dictionary_strings,
    layout_integer_ids,
    layout_timestamp_created,
    layout_attributes_list_of_structs,
    layout_attributes_json_with_numbers,
    layout_large_strings,
    layout_many_row_groups,
    layout_nullable_optional_columns,
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=[f.__name__[len("layout_"):] for f in LAYOUTS])
def test_layout_loads_to_the_same_records(tmp_path, layout):
    records = base_records()
    path = tmp_path / "in.parquet"
    want = layout(path, records)
    assert loaded(tmp_path, path) == want


def test_one_file_mixing_models_of_different_dimensions(tmp_path):
    records = make_records(n=9, providers=("met",), models={"clip": 512, "minilm": 384, "tiny": 3}, seed=4)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(records))  # models interleaved row by row
    records = [records[i] for i in order]
    path = tmp_path / "mixed.parquet"
    write_parquet(path, records, row_group_size=5)
    db = tmp_path / "mixed.db"
    loader.load(str(db), [str(path)], batch_size=4)
    assert [row[:7] for row in dump_database(db)] == expected(records)
    conn = sqlite3.connect(db)
    models = conn.execute("select label, dimensions, record_count, vec_table from models order by label").fetchall()
    assert [(m[0], m[1], m[2]) for m in models] == [("clip", 512, 9), ("minilm", 384, 9), ("tiny", 3, 9)]
    assert len({m[3] for m in models}) == 3
    for _label, _dims, count, table in models:
        assert conn.execute(f"select count(*) from {table}_rowids").fetchone()[0] == count
