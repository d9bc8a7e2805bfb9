"""Canned queries: similar records, cross-provider links, text search, near-duplicates.

SQL cannot pick a table from a parameter, and every model has its own vec0
table, so each query is a ``UNION ALL`` with one branch per model, guarded by
``:model = '<label>'``.  SQLite evaluates that constant guard before it opens the
branch's loop, so only the chosen model's branch ever searches.  No query here
writes a KNN of its own: every search is ``embeddings_nearest`` (:mod:`sql.functions`
over :func:`search.similarity.nearest_ids`, the one place a neighbour query is
built), which answers from the in-memory matrix (vec0's exact scan when it cannot)
with filters inside the search.  ``cross_provider_links`` reads the ``links`` table
while a current run holds the providers and otherwise calls ``embeddings_links``
(:mod:`search.links`): one blocked matrix product for all records of provider_a
instead of one search per record.  Either way the provider constraint is inside the
search, so "best match in provider B" is the best of B, not the best overall that
happens to be B.

Where ``datasette-embeddings neighbours`` has stored a model's neighbours and they
are current, ``similar_records`` (for k up to the stored k) and ``near_duplicates``
read them instead of searching: one indexed read per record, which is what makes
``near_duplicates`` usable on a large, statically published collection.  The
queries are built per request, so a ``load`` that makes the table stale switches
them back to searching at once.

The plugin offers these for every database holding ``records`` and ``models``
(the ``canned_queries`` hook); ``metadata.yml`` may define a query of the same
name to give it a title or description, and then the metadata one is used.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

from ..search import neighbours
from ..search.filters import MAX_K
from ..storage.store import ModelInfo, Store

RECORD_COLUMNS = "r.id, r.provider, r.depiction_id, r.subject_id, r.model, r.attributes"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _union(models: Sequence[ModelInfo], branch: str, stored: Mapping[str, int] | None = None, stored_branch: str = "") -> str:
    """One guarded branch per model; ``{vec}``, ``{label}`` and ``{k}`` are filled in per model.

    A model in ``stored`` (label -> k of its current ``neighbours`` rows) gets
    ``stored_branch`` instead, when one is given.
    """
    if not models:
        return "select null as id, null as distance where 0"
    stored = stored or {}
    return "\n  union all\n".join(
        (stored_branch if stored_branch and m.label in stored else branch).format(
            vec=m.vec_table, label=_quote(m.label), k=stored.get(m.label, 0)
        )
        for m in models
    )


def _checks(models: Sequence[ModelInfo], providers: Sequence[str], *, model: bool = True,
            provider_params: Sequence[str] = (), numbers: Sequence[tuple[str, float, float]] = ()) -> str:
    """A constant WHERE term that stops the query with a message on a bad parameter.

    SQLite tests terms that read no row once, before any loop, so a bad value is an
    error even when the search would have found nothing.  Empty values pass: the
    form's first, unsubmitted view shows no error.
    """
    terms = []
    if model:
        terms.append(f"embeddings_check_choice(:model, 'model', {_quote(json.dumps([m.label for m in models]))})")
    for name in provider_params:
        terms.append(f"embeddings_check_choice(:{name}, '{name}', {_quote(json.dumps(list(providers)))})")
    for name, low, high in numbers:
        terms.append(f"embeddings_check_number(:{name}, '{name}', {low}, {high})")
    return " and ".join(terms) if terms else "1"


def _pairs_sql(best: str, extra_where: str) -> str:
    """Rows of (record, its best match) from a ``pairs(a_id, best = json [id, distance])`` CTE body.

    ``materialized``: each record's search runs once.  Without it SQLite pushes
    ``near_duplicates``' mutual-pair test (``q.a_id = m.id``) into the CTE and
    searches again for every candidate pair (15,818 searches instead of 9,264 for
    the demo's MiniLM titles); the lookups then use an automatic index on ``a_id``.
    """
    return (
        "with pairs as materialized (\n" + best + "\n)\n"
        f"select {RECORD_COLUMNS},\n"
        "  round(1 - json_extract(p.best, '$[1]'), 4) as similarity,\n"
        "  m.id as match_id, m.provider as match_provider, m.depiction_id as match_depiction_id,\n"
        "  m.subject_id as match_subject_id, m.model as match_model, m.attributes as match_attributes\n"
        "from pairs p join records r on r.id = p.a_id join records m on m.id = json_extract(p.best, '$[0]')\n"
        "where 1 - json_extract(p.best, '$[1]') >= cast(:threshold as real)\n"
        + extra_where
        + "order by similarity desc, r.id"
    )


def _nearest(vector: str, k: str) -> str:
    """Rows ``(id, distance)`` of ``embeddings_nearest`` for one guarded branch (``{label}`` filled in per model).

    ``distance`` is vec0's cosine distance, ``1 - similarity``, so the queries order and
    report as they did when they read vec0 directly.
    """
    return (
        "  select json_extract(j.value, '$.id') as id, 1 - json_extract(j.value, '$.similarity') as distance\n"
        f"  from json_each(embeddings_nearest({{label}}, {vector}, {k})) j\n"
        "  where :model = {label}"
    )


#: the chosen record's id; a depiction that is not there is an error naming what was asked for
TARGET_ID = (
    "embeddings_check_found((select id from target), :depiction_id, "
    "printf('no record with provider %Q, depiction_id %Q and model %Q', :provider, :depiction_id, :model))"
)


def similar_records_sql(models: Sequence[ModelInfo], stored: Mapping[str, int] | None = None, providers: Sequence[str] = ()) -> str:
    # the record's own vector; k + 1 because the record is its own nearest (left out below).
    # Capped at MAX_K, the most embeddings_nearest takes: the check below refuses a larger k.
    search = _nearest(
        "(select e.embedding from {vec} e where e.id = " + TARGET_ID + ")",
        f"min(cast(:k as integer) + 1, {MAX_K})",
    )
    # k up to the stored k: read the table; more: search as for any other model
    from_table = (
        "  select n.neighbour_id as id, 1 - n.similarity as distance from neighbours n\n"
        "  where :model = {label} and cast(:k as integer) <= {k}\n"
        "    and n.record_id = " + TARGET_ID + " and n.rank <= cast(:k as integer)\n"
        "  union all\n" + search + " and cast(:k as integer) > {k}"
    )
    found = _union(models, search, stored, from_table)
    return (
        "with target as (\n"
        "  select id from records where provider = :provider and depiction_id = :depiction_id and model = :model\n"
        "),\nfound as (\n" + found + "\n)\n"
        f"select {RECORD_COLUMNS}, round(1 - n.distance, 4) as similarity\n"
        "from found n join records r on r.id = n.id\n"
        "where r.id != (select id from target)\n"
        "  and " + _checks(models, providers, provider_params=["provider"], numbers=[("k", 1, MAX_K)]) + "\n"
        "order by n.distance"
    )


def cross_provider_links_sql(models: Sequence[ModelInfo], providers: Sequence[str] = (),
                             has_links_table: bool = True) -> str:
    """Each record of provider_a with its best record of provider_b (the best over comparison types).

    From the ``links`` table when a current run (the model's data version) holds these
    providers at depiction level (``embeddings_links_current()``); otherwise
    ``embeddings_links()`` computes them with the blocked matrix products of
    ``datasette-embeddings links``.  The guard is a deterministic function of the
    parameters only, so SQLite evaluates it once, before the branches' loops: the
    blocked computation does not run when the table answers.  The SQL names no model,
    so ``metadata.yml`` can ship it unchanged; ``has_links_table`` False leaves the
    table out for databases loaded before the ``links`` migration.
    """
    computed = (
        "  select json_extract(j.value, '$[0]') as a_id, json_extract(j.value, '$[1]') as b_id,\n"
        "    max(json_extract(j.value, '$[2]')) as similarity\n"
        "  from json_each(embeddings_links(:model, :provider_a, :provider_b, 1, cast(:threshold as real))) j\n"
        "{guard}"
        "  group by json_extract(j.value, '$[0]')"
    )
    current = "embeddings_links_current(:model, :provider_a, :provider_b, 'depiction')"
    if not has_links_table:
        pairs = computed.format(guard="")
    else:
        pairs = (
            # a bare column beside max(): SQLite takes b_id from the row holding the maximum
            "  select l.source_id as a_id, l.target_id as b_id, max(l.similarity) as similarity from links l\n"
            f"  where {current}\n"
            "    and l.model = :model and l.level = 'depiction' and l.source_provider = :provider_a\n"
            "    and l.target_provider = :provider_b and l.rank = 1\n"
            "  group by l.source_id\n"
            "  union all\n" + computed.format(guard=f"  where not {current}\n")
        )
    return (
        "with pairs as materialized (\n" + pairs + "\n)\n"
        f"select {RECORD_COLUMNS},\n"
        "  round(p.similarity, 4) as similarity,\n"
        "  m.id as match_id, m.provider as match_provider, m.depiction_id as match_depiction_id,\n"
        "  m.subject_id as match_subject_id, m.model as match_model, m.attributes as match_attributes\n"
        "from pairs p join records r on r.id = p.a_id join records m on m.id = p.b_id\n"
        "where p.similarity >= cast(:threshold as real)\n"
        "  and " + _checks(models, providers, provider_params=["provider_a", "provider_b"],
                           numbers=[("threshold", -1, 1)]) + "\n"
        "order by p.similarity desc, r.id"
    )


def text_search_sql(models: Sequence[ModelInfo], providers: Sequence[str] = ()) -> str:
    found = _union(models, _nearest("embed_text(:model, :q)", "cast(:k as integer)"))
    return (
        "with found as (\n" + found + "\n)\n"
        f"select {RECORD_COLUMNS}, round(1 - n.distance, 4) as similarity\n"
        "from found n join records r on r.id = n.id\n"
        "where " + _checks(models, providers, numbers=[("k", 1, MAX_K)]) + "\n"
        "order by n.distance"
    )


def near_duplicates_sql(models: Sequence[ModelInfo], stored: Mapping[str, int] | None = None, providers: Sequence[str] = ()) -> str:
    # The two nearest are the record itself and its nearest other
    # record (or, among identical vectors, two others): the first that is not the record wins.
    best = _union(
        models,
        "  select a.id as a_id, (\n"
        "    select json_array(json_extract(n.value, '$.id'), 1 - json_extract(n.value, '$.similarity'))\n"
        "    from json_each(embeddings_nearest({label}, v.embedding, 2)) n\n"
        "    where json_extract(n.value, '$.id') != a.id order by n.key limit 1\n"
        "  ) as best\n"
        "  from records a join {vec} v on v.id = a.id\n"
        "  where :model = {label} and a.model = {label}",
        stored,
        # the stored nearest other record: rank 1 never is the record itself
        "  select n.record_id as a_id, json_array(n.neighbour_id, 1 - n.similarity) as best\n"
        "  from neighbours n where :model = {label} and n.model = {label} and n.rank = 1",
    )
    # a mutual pair (each the other's nearest) is listed once, from its lower id
    return _pairs_sql(
        best,
        "  and (r.id < m.id or not exists (\n"
        "    select 1 from pairs q where q.a_id = m.id and json_extract(q.best, '$[0]') = r.id))\n"
        "  and " + _checks(models, providers, numbers=[("threshold", -1, 1)]) + "\n",
    )


def queries_for(models: Sequence[ModelInfo], stored: Mapping[str, int] | None = None, providers: Sequence[str] = (),
                has_links_table: bool = True) -> dict[str, dict]:
    """The canned queries for a database holding ``models``, in Datasette's format.

    ``stored`` maps a model label to the k of its current ``neighbours`` rows;
    ``has_links_table`` says whether the database has the ``links`` tables.
    """
    labels = ", ".join(m.label for m in models) or "none loaded"
    return {
        "similar_records": {
            "title": "Similar records",
            "description": f"The k records most similar to one depiction under one model (models: {labels}).",
            "sql": similar_records_sql(models, stored, providers),
            "params": ["provider", "depiction_id", "model", "k"],
        },
        "cross_provider_links": {
            "title": "Cross-provider links",
            "description": "For each record of provider_a, its most similar record in provider_b, "
            "kept when the similarity is at least threshold (0 to 1); from the links table while it is "
            "current, computed otherwise. Every link, past the 1,000 rows shown here: the links page.",
            "sql": cross_provider_links_sql(models, providers, has_links_table),
            "params": ["model", "provider_a", "provider_b", "threshold"],
        },
        "text_search": {
            "title": "Search by text",
            "description": "Records nearest to a text, embedded at query time by embed_text(model, q); "
            "only models with a text-capable llm model answer.",
            "sql": text_search_sql(models, providers),
            "params": ["model", "q", "k"],
        },
        "near_duplicates": {
            "title": "Near-duplicate pairs",
            "description": "Pairs of records under one model whose similarity is at least threshold "
            "(each record with its nearest neighbour, each pair once).",
            "sql": near_duplicates_sql(models, stored, providers),
            "params": ["model", "threshold"],
        },
    }


def canned_queries_for_database(conn) -> dict[str, dict]:
    """The queries for the database behind ``conn``, or none if it holds no embeddings."""
    store = Store(conn)
    if not store.is_initialised():
        return {}
    models = store.models()
    stored = {m.label: k for m in models if (k := neighbours.current_k(conn, m))}
    providers = [p for p, in conn.execute("select distinct provider from records order by provider")]
    has_links = conn.execute("select 1 from sqlite_master where type = 'table' and name = 'links_runs'").fetchone()
    return queries_for(models, stored, providers, bool(has_links))


async def canned_queries(datasette, database: str) -> dict[str, dict]:
    """Hook body: our queries, minus names ``metadata.yml`` already defines for this database."""
    if database == "_internal" or database not in datasette.databases:
        return {}
    queries = await datasette.databases[database].execute_fn(canned_queries_for_database)
    defined = datasette.metadata("queries", database=database, fallback=False) or {}
    return {name: q for name, q in queries.items() if name not in defined}
