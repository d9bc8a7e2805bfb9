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
    # neighbours table can tell cheaply (one primary-key read) that they are stale
    db.execute("alter table models add column version integer not null default 0")


@migrations()
def m003_maps_and_clusters(db: Database) -> None:
    # filled by `datasette-embeddings map`; data_version is the model's token when the
    # layout was computed, so pages can tell a later `load` made it stale
    db.execute(
        """
        create table projections (
            model text primary key,
            method text not null,
            data_version text not null,
            record_count integer not null,
            cluster_count integer not null,
            x_min real not null, x_max real not null,
            y_min real not null, y_max real not null,
            built integer not null,
            seconds real not null
        )
        """
    )
    db.execute(
        """
        create table projection_points (
            model text not null,
            record_id integer not null,
            x real not null,
            y real not null,
            cluster integer,
            primary key (model, record_id)
        ) without rowid
        """
    )
    db.execute("create index projection_points_cluster on projection_points (model, cluster, record_id)")
    db.execute(
        """
        create table clusters (
            model text not null,
            cluster integer not null,
            size integer not null,
            label text not null,
            words text not null default '[]',
            providers text not null default '{}',
            provider_count integer not null,
            provider_diversity real not null,
            centroid blob not null,
            x real,
            y real,
            primary key (model, cluster)
        ) without rowid
        """
    )
    # sampled cosine similarities of random pairs, as quantiles: where does a score fall?
    db.execute(
        """
        create table similarity_distributions (
            model text primary key,
            data_version text not null,
            pairs integer not null,
            quantiles text not null,
            built integer not null
        )
        """
    )


@migrations()
def m004_links(db: Database) -> None:
    # cross-collection links (search/links.py): each row is one pair of a run; a subject-level
    # row names the depiction pair (source_id, target_id) that gave the subject pair its score
    db.execute(
        """
        create table links (
            id integer primary key,
            model text not null,
            level text not null,
            comparison text not null,
            source_id integer not null,
            target_id integer not null,
            source_provider text not null,
            source_key text not null,
            target_provider text not null,
            target_key text not null,
            similarity real not null,
            rank integer not null,
            data_version text not null
        )
        """
    )
    # the links page: filter by model and level, walk by similarity (or by source) with a keyset
    db.execute("create index links_similarity on links (similarity desc, id)")
    db.execute("create index links_model_similarity on links (model, level, similarity desc, id)")
    db.execute("create index links_source on links (source_provider, source_key, rank, id)")
    db.execute("create index links_model_source on links (model, level, source_provider, source_key, rank, id)")
    db.execute("create index links_run on links (model, level, source_provider, target_provider)")
    # one row per computed (model, from, to, level): what was asked and the data version it saw,
    # so a later load (a new data version) makes the run, and the pages, say "stale"
    db.execute(
        """
        create table links_runs (
            model text not null,
            level text not null,
            source_provider text not null,
            target_provider text not null,
            k integer not null,
            threshold real not null,
            comparisons text not null,
            data_version text not null,
            links integer not null,
            computed integer not null,
            seconds real not null,
            primary key (model, level, source_provider, target_provider)
        )
        """
    )


@migrations()
def m005_link_judgements(db: Database) -> None:
    # A curator's verdict on a link, keyed by the records' natural keys (provider plus
    # depiction_id or subject_id, by level) and the model that proposed the link, never
    # by records.id or links.id: ids change when a database is rebuilt from Parquet or
    # links are recomputed, and the judgements must outlive both.  Rows are only ever
    # added: a new verdict by the same person on the same link supersedes the older
    # one in ``link_judgements_current`` and the history stays.
    db.execute(
        """
        create table link_judgements (
            id integer primary key,
            model text not null,
            level text not null check (level in ('depiction', 'subject')),
            source_provider text not null,
            source_key text not null,
            target_provider text not null,
            target_key text not null,
            label text not null check (label in ('same object', 'similar object', 'same category', 'no link')),
            note text,
            judged_by text not null,
            judged_at text not null,
            unique (source_provider, source_key, target_provider, target_key, model, level, judged_by, judged_at, label)
        )
        """
    )
    db.execute(
        """
        create view link_judgements_current as
        select j.* from link_judgements j
        where not exists (
            select 1 from link_judgements newer
            where newer.source_provider = j.source_provider and newer.source_key = j.source_key
              and newer.target_provider = j.target_provider and newer.target_key = j.target_key
              and newer.model = j.model and newer.level = j.level and newer.judged_by = j.judged_by
              and (newer.judged_at > j.judged_at or (newer.judged_at = j.judged_at and newer.id > j.id))
        )
        """
    )


@migrations()
def m006_model_comparisons(db: Database) -> None:
    # filled by `datasette-embeddings compare`: two models' agreement over the subjects both hold
    db.execute(
        """
        create table model_comparisons (
            a text not null,
            b text not null,
            k integer not null,
            data_version_a text not null,
            data_version_b text not null,
            subjects integer not null,
            mean_jaccard real not null,
            disagreements text not null default '[]',
            built integer not null,
            primary key (a, b, k)
        )
        """
    )


#: the words keyword search reads, as virtual generated columns of ``records``
#: (computed from ``attributes`` when read, so they cost no storage and can never
#: disagree with it); ``records_fts`` indexes them.
KEYWORD_COLUMNS = {
    "title": "json_extract(attributes, '$.subject_title')",
    # a text record's words: its `text` attribute, else its preview (which is the text itself)
    "text": (
        "coalesce(json_extract(attributes, '$.text'), case when coalesce(json_extract(attributes, '$.type'), 'image') "
        "= 'text' then json_extract(attributes, '$.preview') end)"
    ),
    "creditline": "json_extract(attributes, '$.subject_creditline')",
}
#: accents folded, so "Joaquin" finds "Joaquín"
KEYWORD_TOKENIZER = "unicode61 remove_diacritics 2"


@migrations(transactional=False)
def m007_keyword_index(db: Database) -> None:
    # Not in one transaction: sqlite-utils' enable_fts runs a script, which commits.
    # Each step is idempotent instead, so a run stopped half-way completes on the next load.
    existing = {row[1] for row in db.execute("pragma table_xinfo(records)").fetchall()}
    for name, expression in KEYWORD_COLUMNS.items():
        if name not in existing:
            db.execute(f"alter table records add column {name} text generated always as ({expression}) virtual")
    # external-content FTS5 over the generated columns; sqlite-utils' triggers keep it
    # current through every later insert, update and delete, so `load` need not know it exists
    db["records"].enable_fts(list(KEYWORD_COLUMNS), create_triggers=True, tokenize=KEYWORD_TOKENIZER, replace=True)


@migrations()
def m007_neighbours(db: Database) -> None:
    # the precomputed neighbours (search/neighbours.py); databases built by older
    # versions had them as `neighbors` / `neighbors_models`, created outside migrations
    if db["neighbors"].exists():
        db.execute("alter table neighbors rename to neighbours")
        db.execute("drop index if exists neighbors_model")
    else:
        db.execute(
            """
            create table neighbours (
                model text not null,
                record_id integer not null,
                rank integer not null,
                neighbour_id integer not null,
                similarity real not null,
                primary key (record_id, rank)
            ) without rowid
            """
        )
    db.execute("create index if not exists neighbours_model on neighbours (model)")
    if db["neighbors_models"].exists():
        db.execute("alter table neighbors_models rename to neighbour_runs")
    else:
        db.execute(
            """
            create table neighbour_runs (
                model text primary key,
                k integer not null,
                data_version text not null,
                built integer not null,
                seconds real not null
            )
            """
        )


def migrate(db: Database) -> None:
    """Apply pending migrations; callers hold no open transaction."""
    migrations.apply(db)
