"""Loading Parquet files of shared records into the store.

Each file is one transaction: a file either loads completely or leaves the
database exactly as it was.  Files earlier in the same run that finished stay
loaded, so re-running after a failure only has to redo the failed file.
"""
from __future__ import annotations

import errno
import os
import queue
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from . import footer
from .file_info import is_url, schema_of
from .layouts import Layout
from .parquet_io import RecordBatch, RecordError, check_schema, open_parquet, read_batches, read_footer_keys
from .remote import RemoteReadError
from ..storage.connection import sqlite3
from ..storage import keyword_index
from ..errors import EmbeddingsError
from ..storage.store import Store, UpsertCounts
from ..storage.write_lock import WriteLockError, exclusive_writer

URL_TIMEOUT = 60


class LoadError(Exception):
    """A load failed; the message names the file and, where known, row and field."""


@dataclass
class FileReport:
    source: str
    rows: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    per_provider_model: Counter = field(default_factory=Counter)
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: footer keys the rows contradict, when loaded anyway (``footer_mismatch="warn"``)
    warnings: list[str] = field(default_factory=list)
    #: records whose attributes break an OEmbeddings rule (loaded all the same; ``validate`` lists them)
    nonconforming: int = 0


@dataclass
class LoadReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def totals(self) -> UpsertCounts:
        total = UpsertCounts()
        for f in self.files:
            total.add(f.counts)
        return total

    def per_provider_model(self) -> dict:
        merged: dict = defaultdict(int)
        for f in self.files:
            for key, n in f.per_provider_model.items():
                merged[key] += n
        return dict(merged)


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Files as given, directories as their ``*.parquet`` files (sorted), URLs untouched."""
    expanded: list[str] = []
    for source in sources:
        if is_url(source):
            expanded.append(source)
        elif os.path.isdir(source):
            found = sorted(
                os.path.join(root, name)
                for root, _dirs, names in os.walk(source)
                for name in names
                if name.endswith(".parquet")
            )
            if not found:
                raise LoadError(f"{source}: directory holds no .parquet files")
            expanded.extend(found)
        elif os.path.exists(source):
            expanded.append(source)
        else:
            raise LoadError(f"{source}: no such file or directory")
    return expanded


def check_url_schema(url: str, layout: Layout | None = None) -> bool:
    """Refuse, from its footer alone, a URL whose columns cannot give records under ``layout``.

    The footer is read with HTTP range requests (as ``info URL`` reads it), so a
    mapping naming a missing or mistyped column costs kilobytes, not the whole
    download.  Returns False, deciding nothing, when the server is the obstacle
    (no range support, an HTTP error): the download then meets the same checks.
    """
    try:
        check_schema(schema_of(url), layout, url)
    except RemoteReadError:
        return False
    except RecordError as ex:
        raise LoadError(f"{ex.describe()} (checked from the file's footer; nothing was downloaded)") from None
    return True


@contextmanager
def local_copy(source: str, layout: Layout | None = None, *, schema_checked: bool = False) -> Iterator[str]:
    """A local path for ``source``: URLs are streamed to a temporary file first (Parquet needs seeking).

    Before a URL is downloaded its schema is checked against ``layout`` from the
    footer alone (:func:`check_url_schema`), unless the caller did that already.
    """
    if not is_url(source):
        yield source
        return
    if not schema_checked:
        check_url_schema(source, layout)
    fd, path = tempfile.mkstemp(suffix=".parquet", prefix="datasette-embeddings-")
    try:
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT) as response, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except urllib.error.HTTPError as ex:
            raise LoadError(f"{source}: could not download (HTTP {ex.code} {ex.reason})") from None
        except (urllib.error.URLError, OSError, ValueError) as ex:
            if is_disk_full(ex):
                raise LoadError(
                    f"{source}: could not download: the disk holding the temporary folder "
                    f"{os.path.dirname(path)} is full (set TMPDIR to a folder with room)"
                ) from None
            reason = getattr(ex, "reason", ex)
            raise LoadError(f"{source}: could not download ({reason})") from None
        yield path
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


#: page cache for the loading connection, in KiB.  vec0 writes each vector into a
#: chunk BLOB (256 or, in older tables, 1024 vectors); with SQLite's default 2 MB
#: cache every insert re-read and spilled a chunk (5x slower).  More than 32 MB buys
#: no speed, and with 16 KiB pages a larger cache cost far more memory than its
#: size: peak RSS grew to 1 GB at 128 MB, against 670 MB at 32 MB (benchmarks/load.py).
LOAD_CACHE_KIB = 32_768


def tune_for_loading(conn) -> None:
    """Settings for the one writing connection of a load.

    ``synchronous=normal`` keeps the database consistent when the process is
    killed (a committed file stays committed); in WAL mode only an OS crash or
    power loss can drop the last committed file, which a re-run reloads.
    """
    conn.execute(f"pragma cache_size = -{LOAD_CACHE_KIB}")
    conn.execute("pragma synchronous = normal")


def check_target(db_path: str) -> None:
    """Refuse, before anything is created, a database path that cannot be written."""
    directory = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(directory):
        raise LoadError(f"{db_path}: directory {directory} does not exist")
    if os.path.isdir(db_path):
        raise LoadError(f"{db_path}: is a directory, not a database file")
    if os.path.exists(db_path) and not os.access(db_path, os.W_OK):
        raise LoadError(f"{db_path}: database is not writable")
    if not os.path.exists(db_path) and not os.access(directory, os.W_OK):
        raise LoadError(f"{db_path}: cannot create the database, directory {directory} is not writable")


def _open_for_loading(db_path: str) -> Store:
    """:meth:`Store.open` for ``load`` (creating the database if needed), tuned for loading, errors as :class:`LoadError`."""
    try:
        store = Store.open(db_path, readonly=False, create=True)
    except EmbeddingsError as ex:
        raise LoadError(str(ex)) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as ex:
        if is_disk_full(ex):
            raise LoadError(f"{db_path}: cannot prepare the database: {DISK_FULL}") from None
        raise LoadError(f"{db_path}: cannot open database ({ex})") from None
    tune_for_loading(store.conn)
    return store


#: how a full disk is reported, whichever layer noticed it
DISK_FULL = "the disk is full (no space left on the device); nothing was written"


def is_disk_full(ex: BaseException) -> bool:
    """SQLite's SQLITE_FULL (it maps ENOSPC to it) or an ENOSPC from our own writes."""
    if isinstance(ex, OSError) and ex.errno == errno.ENOSPC:
        return True
    code = getattr(ex, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == 13  # SQLITE_FULL
    return "database or disk is full" in str(ex)


#: free bytes under which an SQLite error while writing is taken for a full disk
LOW_SPACE_BYTES = 1 << 20


def out_of_space(conn) -> bool:
    """Whether the database has no room left: its filesystem, or its ``max_page_count``.

    sqlite-vec reports a failed chunk write as its own "Internal sqlite-vec
    error", losing SQLite's SQLITE_FULL; this looks at the cause instead.  Called
    before the rollback, while the transaction's pages still count.
    """
    try:
        pages = conn.execute("pragma page_count").fetchone()[0]
        cap = conn.execute("pragma max_page_count").fetchone()[0]
        page_size = conn.execute("pragma page_size").fetchone()[0]
        if pages * page_size + LOW_SPACE_BYTES >= cap * page_size:
            return True
        path = conn.execute("pragma database_list").fetchone()[2]
        if path:
            st = os.statvfs(os.path.dirname(path))
            return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES
    except Exception:
        pass
    return False


def _rollback_quietly(conn) -> None:
    """Roll back if a transaction is open.

    SQLite has already rolled back by itself after some errors (SQLITE_FULL among
    them); a second rollback would raise "no transaction is active" and hide the
    real error.
    """
    try:
        if conn.in_transaction:
            conn.execute("rollback")
    except Exception:
        pass


ProgressCallback = Callable[[int], None]
PREFETCH_BATCHES = 2


T = TypeVar("T")


def prefetched(batches: Iterator[T], depth: int = PREFETCH_BATCHES) -> Iterator[T]:
    """Produce the next items in a thread while the caller writes this one.

    SQLite and Parquet decoding both release the GIL, so on two cores reading
    overlaps writing; validation and grouping run there too.  The queue is bounded: at most
    ``depth`` batches wait in memory.  Errors are re-raised here, in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Hand over one item unless the consumer has gone away."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            item = done
        except BaseException as ex:  # handed to the consumer
            item = ex
        put(item)

    thread = threading.Thread(target=produce, name="datasette-embeddings-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()

def rows_by_model(batch: RecordBatch, seen_dims: dict[str, tuple[int, int]], per_provider_model: Counter,
                  grouped: bool = True) -> dict[str, list]:
    """Split a batch into store rows per model, holding each model to one dimension count.

    ``grouped=False`` only checks and counts (for ``validate``, which stores nothing).

    ``seen_dims`` maps a label to (dimensions, first row) across the whole file,
    so a mismatch names both the offending row and the row that set the size.
    Column-wise where it can be: a batch usually holds one model, and this runs
    beside the writer, where every Python step it takes is one the writer waits for.
    """
    if not len(batch):
        return {}
    dims = batch.dimensions
    labels = dict.fromkeys(batch.model)
    if len(labels) == 1:
        where: dict[str, list[int] | None] = {next(iter(labels)): None}
    else:
        where = defaultdict(list)
        for i, label in enumerate(batch.model):
            where[label].append(i)
    for label, rows in where.items():
        if label not in seen_dims:
            first = 0 if rows is None else rows[0]
            seen_dims[label] = (int(dims[first]), batch.first_row + first)
    if len(where) == 1:
        expected = seen_dims[next(iter(where))][0]
    else:
        expected = np.array([seen_dims[label][0] for label in batch.model], dtype=np.int64)
    wrong = np.flatnonzero(dims != expected)
    if len(wrong):
        i = int(wrong[0])
        label = batch.model[i]
        size, first_row = seen_dims[label]
        raise RecordError(
            f"vector has {int(dims[i])} dimensions but row {first_row} of model '{label}' has {size}",
            row=batch.first_row + i, field="embeddings",
        )
    per_provider_model.update(zip(batch.provider, batch.model))
    if not grouped:
        return {}
    columns = (batch.provider, batch.depiction_id, batch.subject_id, batch.created, batch.attributes_json, batch.vectors)
    return {
        label: list(zip(*columns)) if rows is None else [tuple(column[i] for column in columns) for i in rows]
        for label, rows in where.items()
    }


FOOTER_MISMATCH_CHOICES = ("error", "warn")


def check_footer(path: str, source: str, report: FileReport, seen_dims: dict[str, tuple[int, int]], policy: str) -> None:
    """Compare the file's go-embeddingsdb footer keys with the rows just read.

    A footer is a publisher's claim about the file; when the rows say otherwise
    one of the two is wrong, so by default the file is refused (the caller rolls
    back) with every contradicted key named.  ``policy="warn"`` loads the rows
    and reports the same messages as warnings.
    """
    summary = footer.parse(footer.embeddingsdb_keys(read_footer_keys(path)))
    if summary.empty:
        return
    stats = footer.FileStats()
    for (provider, model), n in report.per_provider_model.items():
        stats.add(provider, model, seen_dims[model][0], count=n)
    problems = footer.disagreements(summary, stats)
    if not problems:
        return
    if policy == "warn":
        report.warnings.extend(str(p) for p in problems)
        return
    raise LoadError(
        f"{source}: the footer metadata disagrees with the rows, nothing loaded from this file: "
        + "; ".join(str(p) for p in problems)
        + " (--footer-mismatch warn loads the rows anyway)"
    )


def check_layout(files: Sequence[str], layout: Layout) -> set[str]:
    """Check a column mapping against every file before anything is loaded.

    A mapping is given once for the whole command, so a column missing from the
    third file is a mistake in the command: refusing it up front leaves the
    database untouched instead of half loaded.  A URL is checked from its footer
    (:func:`check_url_schema`); the URLs looked at are returned, so they are not
    asked again just before their download.
    """
    looked_at: set[str] = set()
    for source in files:
        if is_url(source):
            check_url_schema(source, layout)
            looked_at.add(source)
            continue
        try:
            check_schema(open_parquet(source, layout).schema_arrow, layout, source)
        except RecordError as ex:
            raise LoadError(ex.describe()) from None
    return looked_at


def checked_batches(path: str, report: FileReport, seen_dims: dict[str, tuple[int, int]], *, batch_size: int = 4096,
                    layout: Layout | None = None, grouped: bool = True) -> Iterator[tuple[RecordBatch, dict[str, list]]]:
    """A file's batches as ``load`` reads them, with the store rows of each model (see :func:`rows_by_model`).

    ``validate`` reads through this as well (``grouped=False``: no store rows), so
    it refuses exactly the files, rows and fields ``load`` refuses.  Counts of
    providers, models and OEmbeddings problems accumulate in ``report``.
    """
    for batch in read_batches(path, batch_size=batch_size, layout=layout, comparable=True):
        report.nonconforming += batch.nonconforming
        yield batch, rows_by_model(batch, seen_dims, report.per_provider_model, grouped=grouped)


def load_file(store: Store, source: str, *, batch_size: int = 4096, progress: ProgressCallback | None = None,
              footer_mismatch: str = "error", layout: Layout | None = None, schema_checked: bool = False) -> FileReport:
    """Load one file in one transaction; on any error roll back and raise :class:`LoadError`."""
    report = FileReport(source=source)
    started = time.perf_counter()
    conn = store.conn
    with local_copy(source, layout, schema_checked=schema_checked) as path:
        conn.execute("begin immediate")
        try:
            keywords = keyword_index.suspend(conn)  # the keyword index is written per batch below
            touched: set[str] = set()
            seen_dims: dict[str, tuple[int, int]] = {}
            # the reader thread alone touches seen_dims and the per-model counts
            batches = checked_batches(path, report, seen_dims, batch_size=batch_size, layout=layout)
            for batch, groups in prefetched(batches):
                report.ignored_columns = batch.ignored_columns
                for label, rows in groups.items():
                    try:
                        model = store.ensure_model(label, len(rows[0][5]) // 4)  # float32 BLOBs
                    except RecordError as ex:
                        raise RecordError(ex.message, row=seen_dims[label][1], field=ex.field) from None
                    touched.add(label)
                    report.counts.add(store.upsert_batch(model, rows))
                    keyword_index.flush(conn, keywords)
                report.rows += len(batch)
                if progress:
                    progress(len(batch))
            check_footer(path, source, report, seen_dims, footer_mismatch)
            store.refresh_counts(sorted(touched))
            if keywords is not None and not report.counts.inserted and not report.counts.updated:
                # nothing changed but the triggers set aside: leave the file byte for byte as it was
                conn.execute("rollback")
            else:
                keyword_index.resume(conn, keywords)
                conn.execute("commit")
        except BaseException as ex:
            full = is_disk_full(ex) or (isinstance(ex, sqlite3.Error) and out_of_space(conn))
            _rollback_quietly(conn)
            if full:
                raise LoadError(f"{source}: not loaded, {DISK_FULL} (the database is as it was)") from None
            if isinstance(ex, RecordError):
                # name what the user gave (the URL), not the temporary download
                named = RecordError(ex.message, source=source, row=ex.row, field=ex.field)
                raise LoadError(named.describe()) from None
            if isinstance(ex, (LoadError, KeyboardInterrupt)):
                raise
            raise LoadError(f"{source}: {type(ex).__name__}: {ex}") from ex
    report.seconds = time.perf_counter() - started
    return report


def load(
    db_path: str,
    sources: Sequence[str],
    *,
    batch_size: int = 4096,
    progress: ProgressCallback | None = None,
    on_file_done: Callable[[FileReport], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    footer_mismatch: str = "error",
    layout: Layout | None = None,
) -> LoadReport:
    """Load every source in order; stop at the first failing file (earlier ones stay loaded).

    The run holds the database's write lock from start to end (another ``load``
    of the same path waits; ``on_wait`` is told the holder's pid), so a failed
    first load may remove the database it created: nobody else wrote into it.
    """
    if footer_mismatch not in FOOTER_MISMATCH_CHOICES:
        raise LoadError(f"footer_mismatch must be one of {', '.join(FOOTER_MISMATCH_CHOICES)}, not {footer_mismatch!r}")
    files = expand_sources(sources)
    checked_urls: set[str] = set()
    if layout is not None and not layout.is_identity:
        checked_urls = check_layout(files, layout)
    check_target(db_path)
    try:
        with exclusive_writer(db_path, on_wait=on_wait):
            return _load_locked(db_path, files, batch_size=batch_size, progress=progress, on_file_done=on_file_done,
                                footer_mismatch=footer_mismatch, layout=layout, checked_urls=checked_urls)
    except WriteLockError as ex:  # only the lock's own creation raises it
        raise LoadError(f"{db_path}: {ex.strerror}") from None


def _load_locked(db_path: str, files: list[str], *, batch_size: int, progress, on_file_done,
                 footer_mismatch: str = "error", layout: Layout | None = None,
                 checked_urls: set[str] = frozenset()) -> LoadReport:
    created = not os.path.exists(db_path)
    report = LoadReport()
    store = None
    try:
        store = _open_for_loading(db_path)
        for source in files:
            file_report = load_file(store, source, batch_size=batch_size, progress=progress,
                                    footer_mismatch=footer_mismatch, layout=layout,
                                    schema_checked=source in checked_urls)
            report.files.append(file_report)
            if on_file_done:
                on_file_done(file_report)
    except BaseException:
        if created and not report.files:
            # nothing landed in a database this run created, under its lock: leave no file behind
            if store is not None:
                store.conn.close()
                store = None
            remove_database(db_path)
        raise
    finally:
        if store is not None:
            try:
                store.finish_writing()
                store.conn.close()
            except Exception:
                pass
    return report


def remove_database(db_path: str) -> None:
    """Delete a database and SQLite's files beside it."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            os.unlink(db_path + suffix)
        except OSError:
            pass
