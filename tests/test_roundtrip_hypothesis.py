"""Property: load -> export -> load gives back identical records and bit-identical vectors.

Random unicode ids, attribute maps, dimensions per model and created times;
vectors include -0.0, subnormals and large finite floats, within the lengths
``load`` accepts (a vector must have a cosine: see ``vectors.MIN_NORM``; the refusals
are tested in test_degenerate_vectors.py).  Examples are few so the file runs in seconds.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasette_embeddings.files import exporter
from datasette_embeddings.files import loader
from tests.helpers import dump_database, write_duckdb_layout, write_parquet

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ident = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=24)
attribute_maps = st.dictionaries(ident, st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=5)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-2.0**36, max_value=2.0**36)


def comparable(vector) -> bool:
    from datasette_embeddings.storage.vectors import MAX_NORM, MIN_NORM

    norm = float(np.sqrt(np.sum(np.square(np.asarray(vector, np.float32)))))
    return MIN_NORM <= norm <= MAX_NORM


@st.composite
def record_sets(draw, float_strategy=float32s):
    """Records with unique keys; each model label gets one dimension count."""
    models = draw(st.dictionaries(ident, st.integers(1, 12), min_size=1, max_size=3))
    keys = draw(st.lists(st.tuples(ident, ident, st.sampled_from(sorted(models))), min_size=1, max_size=12, unique=True))
    records = []
    for provider, depiction_id, model in keys:
        dims = models[model]
        records.append(
            {
                "provider": provider,
                "depiction_id": depiction_id,
                "subject_id": draw(ident),
                "model": model,
                "embeddings": draw(st.lists(float_strategy, min_size=dims, max_size=dims).filter(comparable)),
                "created": draw(st.integers(0, 2**62)),
                "attributes": draw(attribute_maps),
            }
        )
    return records


def as_dump(records, dtype=np.float32) -> list[tuple]:
    import json

    return sorted(
        (r["provider"], r["depiction_id"], r["model"], r["subject_id"], r["created"],
         json.dumps(r["attributes"], sort_keys=True), np.asarray(r["embeddings"], dtype).astype("<f4").tobytes())
        for r in records
    )


def without_ids(dump):
    return [row[:7] for row in dump]


def assert_round_trip(records, write, dtype=np.float32) -> None:
    """Load what ``write`` wrote, export it, load the export: both dumps equal the records."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        source, first, second, exported = d / "in.parquet", d / "first.db", d / "second.db", d / "export.parquet"
        write(source, records)
        loader.load(str(first), [str(source)])
        exporter.export(str(first), str(exported))
        loader.load(str(second), [str(exported)])
        first_dump, second_dump = without_ids(dump_database(first)), without_ids(dump_database(second))
    assert first_dump == as_dump(records, dtype)
    assert second_dump == first_dump


@SETTINGS
@given(record_sets())
def test_load_export_load_is_identity(records):
    assert_round_trip(records, write_parquet)


@SETTINGS
@given(record_sets(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e11, max_value=1e11)))
def test_duckdb_doubles_round_trip_as_the_stored_float32(records):
    assert_round_trip(records, write_duckdb_layout, np.float64)


@SETTINGS
@given(record_sets())
def test_loading_twice_changes_nothing(records):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        write_parquet(d / "in.parquet", records)
        db = d / "x.db"
        loader.load(str(db), [str(d / "in.parquet")])
        once = dump_database(db)
        report = loader.load(str(db), [str(d / "in.parquet")])
        assert report.totals().unchanged == len(records)
        assert dump_database(db) == once
