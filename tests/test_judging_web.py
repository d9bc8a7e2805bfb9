"""Judging in the browser: who may POST a verdict, CSRF, immutable databases; the evaluation page."""
from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_embeddings.cli import cli
from datasette_embeddings.storage.connection import connect
from tests.test_evaluation import judged_db  # noqa: F401  (the hand-computed example)

LINK = {
    "model": "m-8", "level": "depiction", "source_provider": "met", "source_key": "met-d5",
    "target_provider": "rijks", "target_key": "rijks-d5", "label": "same object", "note": "same print",
}


def fetch(ds, path, method="get", **kwargs):
    return asyncio.run(getattr(ds.client, method)(path, **kwargs))


def judgement_rows(db) -> list[tuple]:
    conn = connect(str(db), readonly=True)
    try:
        if not conn.execute("select 1 from sqlite_master where name = 'link_judgements'").fetchone():
            return []
        return conn.execute("select model, source_key, target_key, label, note, judged_by from link_judgements order by id").fetchall()
    finally:
        conn.close()


def cookies_for(ds, actor_id: str | None, csrf: str | None = "token") -> dict:
    cookies = {}
    if actor_id:
        cookies["ds_actor"] = ds.sign({"a": {"id": actor_id}}, "actor")
    if csrf:
        cookies["ds_csrftoken"] = ds.sign(csrf, "csrftoken")
    return cookies


def post(ds, db_name, data, *, actor="root", with_token=True, path="/-/links/judge"):
    cookies = cookies_for(ds, actor)
    form = dict(data)
    if with_token:
        form["csrftoken"] = cookies["ds_csrftoken"]
    return fetch(ds, f"/{db_name}{path}", "post", data=form, cookies=cookies)


@pytest.fixture
def writable(loaded_db):
    return Datasette([str(loaded_db)]), loaded_db.stem


def test_root_may_judge_and_the_verdict_is_stored_under_its_id(writable, loaded_db):
    ds, name = writable
    before = judgement_rows(loaded_db)
    r = post(ds, name, {**LINK, "next": f"/{name}/-/links?model=m-8"})
    assert r.status_code == 302 and r.headers["location"] == f"/{name}/-/links?model=m-8"
    assert judgement_rows(loaded_db) == before + [("m-8", "met-d5", "rijks-d5", "same object", "same print", "root")]


def test_json_twin_answers_with_the_judgement(writable, loaded_db):
    ds, name = writable
    r = post(ds, name, LINK, path="/-/links/judge.json")
    assert r.status_code == 200 and r.json()["judgement"]["judged_by"] == "root"


def test_next_must_stay_on_this_site(writable):
    ds, name = writable
    r = post(ds, name, {**LINK, "next": "//evil.example.org/"})
    assert r.status_code == 302 and r.headers["location"] == f"/{name}/-/links"


@pytest.mark.parametrize("actor", [None, "visitor"])
def test_without_the_permission_it_is_403_and_nothing_is_written(writable, loaded_db, actor):
    ds, name = writable
    before = judgement_rows(loaded_db)
    r = post(ds, name, LINK, actor=actor)
    assert r.status_code == 403
    assert judgement_rows(loaded_db) == before


def test_without_the_csrf_token_it_is_403_and_nothing_is_written(writable, loaded_db):
    ds, name = writable
    before = judgement_rows(loaded_db)
    r = post(ds, name, LINK, with_token=False)
    assert r.status_code == 403
    r = fetch(ds, f"/{name}/-/links/judge", "post", data={**LINK, "csrftoken": "forged"}, cookies=cookies_for(ds, "root"))
    assert r.status_code == 403
    assert judgement_rows(loaded_db) == before


def test_an_immutable_database_refuses_even_root(loaded_db):
    ds = Datasette(immutables=[str(loaded_db)])
    before = judgement_rows(loaded_db)
    r = post(ds, loaded_db.stem, LINK)
    assert r.status_code == 403 and "immutable" in r.text
    assert judgement_rows(loaded_db) == before


def test_judges_come_from_the_plugin_configuration(loaded_db):
    ds = Datasette([str(loaded_db)], metadata={"plugins": {"datasette-embeddings": {"judges": {"id": ["alice"]}}}})
    name = loaded_db.stem
    assert post(ds, name, LINK, actor="root").status_code == 403
    assert post(ds, name, LINK, actor="alice").status_code == 302
    assert [row[-1] for row in judgement_rows(loaded_db)] == ["alice"]
    assert asyncio.run(ds.permission_allowed({"id": "alice"}, "embeddings-judge", resource=name)) is True
    assert asyncio.run(ds.permission_allowed({"id": "bob"}, "embeddings-judge", resource=name)) is False


@pytest.mark.parametrize(
    "change, status, message",
    [({"label": "maybe"}, 400, "unknown label"), ({"target_key": "nope"}, 404, "target record not in the database")],
)
def test_a_bad_verdict_is_refused_and_nothing_is_written(writable, loaded_db, change, status, message):
    ds, name = writable
    before = judgement_rows(loaded_db)
    r = post(ds, name, {**LINK, **change}, path="/-/links/judge.json")
    assert r.status_code == status and message in r.json()["error"]
    assert judgement_rows(loaded_db) == before


def test_get_is_not_a_way_to_judge(writable, loaded_db):
    ds, name = writable
    r = fetch(ds, f"/{name}/-/links/judge?label=no+link", cookies=cookies_for(ds, "root"))
    assert r.status_code == 405
    assert judgement_rows(loaded_db) == []


# ---------------------------------------------------------------- the evaluation page
def test_evaluation_json_is_the_cli_json(judged_db):  # noqa: F811
    ds = Datasette(immutables=[str(judged_db)])
    r = fetch(ds, f"/{judged_db.stem}/-/links/evaluation.json")
    assert r.status_code == 200
    cli_out = json.loads(CliRunner().invoke(cli, ["evaluate", str(judged_db), "--json"]).output)
    body = r.json()
    assert body.pop("ok") is True
    assert body == cli_out


def test_evaluation_page_draws_one_line_per_model(judged_db):  # noqa: F811
    ds = Datasette(immutables=[str(judged_db)])
    r = fetch(ds, f"/{judged_db.stem}/-/links/evaluation?precision=0.6")
    assert r.status_code == 200
    html = r.text
    assert html.count('<g class="emb-chart-series"') == 2
    assert 'data-model="m-8"' in html and 'data-model="m-4"' in html
    assert html.count("<polyline") == 2
    # m-4's one judged link (0.40) gives points at 0.30, 0.35 and 0.40 only; m-8 has points up to 0.90
    assert html.count("<circle") == 3 + 13
    assert "0.65" in html  # the threshold for precision 0.6
    assert "1 judged pair is not among the stored links" in html


@pytest.mark.parametrize("query", ["positive=maybe", "precision=abc", "precision=2"])
def test_evaluation_bad_parameters_are_400(judged_db, query):  # noqa: F811
    ds = Datasette(immutables=[str(judged_db)])
    r = fetch(ds, f"/{judged_db.stem}/-/links/evaluation.json?{query}")
    assert r.status_code == 400 and r.json()["ok"] is False
