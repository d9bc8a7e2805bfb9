"""What a Parquet file or URL holds, read from its footer alone.

``info`` on a file never reads its rows: the row count, row groups and columns
are in the Parquet footer, and go-embeddingsdb writers put providers, models and
dimensions there too (:mod:`.footer`); for other writers the row groups' column
statistics, also in the footer, usually tell the same (:func:`row_group_summary`).  A URL is read with HTTP range requests
(:mod:`.remote`), so describing a 2 GB file costs a few kilobytes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import RecordError
from . import footer
from .layouts import Layout, ResolvedLayout
from .parquet_io import REQUIRED_COLUMNS, check_schema
from .remote import RangeFile

SQLITE_MAGIC = b"SQLite format 3\x00"
PARQUET_MAGIC = b"PAR1"


def is_url(source: str) -> bool:
    return source.startswith("http://") or source.startswith("https://")


def kind_of(source: str) -> str:
    """``"parquet"``, ``"sqlite"``, by the file's first bytes (URLs are taken to be Parquet)."""
    if is_url(source):
        return "parquet"
    try:
        with open(source, "rb") as fp:
            head = fp.read(16)
    except FileNotFoundError:
        raise RecordError("no such file", source=source) from None
    except OSError as ex:
        raise RecordError(f"cannot read ({ex.strerror or ex})", source=source) from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if not head:
        raise RecordError("is empty: neither a Parquet file nor a SQLite database", source=source)
    raise RecordError("is neither a Parquet file nor a SQLite database", source=source)


@contextmanager
def footer_of(source: str) -> Iterator[tuple[pq.FileMetaData, RangeFile | None]]:
    """The Parquet footer of a file or URL, and for a URL the range reader (its byte counts).

    Raises :class:`~.remote.RemoteReadError` when the server is the obstacle and
    :class:`RecordError` when the bytes are not a Parquet file.
    """
    remote = RangeFile(source) if is_url(source) else None
    try:
        try:
            metadata = pq.read_metadata(remote if remote is not None else source)
        except RecordError:
            raise
        except (pa.ArrowException, OSError, ValueError) as ex:
            raise RecordError(f"not a readable Parquet file ({ex})", source=source) from None
        yield metadata, remote
    finally:
        if remote is not None:
            remote.close()


def _arrow_schema(metadata: pq.FileMetaData, source: str) -> pa.Schema:
    try:
        return metadata.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as ex:
        raise RecordError(f"not a readable Parquet file ({ex})", source=source) from None


def schema_of(source: str) -> pa.Schema:
    """The Arrow schema a Parquet file or URL declares in its footer (a URL: range requests only)."""
    with footer_of(source) as (metadata, _remote):
        return _arrow_schema(metadata, source)


def row_group_summary(metadata: pq.FileMetaData, resolved: ResolvedLayout | None = None) -> dict:
    """Providers, models, dimensions and row counts told by the row groups' column statistics.

    Most writers add no embeddingsdb keys, but they do record each column chunk's
    minimum, maximum and value count in the footer.  A row group whose provider and
    model columns have one value (min equal to max) holds one provider and one
    model, and its vectors' value count over its rows is their length; so for the
    usual file (one provider and model per file, or per row group) the footer alone
    says what the rows hold.  Row groups mixing values are counted as ``unknown_rows``.
    ``resolved`` (a mapping checked against the file) says which columns to read,
    and gives a provider or model that every row shares.
    """
    origin = resolved.origin if resolved is not None else {f: f for f in ("provider", "model", "embeddings")}
    constants = {"provider": resolved.layout.provider, "model": resolved.layout.model} if resolved is not None else {}
    groups: dict[tuple[str, str], dict] = {}
    unknown = 0
    for i in range(metadata.num_row_groups):
        row_group = metadata.row_group(i)
        if row_group.num_rows == 0:
            continue
        chunks = [row_group.column(j) for j in range(row_group.num_columns)]

        def chunk_of(fld: str):
            column = origin.get(fld)
            return next((c for c in chunks if column and (c.path_in_schema == column or c.path_in_schema.startswith(column + "."))), None)

        def single_value(fld: str) -> str | None:
            if constants.get(fld):
                return constants[fld]
            chunk = chunk_of(fld)
            stats = chunk.statistics if chunk is not None else None
            if stats is None or not stats.has_min_max or stats.min != stats.max or (stats.has_null_count and stats.null_count):
                return None
            value = stats.min
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        provider, model = single_value("provider"), single_value("model")
        if provider is None or model is None:
            unknown += row_group.num_rows
            continue
        vectors = chunk_of("embeddings")
        dims = vectors.num_values // row_group.num_rows if vectors is not None and vectors.num_values % row_group.num_rows == 0 else None
        group = groups.setdefault((provider, model), {"provider": provider, "model": model, "dimensions": set(), "rows": 0})
        group["rows"] += row_group.num_rows
        group["dimensions"].add(dims)
    for group in groups.values():
        dims = group["dimensions"]
        group["dimensions"] = next(iter(dims)) if len(dims) == 1 else None
    return {"groups": [groups[k] for k in sorted(groups)], "unknown_rows": unknown}


def describe(source: str, layout: Layout | None = None) -> dict:
    """The footer of a Parquet file or URL: rows, columns, the embeddingsdb summary and the row groups' statistics.

    With a ``layout`` (``info --layout`` / ``--map``) the mapping is checked against
    the file's columns, as ``load`` checks it, and says which columns the row-group
    statistics are read from.
    """
    with footer_of(source) as (metadata, remote):
        schema = _arrow_schema(metadata, source)
        resolved = check_schema(schema, layout, source) if layout is not None and not layout.is_identity else None
        keys = footer.embeddingsdb_keys(metadata.metadata)
        summary = footer.parse(keys)
        size = remote.size if remote is not None else os.path.getsize(source)
        columns = list(schema.names)
        models = []
        for label in summary.models or sorted(set(summary.dimensions) | set(summary.model_providers)):
            dims = summary.dimensions.get(label)
            models.append({
                "label": label,
                "dimensions": None if dims is None else footer._int_or_text(dims),
                "providers": summary.model_providers.get(label),
            })
        providers = [
            {"provider": p, "models": summary.provider_models.get(p)}
            for p in (summary.providers or sorted(summary.provider_models))
        ]
        info = {
            "source": source,
            "kind": "parquet",
            "bytes": size,
            "rows": metadata.num_rows,
            "row_groups": metadata.num_row_groups,
            "created_by": metadata.created_by,
            "columns": columns,
            "shared_layout": all(c in columns for c in REQUIRED_COLUMNS),
            "models": models,
            "providers": providers,
            "footer": keys,
            "statistics": row_group_summary(metadata, resolved),
        }
        if remote is not None:
            info["bytes_read"] = remote.bytes_received
            info["requests"] = remote.requests
        return info
