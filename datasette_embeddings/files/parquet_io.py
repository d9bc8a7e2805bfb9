"""Reading and writing the shared embeddings record in Parquet.

Real files come from several writers (parquet-go, pyarrow, DuckDB), each with its
own idea of how a list, a map or a float looks.  This module is the one place
that turns any of those layouts into a :class:`RecordBatch` of plain Python and
NumPy values, and the one place that writes the canonical layout back out.
Every problem is reported as a :class:`RecordError` naming file, row and field;
rows are numbered from 0 across the whole file, as pyarrow and pandas do.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import RecordError
from . import oembeddings
from .footer import FileStats
from .attributes import attribute_dicts as _attribute_dicts, is_string as _is_string
from .layouts import Layout, ResolvedLayout
from ..storage.vectors import MAX_DIMENSIONS, MAX_NORM, MIN_NORM, VECTOR_DTYPE, norm_problem

REQUIRED_COLUMNS = ("provider", "depiction_id", "subject_id", "model", "embeddings", "created", "attributes")
STRING_COLUMNS = ("provider", "depiction_id", "subject_id", "model")
#: ids may be numbers in files written from numeric catalogues; they are stored as text
NUMERIC_ID_COLUMNS = ("depiction_id", "subject_id")
MAX_ID_LENGTH = 1024
MAX_CREATED = 2**63 - 1  # a uint64 column can hold more than SQLite can store

CANONICAL_SCHEMA = pa.schema(
    [
        pa.field("provider", pa.string(), nullable=False),
        pa.field("depiction_id", pa.string(), nullable=False),
        pa.field("subject_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("embeddings", pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),
        pa.field("created", pa.int64(), nullable=False),
        pa.field("attributes", pa.map_(pa.string(), pa.string()), nullable=False),
    ]
)


#: the stored form of attributes: compact, key-sorted JSON, so identical maps compare equal as text
attributes_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class RecordBatch:
    """One batch of validated records, columns as Python lists / NumPy arrays."""

    first_row: int
    provider: list[str]
    depiction_id: list[str]
    subject_id: list[str]
    model: list[str]
    created: list[int]
    attributes_json: list[str]  # as :data:`attributes_json` writes them
    #: little-endian float32 BLOBs, as vec0 stores them: made column-wise here, so
    #: the writer does no per-row conversion
    vectors: list[bytes]
    dimensions: np.ndarray  # int64, one per row
    ignored_columns: list[str] = field(default_factory=list)
    #: per OEmbeddings problem (:mod:`.oembeddings`), which rows have it; rows are loaded anyway
    attribute_problems: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nonconforming(self) -> int:
        """Rows whose attributes break at least one OEmbeddings rule."""
        return int(oembeddings.nonconforming(self.attribute_problems, len(self)).sum())

    def __len__(self) -> int:
        return len(self.provider)

    @property
    def attributes(self) -> list[dict]:
        return [json.loads(text) for text in self.attributes_json]

    @property
    def embeddings(self) -> list[np.ndarray]:
        return [np.frombuffer(blob, dtype=VECTOR_DTYPE) for blob in self.vectors]


# ---------------------------------------------------------------- reading

def open_parquet(path: str, layout: Layout | None = None) -> pq.ParquetFile:
    """Open a Parquet file, turning pyarrow's many failure modes into one clear error.

    With a ``layout`` (another file layout, :mod:`.layouts`) the shared columns
    are not required; :func:`resolve_layout` checks the layout's columns instead.
    """
    try:
        # pre_buffer keeps every row group read so far in memory until the file is
        # closed (RSS grew by the whole file: 2.3 GB for 1M x 512); off, it stays flat
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
    except FileNotFoundError:
        raise RecordError("file not found", source=path) from None
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as ex:
        raise RecordError(f"not a readable Parquet file ({ex})", source=path) from None
    if layout is not None and not layout.is_identity:
        return pf
    check_schema(pf.schema_arrow, None, path)
    return pf


def check_schema(schema: pa.Schema, layout: Layout | None, source: str) -> ResolvedLayout | None:
    """Whether a file with this schema can give records, before a row is read.

    Without a layout: the seven shared columns, once each, of usable types.  With
    one: every column it names present, once, of a usable type for its field.  The
    schema alone is enough, so a URL is checked from its footer before any download.
    Returns the resolved layout (None for the shared layout); raises :class:`RecordError`.
    """
    if layout is not None and not layout.is_identity:
        return _resolve_layout(schema, layout, source)
    counted = Counter(schema.names)
    repeated = [c for c in REQUIRED_COLUMNS if counted[c] > 1]
    if repeated:
        raise RecordError(
            "duplicate column name(s): " + ", ".join(f"{c} ({counted[c]} columns)" for c in repeated)
            + "; each required column must appear once",
            source=source,
        )
    names = set(counted)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise RecordError(
            "missing required column(s): " + ", ".join(missing)
            + " (expected " + ", ".join(REQUIRED_COLUMNS) + ")",
            source=source,
        )
    for name in REQUIRED_COLUMNS:
        _check_column_type(name, schema.field(name).type, source)
    return None


#: uncompressed bytes of the required columns read per batch at most (a row is
#: never split).  Rows of 512-d vectors with ordinary attributes are about 2.3 KB, so
#: the default 4,096-row batch is 10 MB; rows carrying long texts are read fewer at a time.
BATCH_BYTES = 16 << 20

#: read column chunks through a buffer of this size instead of whole: a writer that put
#: a large file in one row group otherwise has all of it in memory at once
READ_BUFFER_BYTES = 1 << 20


def rows_per_batch(pf: pq.ParquetFile, row_group: int, batch_size: int, batch_bytes: int = BATCH_BYTES,
                   columns: Sequence[str] = REQUIRED_COLUMNS) -> int:
    """How many rows of ``row_group`` to read at a time: ``batch_size``, fewer for heavy rows.

    The row group's own metadata gives its rows' average uncompressed size in the
    columns we read, so memory is bounded by bytes, not only rows.
    """
    meta = pf.metadata.row_group(row_group)
    if meta.num_rows == 0:
        return batch_size
    wanted = set(columns)
    size = 0
    for i in range(meta.num_columns):
        column = meta.column(i)
        if column.path_in_schema.split(".", 1)[0] in wanted:
            size += column.total_uncompressed_size
    per_row = max(size / meta.num_rows, 1.0)
    return max(1, min(batch_size, int(batch_bytes // per_row)))


def _arrow_batches(pf: pq.ParquetFile, batch_size: int, columns: Sequence[str] = REQUIRED_COLUMNS) -> Iterator[pa.RecordBatch]:
    for i in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(
            batch_size=rows_per_batch(pf, i, batch_size, columns=columns), row_groups=[i], columns=list(columns)
        )


def read_footer_keys(path: str) -> dict:
    """The key/value metadata of a Parquet footer (bytes to bytes, as pyarrow gives them)."""
    try:
        return dict(pq.read_metadata(path).metadata or {})
    except (pa.ArrowException, OSError) as ex:
        raise RecordError(f"not a readable Parquet file ({ex})", source=path) from None


def resolve_layout(pf: pq.ParquetFile, layout: Layout, path: str) -> ResolvedLayout:
    """Check a layout against the file: every named column present, each of a usable type."""
    return _resolve_layout(pf.schema_arrow, layout, path)


def _resolve_layout(schema: pa.Schema, layout: Layout, source: str) -> ResolvedLayout:
    counted = Counter(schema.names)
    resolved = layout.resolve(schema, source=source)
    for column in resolved.read_columns:
        if counted[column] > 1:
            raise RecordError(f"duplicate column name: {column} ({counted[column]} columns)", source=source)
    for fld, column in resolved.origin.items():
        if column is not None:
            try:
                _check_column_type(fld, schema.field(column).type, source)
            except RecordError as ex:
                raise RecordError(ex.message + f" (for {fld})", source=source, field=column) from None
    return resolved


def read_batches(
    path: str, *, batch_size: int = 4096, layout: Layout | None = None, comparable: bool = False
) -> Iterator[RecordBatch]:
    """Stream validated batches of at most ``batch_size`` rows and, roughly, :data:`BATCH_BYTES`.

    ``comparable`` (what ``load`` asks for) also refuses vectors without a cosine:
    all zeros, or lengths that overflow or underflow float32 (see ``vectors.MIN_NORM``).
    Reading a file for other purposes keeps every finite float exactly.
    """
    pf = open_parquet(path, layout)
    resolved = None if layout is None or layout.is_identity else resolve_layout(pf, layout, path)
    if resolved is None:
        columns = list(REQUIRED_COLUMNS)
        extra = list(dict.fromkeys(n for n in pf.schema_arrow.names if n not in REQUIRED_COLUMNS))
    else:
        columns, extra = resolved.read_columns, resolved.ignored_columns
    row = 0
    try:
        iterator = _arrow_batches(pf, batch_size, columns)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as ex:
                raise RecordError(f"could not read data after row {row} (truncated or corrupt file?): {ex}", source=path) from None
            if resolved is not None:
                try:
                    batch = resolved.transform(batch, first_row=row)
                    converted = convert_batch(batch, first_row=row, comparable=comparable)
                except RecordError as ex:
                    # name the user's column, not our field
                    column = resolved.origin.get(ex.field or "")
                    if column and column != ex.field:
                        raise RecordError(f"{ex.message} (read as {ex.field})", source=ex.source, row=ex.row, field=column) from None
                    raise
            else:
                converted = convert_batch(batch, first_row=row, comparable=comparable)
            converted.ignored_columns = extra
            row += len(converted)
            yield converted
    except RecordError as ex:
        raise ex.located(path) from None


def _check_column_type(name: str, typ: pa.DataType, path: str) -> None:
    def bad(expected: str) -> RecordError:
        return RecordError(f"wrong column type {typ}, expected {expected}", source=path, field=name)

    if name in STRING_COLUMNS:
        ok = _is_string(typ) or (name in NUMERIC_ID_COLUMNS and pa.types.is_integer(typ))
        if not ok:
            raise bad("string" + (" or integer" if name in NUMERIC_ID_COLUMNS else ""))
    elif name == "created":
        if not (pa.types.is_integer(typ) or pa.types.is_timestamp(typ)):
            raise bad("int64 (Unix seconds) or timestamp")
    elif name == "embeddings":
        if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
            raise bad("list<float>")
        if not pa.types.is_floating(typ.value_type):
            raise bad("list<float> (list elements are " + str(typ.value_type) + ")")
    elif name == "attributes":
        ok = pa.types.is_map(typ) or _is_string(typ) or pa.types.is_null(typ)
        if pa.types.is_struct(typ):
            ok = True
        if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_struct(typ.value_type):
            ok = {f.name for f in typ.value_type} >= {"key", "value"}
        if not ok:
            raise bad("map<string,string> or a JSON object as string")


def _decode_strings(arr: pa.Array, name: str, first_row: int, *, required: bool) -> list[str | None]:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type):
        arr = arr.cast(pa.string())
    try:
        values = arr.to_pylist()
    except UnicodeDecodeError:
        for i in range(len(arr)):
            try:
                arr[i].as_py()
            except UnicodeDecodeError:
                raise RecordError("is not valid UTF-8 text", row=first_row + i, field=name) from None
        raise
    # checked column-wise in Arrow; only a column with a problem is walked row by row
    empty = pc.or_kleene(pc.is_null(arr), pc.equal(arr, ""))
    bad = pc.or_kleene(pc.greater(pc.utf8_length(arr), MAX_ID_LENGTH), pc.match_substring(arr, "\x00"))
    if required:
        bad = pc.or_kleene(bad, empty)
    if pc.any(bad).as_py():
        for i, v in enumerate(values):
            if v is None or v == "":
                if required:
                    raise RecordError("is empty; it is part of the record key and must be set", row=first_row + i, field=name)
                continue
            if len(v) > MAX_ID_LENGTH:
                raise RecordError(f"is {len(v)} characters long; at most {MAX_ID_LENGTH} are allowed", row=first_row + i, field=name)
            if "\x00" in v:
                raise RecordError("contains a NUL character", row=first_row + i, field=name)
    return values


def _created(arr: pa.Array, first_row: int) -> list[int]:
    if pa.types.is_timestamp(arr.type):
        # whole seconds, rounded down: a cast to timestamp[s] refuses sub-second values
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[arr.type.unit]
        values = [None if v is None else v // per_second for v in arr.cast(pa.int64()).to_pylist()]
    else:
        values = arr.to_pylist()
    for i, v in enumerate(values):
        if v is None:
            raise RecordError("is empty; a Unix time in seconds is required", row=first_row + i, field="created")
        if v < 0:
            raise RecordError(f"is negative ({v}); a Unix time in seconds is required", row=first_row + i, field="created")
        if v > MAX_CREATED:
            raise RecordError(f"is too large ({v}); SQLite integers end at {MAX_CREATED}", row=first_row + i, field="created")
    return values


def _attributes(arr: pa.Array, first_row: int) -> list[str]:
    """Attributes as stored JSON text, whatever layout the writer chose."""
    typ = arr.type
    if pa.types.is_null(typ):
        return ["{}"] * len(arr)
    fast = _string_map_json(arr)
    if fast is not None:
        return fast
    return [attributes_json(obj) for obj in _attribute_dicts(arr, first_row)]


def _json_quoted(strings: pa.Array) -> pa.Array:
    """JSON string bodies for text without control characters: only backslash and quote need escapes."""
    return pc.replace_substring(pc.replace_substring(strings, "\\", "\\\\"), '"', '\\"')


def _keys_increasing(keys: pa.Array, offsets: np.ndarray) -> bool:
    """Whether every map's keys are strictly increasing (sorted, no repeats); ``offsets`` start at 0."""
    increasing = pc.less(keys.slice(0, len(keys) - 1), keys.slice(1)).to_numpy(zero_copy_only=False)
    # a comparison across two maps (the last key of one, the first of the next) does not count
    firsts = offsets[1:-1]
    increasing[firsts[(firsts > 0) & (firsts < len(keys))] - 1] = True
    return bool(increasing.all())


def _string_map_json(arr: pa.Array) -> list[str] | None:
    """The stored JSON of a plain map<string,string> column, built column-wise in Arrow.

    Turning a map column into Python dicts and encoding each one was most of the
    reading time of a load.  This writes the same text :data:`attributes_json`
    would, for the common case: no null maps or values, no empty or repeated
    keys, no control characters.  Anything else returns None and takes the
    checked path.
    """
    typ = arr.type
    plain = (pa.string(), pa.large_string())
    if not pa.types.is_map(typ) or arr.null_count or typ.key_type not in plain or typ.item_type not in plain:
        return None
    offsets = arr.offsets.to_numpy()
    start, count = int(offsets[0]), int(offsets[-1] - offsets[0])
    # a sliced batch keeps absolute offsets; ``.keys``/``.items`` may be the whole child array
    base = start if len(arr.keys) == count else 0
    keys = arr.keys.slice(start - base, count)
    items = arr.items.slice(start - base, count)
    if count:
        if keys.null_count or items.null_count or pc.any(pc.equal(keys, "")).as_py():
            return None
        control = r"[\x00-\x1f]"
        if pc.any(pc.match_substring_regex(keys, control)).as_py() or pc.any(pc.match_substring_regex(items, control)).as_py():
            return None
        if count > 1 and not _keys_increasing(keys, offsets - start):
            # Go's parquet writer, for one, stores map entries in random order
            lengths = np.diff(offsets)
            rows = pa.array(np.repeat(np.arange(len(lengths), dtype=np.int32), lengths))
            order = pc.sort_indices(pa.table({"row": rows, "key": keys}), sort_keys=[("row", "ascending"), ("key", "ascending")])
            keys, items = keys.take(order), items.take(order)
            if not _keys_increasing(keys, offsets - start):
                return None  # a repeated key
    pairs = pc.binary_join_element_wise('"', _json_quoted(keys), '":"', _json_quoted(items), '"', "")
    per_row = pa.ListArray.from_arrays(pa.array(offsets - start, pa.int32()), pairs)
    return pc.binary_join_element_wise("{", pc.binary_join(per_row, ","), "}", "").to_pylist()


def _embeddings(arr: pa.Array, first_row: int, comparable: bool = False) -> tuple[list[bytes], np.ndarray]:
    """Validated vectors as vec0's float32 BLOBs, and the dimension count of each row."""
    n = len(arr)
    if arr.null_count:
        i = next(i for i in range(n) if not arr[i].is_valid)
        raise RecordError("is null; every record needs a vector", row=first_row + i, field="embeddings")
    if pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        lengths = np.full(n, size, dtype=np.int64)
    else:
        lengths = np.asarray(arr.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64)
    values = arr.flatten()
    if values.null_count:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        bad = next(i for i in range(len(values)) if not values[i].is_valid)
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise RecordError("holds a null number", row=first_row + row, field="embeddings")
    flat = np.asarray(values.to_numpy(zero_copy_only=False))
    if flat.dtype != np.float32:
        with np.errstate(over="ignore"):
            flat = flat.astype(np.float32)  # double -> float32; overflow becomes inf and is caught below
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if (lengths == 0).any():
        i = int(np.argmax(lengths == 0))
        raise RecordError("is an empty vector", row=first_row + i, field="embeddings")
    if (lengths > MAX_DIMENSIONS).any():
        i = int(np.argmax(lengths > MAX_DIMENSIONS))
        raise RecordError(
            f"has {int(lengths[i])} dimensions; at most {MAX_DIMENSIONS} are supported", row=first_row + i, field="embeddings"
        )
    finite = np.isfinite(flat)
    if not finite.all():
        bad = int(np.argmin(finite))
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise RecordError(
            f"holds a NaN or infinite value at position {bad - int(offsets[row])}", row=first_row + row, field="embeddings"
        )
    flat = flat.astype(VECTOR_DTYPE, copy=False)
    if comparable:
        _check_lengths(flat, lengths, offsets, first_row)
    if n and (lengths == lengths[0]).all():
        # one BLOB per row straight from the matrix, as numpy's fixed-size byte strings
        blobs = flat.reshape(n, int(lengths[0])).view(f"V{int(lengths[0]) * 4}").ravel().tolist()
    else:
        data = flat.tobytes()
        blobs = [data[4 * int(a):4 * int(b)] for a, b in zip(offsets[:-1], offsets[1:])]
    return blobs, lengths


def _check_lengths(flat: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, first_row: int) -> None:
    """Refuse a zero vector or one too long to compare (see ``vectors.MIN_NORM``): cosine is undefined.

    Squares are summed in float32, as vec0 sums them: a length that overflows there
    is infinite here and refused, one that underflows is zero and refused.
    """
    if not len(lengths):
        return
    with np.errstate(over="ignore", under="ignore"):
        if (lengths == lengths[0]).all():
            rows = flat.reshape(len(lengths), int(lengths[0]))
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        else:
            norms = np.sqrt(np.add.reduceat(flat * flat, offsets[:-1].astype(np.int64)))
    bad = ~((norms >= MIN_NORM) & (norms <= MAX_NORM))
    if bad.any():
        i = int(np.argmax(bad))
        raise RecordError(
            f"cannot be compared by cosine similarity: {norm_problem(float(norms[i]))}",
            row=first_row + i, field="embeddings",
        )


def convert_batch(batch: pa.RecordBatch, *, first_row: int = 0, comparable: bool = False) -> RecordBatch:
    """Validate one Arrow batch and turn it into plain values (the only conversion path)."""
    col = {name: batch.column(batch.schema.get_field_index(name)) for name in REQUIRED_COLUMNS}
    provider = _decode_strings(col["provider"], "provider", first_row, required=True)
    depiction_id = _decode_strings(col["depiction_id"], "depiction_id", first_row, required=True)
    model = _decode_strings(col["model"], "model", first_row, required=True)
    subject_raw = _decode_strings(col["subject_id"], "subject_id", first_row, required=False)
    # a depiction without a subject is its own subject
    subject_id = [s if s else d for s, d in zip(subject_raw, depiction_id)]
    vectors, dimensions = _embeddings(col["embeddings"], first_row, comparable)
    attributes = _attributes(col["attributes"], first_row)
    problems = oembeddings.problem_masks(col["attributes"])
    if problems is None:  # other attribute layouts: checked from the stored JSON
        problems = oembeddings.problem_masks_from_dicts(json.loads(text) for text in attributes)
    return RecordBatch(
        first_row=first_row,
        provider=provider,
        depiction_id=depiction_id,
        subject_id=subject_id,
        model=model,
        created=_created(col["created"], first_row),
        attributes_json=attributes,
        vectors=vectors,
        dimensions=dimensions,
        attribute_problems=problems,
    )


# ---------------------------------------------------------------- writing

def to_arrow(rows: Sequence[dict]) -> pa.Table:
    """Canonical Arrow table from dicts with the record fields (vectors as arrays or lists)."""
    embeddings = pa.array(
        [np.asarray(r["embeddings"], dtype=np.float32) for r in rows],
        type=CANONICAL_SCHEMA.field("embeddings").type,
    )
    return pa.Table.from_arrays(
        [
            pa.array([r["provider"] for r in rows], pa.string()),
            pa.array([r["depiction_id"] for r in rows], pa.string()),
            pa.array([r.get("subject_id") or r["depiction_id"] for r in rows], pa.string()),
            pa.array([r["model"] for r in rows], pa.string()),
            embeddings,
            pa.array([int(r["created"]) for r in rows], pa.int64()),
            pa.array([sorted((r.get("attributes") or {}).items()) for r in rows], CANONICAL_SCHEMA.field("attributes").type),
        ],
        schema=CANONICAL_SCHEMA,
    )


#: the stored attribute JSON has no surrounding whitespace: ``raw_decode`` skips the two
#: regular-expression passes of ``json.loads`` (a third of an export's Python time)
_decode_json = json.JSONDecoder().raw_decode


def stored_rows_to_arrow(rows: Sequence[tuple]) -> pa.Table:
    """Canonical Arrow table from rows in the stored form, column by column.

    A row is ``(provider, depiction_id, subject_id, model, created, attributes_json,
    vector_blob)`` as the store keeps it: vectors stay bytes until one NumPy view of
    the whole batch, and the stored attribute JSON is already key-sorted.
    """
    n = len(rows)
    provider, depiction_id, subject_id, model, created, attributes, blobs = (list(c) for c in zip(*rows)) if n else ([],) * 7
    lengths = np.fromiter((len(b) // 4 for b in blobs), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pa.array(np.frombuffer(b"".join(blobs), dtype=VECTOR_DTYPE), pa.float32())
    embeddings = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, type=CANONICAL_SCHEMA.field("embeddings").type)
    return pa.Table.from_arrays(
        [
            pa.array(provider, pa.string()),
            pa.array(depiction_id, pa.string()),
            pa.array([s or d for s, d in zip(subject_id, depiction_id)], pa.string()),
            pa.array(model, pa.string()),
            embeddings,
            pa.array(created, pa.int64()),
            pa.array([sorted(_decode_json(text)[0].items()) if text else [] for text in attributes], CANONICAL_SCHEMA.field("attributes").type),
        ],
        schema=CANONICAL_SCHEMA,
    )


class ParquetRecordWriter:
    """Write records in the canonical layout, a row group at a time.

    ``where`` is a path or a binary file object (an export writes into a file
    that has no name yet).  Records come either as dicts (:meth:`write`) or in the
    store's row form (:meth:`write_stored`); one writer takes one kind.

    The footer gets go-embeddingsdb's summary keys (``embeddingsdb:models`` and
    friends, see :mod:`.footer`), gathered column-wise from each row group written.
    """

    def __init__(self, where, *, row_group_size: int = 10_000, row_group_bytes: int = 32 << 20):
        self.path = where if isinstance(where, str) else getattr(where, "name", None)
        self.row_group_size = row_group_size
        #: stored rows are also flushed at this many bytes of vectors and attributes, so
        #: 10,000 rows of 8,192-d vectors (330 MB) are never held at once
        self.row_group_bytes = row_group_bytes
        self._pending_bytes = 0
        self._writer = pq.ParquetWriter(where, CANONICAL_SCHEMA, compression="zstd")
        self._pending: list[dict] = []
        self._pending_stored: list[tuple] = []
        self.count = 0
        self.stats = FileStats()

    def write(self, record: dict) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.row_group_size:
            self.flush()

    def write_stored(self, rows: Sequence[tuple]) -> None:
        """Rows as :func:`stored_rows_to_arrow` takes them."""
        self._pending_stored.extend(rows)
        self._pending_bytes += sum(len(row[5]) + len(row[6]) for row in rows)
        if len(self._pending_stored) >= self.row_group_size or self._pending_bytes >= self.row_group_bytes:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._write_table(to_arrow(self._pending))
            self.count += len(self._pending)
            self._pending = []
        if self._pending_stored:
            self._write_table(stored_rows_to_arrow(self._pending_stored))
            self.count += len(self._pending_stored)
            self._pending_stored = []
            self._pending_bytes = 0

    def _write_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        # the (provider, model) pairs and each model's length, without a Python step per row
        lengths = pc.list_value_length(table.column("embeddings"))
        summary = pa.table({"provider": table.column("provider"), "model": table.column("model"), "dims": lengths})
        grouped = summary.group_by(["provider", "model"], use_threads=False).aggregate([("dims", "min")])
        for provider, model, dims in zip(*(grouped.column(c).to_pylist() for c in ("provider", "model", "dims_min"))):
            self.stats.add(provider, model, dims, count=0)
        self.stats.rows += table.num_rows

    def close(self) -> None:
        self.flush()
        self._writer.add_key_value_metadata(self.stats.key_values())
        self._writer.close()

    def __enter__(self) -> "ParquetRecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()


def write_records(path: str, records: Iterable[dict]) -> int:
    """Write an iterable of record dicts to ``path``; returns the row count."""
    with ParquetRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count
