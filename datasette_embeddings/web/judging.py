"""Judging links in the browser: the ``embeddings-judge`` permission and the POST that records a verdict.

Publishing is read-only; judging happens on a writable instance a curator runs
(``datasette serve collection.db --root``, or a ``judges`` allow block in the
plugin configuration).  Three conditions, all checked on every POST, before
anything is written:

- the database is mutable (an immutable ``-i`` database only shows judgements);
- the actor has the Datasette permission ``embeddings-judge`` on the database;
- the request carries Datasette's CSRF token (checked by Datasette's asgi-csrf
  before the request reaches us: a form POST without it is a 403 there).

Anything else is a 403 and the database is untouched.
"""
from __future__ import annotations

from typing import Any, Sequence

from datasette.utils import actor_matches_allow
from datasette.utils.asgi import Forbidden, Response

from .. import config as plugin_config
from ..storage import judgements as store_judgements
from ..storage.store import Store

PERMISSION = "embeddings-judge"
#: who may judge when the configuration says nothing: the ``--root`` actor


def judges_allow_block(datasette) -> Any:
    """The ``judges`` allow block of the plugin configuration (Datasette's allow syntax), default root only."""
    return plugin_config.for_datasette(datasette).judges


def permission_allowed(datasette, actor, action: str, resource) -> bool | None:
    """The hook's answer for ``embeddings-judge``: True for a matching actor, otherwise no opinion.

    Returning None (not False) leaves other permission plugins free to grant it;
    Datasette's default for an unanswered check is to refuse.
    """
    if action != PERMISSION:
        return None
    allow = judges_allow_block(datasette)
    if allow is None or allow is False:
        return None
    return True if actor_matches_allow(actor, allow) else None


async def can_judge(datasette, actor, db) -> bool:
    """Whether this actor may record judgements on this database now."""
    if not db.is_mutable:
        return False
    return bool(await datasette.permission_allowed(actor, PERMISSION, resource=db.name, default=False))


def safe_next(value: str | None, fallback: str) -> str:
    """A same-site path to go back to after a POST; anything else (``//host``, ``http:``) is the fallback."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and "\n" not in value and "\r" not in value:
        return value
    return fallback


def _record(conn, judgement: store_judgements.Judgement) -> None:
    """Write one judgement in its own transaction (on Datasette's write connection)."""
    conn.execute("begin immediate")
    try:
        if not store_judgements.table_exists(conn):
            Store(conn).migrate()  # a database loaded before judgements existed
        store_judgements.check_records(conn, judgement)
        store_judgements.add(conn, [judgement])
        conn.execute("commit")
    except BaseException:
        if conn.in_transaction:
            conn.execute("rollback")
        raise


async def judge(datasette, request, db, *, links_url: str, as_json: bool) -> Response:
    """Record the verdict posted by the form; 403 unless the database is mutable and the actor may judge."""
    if not db.is_mutable:
        raise Forbidden(f"database '{db.name}' is immutable: its judgements can be read, not changed")
    if not await datasette.permission_allowed(request.actor, PERMISSION, resource=db.name, default=False):
        raise Forbidden(f"judging links needs the '{PERMISSION}' permission")
    form = await request.post_vars()
    actor = request.actor or {}
    who = str(actor.get("id") or "").strip()
    if not who:
        raise Forbidden("judging links needs a signed-in actor with an id")
    judgement = store_judgements.make(
        model=form.get("model") or "", level=form.get("level") or "depiction",
        source_provider=form.get("source_provider") or "", source_key=form.get("source_key") or "",
        target_provider=form.get("target_provider") or "", target_key=form.get("target_key") or "",
        label=form.get("label") or "", note=form.get("note"), judged_by=who,
    )
    await db.execute_write_fn(lambda conn: _record(conn, judgement))
    if as_json:
        return Response.json({"ok": True, "judgement": judgement.as_dict()})
    return Response.redirect(safe_next(form.get("next"), links_url))


def attach(conn, links: Sequence[dict]) -> None:
    """Give each link dict (with level and the four key fields) its stored current judgements, newest first."""
    by_level: dict[str, list[dict]] = {}
    for link in links:
        by_level.setdefault(link.get("level") or "depiction", []).append(link)
    for level, group in by_level.items():
        pairs = [(l["source_provider"], l["source_key"], l["target_provider"], l["target_key"]) for l in group]
        found = store_judgements.for_pairs(conn, level, pairs)
        for link, pair in zip(group, pairs):
            link["judgements"] = [j.as_dict() for j in found.get(pair, [])]


def controls(datasette, request, db, allowed: bool, links_url: str) -> dict:
    """What the links page needs to draw the four buttons (or none)."""
    return {
        "can_judge": allowed,
        "judge_url": datasette.urls.database(db.name) + "/-/links/judge",
        "labels": list(store_judgements.LABELS),
        "csrftoken": request.scope.get("csrftoken")() if allowed and request.scope.get("csrftoken") else "",
        "next": request.full_path if hasattr(request, "full_path") else links_url,
    }

