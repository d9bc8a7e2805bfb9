"""Database schema, versioned through sqlite-utils' ``Migrations``.

Each function is one schema version; the ``_sqlite_migrations`` table records
which ran, so older databases are brought forward by ``load`` (never by the
read-only Datasette server).
"""
from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("datasette_embeddings")


@migrations()
def m001_records_and_models(db: Database) -> None:
    db.execute(
        """
        create table records (
            id integer primary key,
            provider text not null,
            depiction_id text not null,
            subject_id text not null,
            model text not null,
            created integer not null,
            attributes text not null default '{}',
            type text generated always as (coalesce(json_extract(attributes, '$.type'), 'image')) virtual,
            unique (provider, depiction_id, model)
        )
        """
    )
    db.execute("create index records_model_provider on records (model, provider, id)")
    db.execute("create index records_model_type on records (model, type, id)")
    db.execute("create index records_provider on records (provider, id)")
    db.execute("create index records_subject on records (subject_id, provider)")
    db.execute(
        """
        create table models (
            label text primary key,
            vec_table text not null unique,
            dimensions integer not null,
            record_count integer not null default 0,
            llm_model_id text
        )
        """
    )


@migrations()
def m002_model_version(db: Database) -> None:
    # bumped by every write to a model's vectors, so in-memory indexes and the
    # neighbors table can tell cheaply (one primary-key read) that they are stale
    db.execute("alter table models add column version integer not null default 0")


def pending(db: Database) -> list[str]:
    return [m.name for m in migrations.pending(db)]


def migrate(db: Database) -> None:
    """Apply pending migrations; callers hold no open transaction."""
    migrations.apply(db)
