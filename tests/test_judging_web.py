"""Judging in the browser: who may POST a verdict, CSRF, immutable databases; the evaluation page."""
from __future__ import annotations

import asyncio
import json
import re

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


# ---------------------------------------------------------------- the links page with real links
@pytest.fixture
def linked_db(tmp_path, loaded_db):
    result = CliRunner().invoke(cli, ["links", str(loaded_db), "--from", "met", "--to", "rijks", "--model", "m-8", "--k", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    conn = connect(str(loaded_db), readonly=True)
    first = conn.execute(
        "select source_key, target_key from links where model = 'm-8' order by similarity desc limit 1"
    ).fetchone()
    conn.close()
    path = tmp_path / "j.csv"
    path.write_text(
        "model,source_provider,source_key,target_provider,target_key,label,note,judged_by\n"
        f"m-8,met,{first[0]},rijks,{first[1]},no link,checked <b>by hand</b>,ann\n"
    )
    assert CliRunner().invoke(cli, ["judgements", "import", str(loaded_db), str(path)]).exit_code == 0
    return loaded_db


def test_a_judge_sees_four_buttons_on_every_link(linked_db):
    ds = Datasette([str(linked_db)])
    r = fetch(ds, f"/{linked_db.stem}/-/links?model=m-8&size=5", cookies=cookies_for(ds, "root", csrf=None))
    assert r.status_code == 200
    html = r.text
    assert html.count('class="emb-link"') == 5
    assert html.count('class="emb-judge-form"') == 5
    assert html.count('name="label"') == 20
    forms = re.findall(r'<form class="emb-judge-form".*?</form>', html, flags=re.S)
    assert len(forms) == 5 and all(re.search(r'name="csrftoken" value="[^"]+"', f) for f in forms)
    # the stored judgement shows, escaped
    assert "checked &lt;b&gt;by hand&lt;/b&gt;" in html and "<b>by hand" not in html


@pytest.mark.parametrize("immutable, actor", [(False, None), (False, "visitor"), (True, "root")])
def test_others_and_immutable_databases_see_judgements_only(linked_db, immutable, actor):
    ds = Datasette(immutables=[str(linked_db)]) if immutable else Datasette([str(linked_db)])
    r = fetch(ds, f"/{linked_db.stem}/-/links?model=m-8&size=5", cookies=cookies_for(ds, actor, csrf=None))
    assert r.status_code == 200
    assert '<form class="emb-judge-form"' not in r.text and 'name="label"' not in r.text
    assert 'emb-verdict-no-link">no link<' in r.text


def test_links_json_carries_judgements_not_the_form(linked_db):
    ds = Datasette([str(linked_db)])
    r = fetch(ds, f"/{linked_db.stem}/-/links.json?model=m-8&size=5", cookies=cookies_for(ds, "root", csrf=None))
    body = r.json()
    assert "judging" not in body
    assert [j["label"] for j in body["links"][0]["judgements"]] == ["no link"]
    assert all(link["judgements"] == [] for link in body["links"][1:])


def test_judging_from_the_page_round_trip(linked_db):
    """What a browser does: the page's form token and cookie, one button, back to the same page."""
    ds = Datasette([str(linked_db)])
    name = linked_db.stem
    page = f"/{name}/-/links?model=m-8&size=5"
    cookies = cookies_for(ds, "root", csrf=None)
    r = fetch(ds, page, cookies=cookies)
    form = re.findall(r'<form class="emb-judge-form".*?</form>', r.text, flags=re.S)[1]
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    cookies["ds_csrftoken"] = r.cookies["ds_csrftoken"]
    assert re.search(r'action="/' + name + '/-/links/judge"', form)
    r = fetch(ds, f"/{name}/-/links/judge", "post",
              data={**fields, "label": "similar object", "note": ""}, cookies=cookies)
    assert r.status_code == 302 and r.headers["location"] == page
    body = fetch(ds, page.replace("/-/links?", "/-/links.json?"), cookies=cookies).json()
    assert [j["label"] for j in body["links"][1]["judgements"]] == ["similar object"]
    assert body["links"][1]["judgements"][0]["judged_by"] == "root"


def test_evaluation_of_real_links_and_their_staleness(linked_db, tmp_path):
    conn = connect(str(linked_db), readonly=True)
    r = __import__("datasette_embeddings.search.evaluation", fromlist=["evaluate"]).evaluate(conn)
    conn.close()
    (group,) = r["groups"]
    assert (group["model"], group["level"], group["judged"], group["positive"]) == ("m-8", "depiction", 1, 0)
    assert group["links"] == 40 and r["stale_runs"] == []
    # a load into m-8 makes the run stale: its links are left out and named
    from datasette_embeddings.files import loader
    from tests.helpers import make_records, write_parquet

    more = tmp_path / "more.parquet"
    write_parquet(more, make_records(n=2, providers=("nga",), models={"m-8": 8}, seed=5))
    loader.load(str(linked_db), [str(more)])
    result = CliRunner().invoke(cli, ["evaluate", str(linked_db), "--json"])
    data = json.loads(result.output)
    assert data["groups"] == [] and data["stale_runs"][0]["model"] == "m-8"
    assert "Left out, stale: m-8 depiction links from met to rijks" in CliRunner().invoke(cli, ["evaluate", str(linked_db)]).output


# ---------------------------------------------------------------- the judged filter of the links page
def _keys(body):
    return [(link["source_key"], link["target_key"]) for link in body["links"]]


def test_judged_filter_on_stored_links(linked_db):
    ds = Datasette([str(linked_db)])
    base = f"/{linked_db.stem}/-/links.json?model=m-8&size=100"
    every = fetch(ds, base).json()
    assert len(every["links"]) == 40
    judged = [link for link in every["links"] if link["judgements"]]
    assert len(judged) == 1
    pair = (judged[0]["source_key"], judged[0]["target_key"])
    assert _keys(fetch(ds, base + "&judged=yes").json()) == [pair]
    assert _keys(fetch(ds, base + "&judged=no+link").json()) == [pair]
    assert _keys(fetch(ds, base + "&judged=similar+object").json()) == []
    rest = _keys(fetch(ds, base + "&judged=no").json())
    assert len(rest) == 39 and pair not in rest
    csv_text = fetch(ds, f"/{linked_db.stem}/-/links.csv?model=m-8&judged=yes").text
    assert len(csv_text.strip().splitlines()) == 2  # the header and the one judged link


def test_judged_filter_on_links_computed_on_the_fly(loaded_db, tmp_path):
    ds = Datasette([str(loaded_db)])
    base = f"/{loaded_db.stem}/-/links.json?model=m-8&from=met&to=rijks&size=100"
    every = fetch(ds, base).json()
    assert every["mode"] == "computed" and every["links"]
    first = every["links"][3]
    path = tmp_path / "j.csv"
    path.write_text("model,source_provider,source_key,target_provider,target_key,label,judged_by\n"
                    f"m-8,met,{first['source_key']},rijks,{first['target_key']},similar object,ann\n")
    assert CliRunner().invoke(cli, ["judgements", "import", str(loaded_db), str(path)]).exit_code == 0
    assert _keys(fetch(ds, base + "&judged=yes").json()) == [(first["source_key"], first["target_key"])]
    assert _keys(fetch(ds, base + "&judged=similar+object").json()) == [(first["source_key"], first["target_key"])]
    assert len(fetch(ds, base + "&judged=no").json()["links"]) == len(every["links"]) - 1


def test_judged_filter_bad_value_is_400(linked_db):
    ds = Datasette([str(linked_db)])
    r = fetch(ds, f"/{linked_db.stem}/-/links.json?judged=maybe")
    assert r.status_code == 400 and "judged must be one of" in r.json()["error"]


def test_a_malformed_judges_block_stops_the_start(loaded_db):
    ds = Datasette([str(loaded_db)], metadata={"plugins": {"datasette-embeddings": {"judges": "alice"}}})
    with pytest.raises(Exception, match="judges must be an allow block"):
        asyncio.run(ds.invoke_startup())
