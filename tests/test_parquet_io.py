"""Parquet reading and writing on its own: error format, streaming, canonical output."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_embeddings.files.parquet_io import (
    CANONICAL_SCHEMA,
    RecordError,
    ParquetRecordWriter,
    read_batches,
    write_records,
)
from tests.helpers import make_records, write_parquet, write_synthetic


@pytest.mark.parametrize("kwargs,text", [
    ({}, "bad thing"),
    ({"source": "f.parquet"}, "f.parquet: bad thing"),
    ({"source": "f.parquet", "row": 0}, "f.parquet, row 0: bad thing"),
    ({"source": "f.parquet", "row": 7, "field": "embeddings"}, "f.parquet, row 7, field 'embeddings': bad thing"),
    ({"field": "created"}, "field 'created': bad thing"),
])
def test_error_message_format(kwargs, text):
    assert str(RecordError("bad thing", **kwargs)) == text


def test_batches_are_bounded_and_rows_numbered_across_the_file(tmp_path):
    path = tmp_path / "big.parquet"
    write_synthetic(path, 2_500, 16, row_group_size=1_000)
    batches = list(read_batches(str(path), batch_size=300))
    assert max(len(b) for b in batches) <= 300
    assert sum(len(b) for b in batches) == 2_500
    starts = [b.first_row for b in batches]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(b2.first_row == b1.first_row + len(b1) for b1, b2 in zip(batches, batches[1:]))
    whole = pq.read_table(str(path)).column("embeddings").to_pylist()
    flat = [v for b in batches for v in b.embeddings]
    assert all(v.dtype == np.float32 for v in flat)
    assert [v.tolist() for v in flat[::97]] == [np.asarray(w, np.float32).tolist() for w in whole[::97]]


def test_error_row_counts_from_the_file_start_not_the_batch(tmp_path):
    records = make_records(n=50, models={"m": 4})
    records[37]["embeddings"][1] = np.inf
    path = tmp_path / "x.parquet"
    write_parquet(path, records, row_group_size=10)
    with pytest.raises(RecordError) as info:
        list(read_batches(str(path), batch_size=8))
    assert (info.value.row, info.value.field, info.value.source) == (37, "embeddings", str(path))


def test_writer_produces_the_canonical_schema_in_row_groups(tmp_path):
    path = tmp_path / "out.parquet"
    records = make_records(n=25, models={"m": 3})
    with ParquetRecordWriter(str(path), row_group_size=10) as writer:
        for r in records:
            writer.write(r)
    pf = pq.ParquetFile(str(path))
    assert pf.schema_arrow == CANONICAL_SCHEMA
    assert pf.num_row_groups == 3 and pf.metadata.num_rows == 25
    assert write_records(str(tmp_path / "again.parquet"), records) == 25


def test_written_attributes_and_vectors_are_exact(tmp_path):
    records = make_records(n=4, models={"m": 5})
    records[0]["embeddings"] = np.array([-0.0, 1e-45, -3.4e38, 1.0, 0.1], np.float32)
    path = tmp_path / "out.parquet"
    write_records(str(path), records)
    (batch,) = list(read_batches(str(path)))
    assert batch.embeddings[0].tobytes() == records[0]["embeddings"].tobytes()
    assert batch.attributes == [r["attributes"] for r in records]
    table = pq.read_table(str(path))
    assert table.schema.field("attributes").type == pa.map_(pa.string(), pa.string())


MAP = pa.map_(pa.string(), pa.string())


def checked_json(arr: pa.Array) -> list[str]:
    """What the row-by-row checked path stores for ``arr``."""
    from datasette_embeddings.files.parquet_io import _attribute_dicts, attributes_json

    return [attributes_json(d) for d in _attribute_dicts(arr, 0)]


@pytest.mark.parametrize("start,length", [(0, 5), (1, 4), (2, 2), (4, 1), (3, 0)])
def test_map_json_fast_path_matches_the_checked_path_on_sliced_batches(start, length):
    from datasette_embeddings.files.parquet_io import _string_map_json

    full = pa.array(
        [[("a", "1"), ("b", '2 "q" \\ /')], [], [("d", "3"), ("c", "")], [("e", "5")], [("€", "✓"), ("ü", "ß")]], MAP
    )
    part = full.slice(start, length)
    fast = _string_map_json(part)
    assert fast is not None
    assert fast == checked_json(part)
    assert [json.loads(text) for text in fast] == [dict(pairs) for pairs in part.to_pylist()]


@pytest.mark.parametrize("values", [
    [[("a", None)]],              # null value: dropped by the checked path
    [[("", "x")]],                # empty key: refused by the checked path
    [None, [("a", "1")]],         # null map
    [[("a", "1"), ("a", "2")]],   # a repeated key: the last one wins
    [[("a", "line\nbreak")]],      # control characters need \\u escapes
    [[("a\x01", "x")]],
])
def test_unusual_maps_take_the_checked_path(values):
    from datasette_embeddings.files.parquet_io import _string_map_json

    assert _string_map_json(pa.array(values, MAP)) is None


text = st.text(st.characters(codec="utf-8"), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(text.filter(bool), text, max_size=4), max_size=6), st.data())
def test_map_json_is_exactly_what_the_json_module_writes(maps, data):
    """Stored text is compared to tell unchanged rows from updated ones: both paths must agree to the byte."""
    from datasette_embeddings.files.parquet_io import _attributes, _string_map_json

    sort = data.draw(st.booleans())
    arr = pa.array([sorted(m.items()) if sort else list(m.items()) for m in maps], MAP)
    assert _attributes(arr, 0) == checked_json(arr)
    if not any(ord(c) < 32 for m in maps for pair in m.items() for c in "".join(pair)):
        assert _string_map_json(arr) is not None
    assert [json.loads(t) for t in _attributes(arr, 0)] == maps


def test_reading_keeps_arrow_memory_bounded_by_a_row_group(tmp_path):
    """Streaming must not accumulate row groups (pyarrow's pre_buffer did: memory grew with the file)."""
    path = tmp_path / "long.parquet"
    rows, dims = 40_000, 64
    write_synthetic(path, rows, dims, row_group_size=2_000)
    whole_vectors = rows * dims * 4
    baseline = pa.total_allocated_bytes()
    peak = 0
    for _batch in read_batches(str(path), batch_size=500):
        peak = max(peak, pa.total_allocated_bytes() - baseline)
    assert peak < whole_vectors / 4, (peak, whole_vectors)


@pytest.mark.parametrize("dims", [[3, 3, 3], [3, 5, 3]], ids=["one-size", "mixed-sizes"])
def test_vector_blobs_keep_trailing_zeros_and_every_bit(tmp_path, dims):
    """BLOBs are cut from the decoded matrix; a zero at the end must not be dropped as padding."""
    vectors = [np.zeros(d, np.float32) for d in dims]
    vectors[0][0] = 1.0
    vectors[1][-1] = -0.0
    vectors[2][:] = [np.float32(1e-45), 0.0, 0.0]
    records = make_records(n=len(dims), models={"m": 3})
    for r, v in zip(records, vectors):
        r["embeddings"] = v
        r["model"] = f"m{len(v)}"
    path = tmp_path / "zeros.parquet"
    write_parquet(path, records)
    (batch,) = list(read_batches(str(path)))
    assert batch.vectors == [v.tobytes() for v in vectors]
    assert batch.dimensions.tolist() == dims
