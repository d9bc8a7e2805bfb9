"""The SQLite store: ``records``, ``models`` and one vec0 table per model.

This is the only module that writes SQL for those tables, so "where does a
Parquet row become a vec0 row?" has one answer: :meth:`Store.upsert_batch`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from sqlite_utils import Database

from . import schema
from ..errors import NotFoundError, RecordError
from .vectors import from_blob


@dataclass(frozen=True)
class ModelInfo:
    label: str
    vec_table: str
    dimensions: int
    record_count: int
    llm_model_id: str | None = None


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0

    def add(self, other: "UpsertCounts") -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.stale += other.stale


#: vectors per vec0 chunk BLOB.  vec0 reads and writes one vector at a time inside
#: a chunk, and SQLite reaches that offset by walking the BLOB's overflow pages, so
#: a smaller chunk makes every insert and every full scan cheaper: 256 instead of
#: vec0's default 1024 loads 10% faster and scans a model 5x faster, while a KNN
#: query (which reads whole chunks) stays within a few percent (benchmarks/load.py).
VEC_CHUNK_SIZE = 256

#: page size of a database :meth:`Store.open` creates.  A vec0 chunk BLOB spans many
#: overflow pages and SQLite walks that chain for every vector written or read, so
#: 16 KiB pages (a quarter of the walk of SQLite's default 4 KiB) make loading and
#: full scans faster; existing databases keep the page size they have.
NEW_DATABASE_PAGE_SIZE = 16_384

#: what vec0 says when a chunk BLOB it reads was rewritten under it: a load committed (seen
#: by a connection whose snapshot cannot protect vec0's blob handles) or, with ``datasette -i``,
#: any write at all, since an immutable database takes no locks
TORN_READ_MESSAGES = ("Could not extract", "Could not fetch vector data", "reading from blob failed")


def read_again_if_torn(run, attempts: int = 4):
    """``run()``, again on a fresh statement when vec0 reports a torn read (readers during a load
    see the old or the new state, not an error); other errors, and the last attempt's, propagate."""
    for attempt in range(attempts):
        try:
            return run()
        except Exception as ex:
            if attempt == attempts - 1 or not any(m in str(ex) for m in TORN_READ_MESSAGES):
                raise
            time.sleep(0.02 * (attempt + 1))
    return None  # pragma: no cover


def vec_table_name(label: str) -> str:
    """A safe SQL identifier for a model label: a readable slug plus a hash of the label.

    The hash keeps two labels that slug alike (``a/b`` and ``a-b``) apart, and the
    slug alphabet means the name never needs quoting.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40] or "model"
    digest = hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]
    return f"vec_{slug}_{digest}"


def _model_from_row(row) -> ModelInfo:
    return ModelInfo(label=row[0], vec_table=row[1], dimensions=row[2], record_count=row[3], llm_model_id=row[4])


def data_version(conn, label: str) -> tuple:
    """The one answer to "has this model's data changed?": ``models.version``.

    ``load`` bumps it on every write to a model (migration m002), so the in-memory
    index, the neighbours table, the facet cache and every stored result compare
    this one primary-key read with the token they were built from.  Databases
    from before m002 fall back to a fingerprint of the model's records.
    """
    try:
        row = conn.execute("select version from models where label = ?", [label]).fetchone()
        return ("version", row[0] if row else None)
    except Exception:  # no version column: a database loaded before migration m002
        row = conn.execute(
            "select count(*), max(id), sum(created) from records where model = ?", [label]
        ).fetchone()
        return ("fingerprint",) + tuple(row)


def stored_version(conn, label: str) -> str:
    """:func:`data_version` as the text stored beside every result computed from a model's vectors."""
    return json.dumps(data_version(conn, label))


def database_version(conn) -> tuple:
    """Every model's data version at once: changes whenever any model's records change."""
    try:
        return tuple(conn.execute("select label, version from models order by label").fetchall())
    except Exception:  # before m002
        return tuple(conn.execute("select model, count(*), max(id), sum(created) from records group by model").fetchall())


def has_tables(conn, *names: str) -> bool:
    placeholders = ", ".join("?" for _ in names)
    found = conn.execute(
        f"select count(*) from sqlite_master where type = 'table' and name in ({placeholders})", list(names)
    ).fetchone()[0]
    return found == len(names)


class Store:
    """Data access over one connection that has sqlite-vec loaded.

    Request paths make a Store per call, so it wraps the plain connection and runs
    nothing on it: a sqlite-utils ``Database`` (which sets a PRAGMA and runs
    sqlite-utils' plugin hooks, and once expired the very query calling a SQL
    function) is made only for migrations, with both side effects switched off.
    """

    def __init__(self, conn):
        self.conn = conn

    @classmethod
    def open(cls, path: str, *, readonly: bool = True, create: bool = False) -> "Store":
        """The one way to open a database file: refuses a file without our tables, naming it.

        ``readonly=False`` opens for writing, the schema as it is (a writer migrates
        when it is ready to: ``judgements import`` does so inside its own transaction).
        ``create=True`` (``load``) also makes a missing or empty file a new database
        and brings the schema up to date.  A database created here has 16 KiB pages
        (see ``NEW_DATABASE_PAGE_SIZE``) and SQLite's rollback journal until
        :meth:`finish_writing` switches it to WAL: new pages appended by a transaction
        need no journal copy, whereas WAL writes every page twice (to the log, then to
        the database at the checkpoint), which for a first bulk load was a third of the
        time; nobody can be reading a database that did not exist.  A SQLite database
        of anything else is never written.  Errors while migrating (a full disk) are
        raised as they are, the transaction rolled back and the connection closed.
        """
        from .connection import connect

        new = not os.path.exists(path)
        if new and not create:
            raise NotFoundError(f"{path}: no such database file")
        if not new and not os.path.isfile(path):
            raise NotFoundError(f"{path}: is not a database file")
        try:
            conn = connect(path, readonly=readonly and not create)
            ours = has_tables(conn, "records", "models")
            # a file with only our migration table is a database a failed load left half made
            blank = not ours and (has_tables(conn, "_sqlite_migrations")
                                  or not conn.execute("select 1 from sqlite_master limit 1").fetchone())
        except Exception as ex:
            raise NotFoundError(f"{path}: cannot open database ({ex})") from None
        if not ours and not (create and blank):
            conn.close()
            if create:
                raise NotFoundError(f"{path}: is a SQLite database but not a datasette-embeddings one (no records table)")
            raise NotFoundError(
                f"{path}: not a datasette-embeddings database (no records table); load Parquet files into it first"
            )
        store = cls(conn)
        if create:
            try:
                if new:
                    conn.execute(f"pragma page_size = {NEW_DATABASE_PAGE_SIZE}")
                store.migrate()
            except BaseException:
                try:
                    if conn.in_transaction:
                        conn.execute("rollback")
                finally:
                    conn.close()
                raise
        return store

    def finish_writing(self) -> None:
        """Leave the database in WAL mode, so Datasette can keep reading while a later load writes.

        Best effort: SQLite refuses the switch while another connection holds the
        database in rollback mode, and the next load tries again.
        """
        try:
            self.conn.execute("pragma journal_mode = wal")
        except Exception:
            pass

    # ------------------------------------------------------------ schema
    def is_initialised(self) -> bool:
        return has_tables(self.conn, "records", "models")

    def migrate(self) -> None:
        schema.migrate(Database(self.conn, execute_plugins=False, recursive_triggers=False))

    def data_version(self, label: str) -> tuple:
        return data_version(self.conn, label)

    # ------------------------------------------------------------ models
    def models(self) -> list[ModelInfo]:
        if not has_tables(self.conn, "models"):
            return []
        rows = self.conn.execute(
            "select label, vec_table, dimensions, record_count, llm_model_id from models order by label"
        ).fetchall()
        return [_model_from_row(r) for r in rows]

    def model(self, label: str) -> ModelInfo | None:
        row = self.conn.execute(
            "select label, vec_table, dimensions, record_count, llm_model_id from models where label = ?", [label]
        ).fetchone()
        return _model_from_row(row) if row else None

    def ensure_model(self, label: str, dimensions: int) -> ModelInfo:
        """Return the model, creating its vec0 table on first sight; dimensions are fixed per model."""
        existing = self.model(label)
        if existing:
            if existing.dimensions != dimensions:
                raise RecordError(
                    f"vector has {dimensions} dimensions but model '{label}' has {existing.dimensions} in the database",
                    field="embeddings",
                )
            return existing
        table = vec_table_name(label)
        self.conn.execute(
            f"create virtual table {table} using vec0("
            f"id integer primary key, embedding float[{int(dimensions)}] distance_metric=cosine, "
            f"provider text, subject_id text, chunk_size={VEC_CHUNK_SIZE})"
        )
        self.conn.execute(
            "insert into models (label, vec_table, dimensions, record_count) values (?, ?, ?, 0)",
            [label, table, int(dimensions)],
        )
        return ModelInfo(label, table, int(dimensions), 0)

    def set_llm_model_id(self, label: str, llm_model_id: str | None) -> None:
        self.conn.execute("update models set llm_model_id = ? where label = ?", [llm_model_id, label])

    def refresh_counts(self, labels: Sequence[str] | None = None) -> None:
        labels = list(labels) if labels is not None else [m.label for m in self.models()]
        for label in labels:
            self.conn.execute(
                "update models set record_count = (select count(*) from records where model = ?) where label = ?",
                [label, label],
            )

    # ------------------------------------------------------------ writing
    def upsert_batch(
        self,
        model: ModelInfo,
        rows: Sequence[tuple[str, str, str, int, str, bytes]],
    ) -> UpsertCounts:
        """Insert or replace ``(provider, depiction_id, subject_id, created, attributes_json, vector_blob)`` rows.

        ``vector_blob`` is the vector as vec0 stores it (:func:`vectors.to_blob`).

        The rule, the same inside one file and across files: a row replaces the
        stored record when its ``created`` is newer, or equally new with different
        content; an older row is ``stale`` and skipped; an identical one is
        ``unchanged``.  Later rows of the same batch see earlier ones.

        Most rows of a load are new, so every row is first offered to ``records``
        as a plain insert that skips a key already stored; only the rows that
        were skipped (their key exists, stored earlier or earlier in this batch)
        are looked up and judged one by one, in row order, against what is stored.
        """
        counts = UpsertCounts()
        if not rows:
            return counts
        first_id = self._next_id()
        before = self.conn.total_changes
        self.conn.executemany(
            "insert into records (id, provider, depiction_id, subject_id, model, created, attributes) "
            "values (?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
            [(first_id + i, row[0], row[1], row[2], model.label, row[3], row[4]) for i, row in enumerate(rows)],
        )
        if self.conn.total_changes - before == len(rows):
            fresh, known = range(len(rows)), []
        else:
            stored = {r[0] for r in self.conn.execute("select id from records where id >= ?", [first_id])}
            fresh = [i for i in range(len(rows)) if first_id + i in stored]
            known = [row for i, row in enumerate(rows) if first_id + i not in stored]
        self.conn.executemany(
            f"insert into {model.vec_table} (id, embedding, provider, subject_id) values (?, ?, ?, ?)",
            [(first_id + i, rows[i][5], rows[i][0], rows[i][2]) for i in fresh],
        )
        counts.inserted = len(fresh)
        if known:
            counts.add(self._upsert_known(model, known))
        if counts.inserted or counts.updated:
            self.conn.execute("update models set version = version + 1 where label = ?", [model.label])
        return counts

    def _next_id(self) -> int:
        return self.conn.execute("select coalesce(max(id), 0) from records").fetchone()[0] + 1

    def _upsert_known(self, model: ModelInfo, rows: Sequence[tuple]) -> UpsertCounts:
        """The rule of :meth:`upsert_batch`, row by row, for rows whose key may be stored already."""
        counts = UpsertCounts()
        existing = self._existing(model.label, {(r[0], r[1]) for r in rows})
        next_id = self._next_id()
        for provider, depiction_id, subject_id, created, attributes, blob in rows:
            key = (provider, depiction_id)
            current = existing.get(key)
            if current is None:
                self._insert(model, next_id, provider, depiction_id, subject_id, created, attributes, blob)
                existing[key] = (next_id, created, subject_id, attributes, blob)
                next_id += 1
                counts.inserted += 1
                continue
            rid, old_created, old_subject, old_attributes, old_blob = current
            if created < old_created:
                counts.stale += 1
                continue
            if created == old_created and subject_id == old_subject and attributes == old_attributes:
                if old_blob is None:
                    old_blob = self._vector_blob(model, rid)
                if old_blob == blob:
                    counts.unchanged += 1
                    continue
            self.conn.execute(
                "update records set subject_id = ?, created = ?, attributes = ? where id = ?",
                [subject_id, created, attributes, rid],
            )
            self.conn.execute(f"delete from {model.vec_table} where id = ?", [rid])
            self.conn.execute(
                f"insert into {model.vec_table} (id, embedding, provider, subject_id) values (?, ?, ?, ?)",
                [rid, blob, provider, subject_id],
            )
            existing[key] = (rid, created, subject_id, attributes, blob)
            counts.updated += 1
        return counts

    def _insert(self, model: ModelInfo, rid: int, provider: str, depiction_id: str, subject_id: str,
                created: int, attributes: str, blob: bytes) -> None:
        self.conn.execute(
            "insert into records (id, provider, depiction_id, subject_id, model, created, attributes) "
            "values (?, ?, ?, ?, ?, ?, ?)",
            [rid, provider, depiction_id, subject_id, model.label, created, attributes],
        )
        self.conn.execute(
            f"insert into {model.vec_table} (id, embedding, provider, subject_id) values (?, ?, ?, ?)",
            [rid, blob, provider, subject_id],
        )

    def _existing(self, label: str, keys: set[tuple[str, str]]) -> dict:
        """Stored (id, created, subject, attributes, None) for the batch's keys, in one query.

        ``cross join`` pins the join order: left to itself the planner walks the
        whole model through ``records_model_type`` once per key (quadratic; a
        100k-row load took minutes), instead of one unique-index probe per key.
        """
        found: dict = {}
        if not keys:
            return found
        rows = self.conn.execute(
            """
            select r.provider, r.depiction_id, r.id, r.created, r.subject_id, r.attributes
            from json_each(?) as j
            cross join records r on r.model = ? and r.provider = j.value ->> 0
                 and r.depiction_id = j.value ->> 1
            """,
            [json.dumps(sorted(keys)), label],
        ).fetchall()
        for provider, depiction_id, rid, created, subject, attributes in rows:
            found[(provider, depiction_id)] = (rid, created, subject, attributes, None)
        return found

    def _vector_blob(self, model: ModelInfo, record_id: int) -> bytes | None:
        row = read_again_if_torn(
            lambda: self.conn.execute(f"select embedding from {model.vec_table} where id = ?", [record_id]).fetchone()
        )
        return bytes(row[0]) if row else None

    # ------------------------------------------------------------ reading
    def record(self, record_id: int) -> dict | None:
        row = self.conn.execute(
            "select id, provider, depiction_id, subject_id, model, created, attributes from records where id = ?",
            [record_id],
        ).fetchone()
        return record_from_row(row) if row else None

    def vector(self, record_id: int, model: ModelInfo | None = None) -> np.ndarray | None:
        """The record's stored vector; ``model``, the record's own when the caller has it, saves reading its row again."""
        if model is None:
            rec = self.conn.execute("select model from records where id = ?", [record_id]).fetchone()
            if not rec:
                return None
            model = self.model(rec[0])
        blob = self._vector_blob(model, record_id) if model else None
        return from_blob(blob) if blob is not None else None

    def iter_records(
        self, *, providers: Sequence[str] = (), models: Sequence[str] = (), batch_size: int = 2000
    ) -> Iterator[dict]:
        """Every record with its vector, model by model, in id order (as dicts, for tests and tools)."""
        for rows in self._rows_with_vectors(providers, models, batch_size, with_id=True):
            for row in rows:
                rec = record_from_row(row[:7])
                rec["embeddings"] = from_blob(bytes(row[7]))
                yield rec

    def iter_stored_rows(
        self, *, providers: Sequence[str] = (), models: Sequence[str] = (), batch_size: int = 2000
    ) -> Iterator[list[tuple]]:
        """Batches of records in their stored form, model by model in id order (for export).

        A row is ``(provider, depiction_id, subject_id, model, created, attributes_json,
        vector_blob)``.  One statement per model, read to its end: paging with
        ``id > ? ... limit ?`` made SQLite join and sort every remaining record of
        the model again for each page (export time grew with the square of the
        rows).  ``not indexed`` walks ``records`` in id order, so nothing is sorted,
        and each vector is fetched from vec0 by its id.  Callers wanting one
        snapshot across models open a read transaction around the iteration.
        """
        yield from self._rows_with_vectors(providers, models, batch_size, with_id=False)

    def _rows_with_vectors(self, providers: Sequence[str], models: Sequence[str], batch_size: int, *, with_id: bool):
        for model in self.models():
            if models and model.label not in models:
                continue
            where = "r.model = ?"
            if providers:
                where += " and r.provider in (%s)" % ", ".join("?" for _ in providers)
            cursor = self.conn.execute(
                "select " + ("r.id, " if with_id else "")
                + "r.provider, r.depiction_id, r.subject_id, r.model, r.created, r.attributes, v.embedding "
                f"from records r not indexed cross join {model.vec_table} v on v.id = r.id "
                f"where {where} order by r.id",
                [model.label, *providers],
            )
            try:
                while True:
                    rows = cursor.fetchmany(batch_size)
                    if not rows:
                        break
                    yield rows
            finally:
                cursor.close()

    def summary(self) -> list[dict]:
        """Counts per provider and model (for ``info`` and the overview page)."""
        rows = self.conn.execute(
            "select r.provider, r.model, count(*), m.dimensions from records r "
            "join models m on m.label = r.model group by r.provider, r.model order by r.provider, r.model"
        ).fetchall()
        return [{"provider": p, "model": m, "count": c, "dimensions": d} for p, m, c, d in rows]


def record_from_row(row) -> dict:
    """The public shape of a record (attributes decoded)."""
    return {
        "id": row[0],
        "provider": row[1],
        "depiction_id": row[2],
        "subject_id": row[3],
        "model": row[4],
        "created": row[5],
        "attributes": json.loads(row[6]) if row[6] else {},
    }
