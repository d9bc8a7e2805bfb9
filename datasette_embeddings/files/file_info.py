"""What a Parquet file or URL holds, read from its footer alone.

``info`` on a file never reads its rows: the row count, row groups and columns
are in the Parquet footer, and go-embeddingsdb writers put providers, models and
dimensions there too (:mod:`.footer`).  A URL is read with HTTP range requests
(:mod:`.remote`), so describing a 2 GB file costs a few kilobytes.
"""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import RecordError
from . import footer
from .parquet_io import REQUIRED_COLUMNS
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


def describe(source: str) -> dict:
    """The footer of a Parquet file or URL: rows, columns and the embeddingsdb summary."""
    remote = RangeFile(source) if is_url(source) else None
    try:
        try:
            metadata = pq.read_metadata(remote if remote is not None else source)
            schema = metadata.schema.to_arrow_schema()
        except RecordError:
            raise
        except (pa.ArrowException, OSError, ValueError) as ex:
            raise RecordError(f"not a readable Parquet file ({ex})", source=source) from None
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
        }
        if remote is not None:
            info["bytes_read"] = remote.bytes_received
            info["requests"] = remote.requests
        return info
    finally:
        if remote is not None:
            remote.close()
