"""One object, all its depictions: the record page lists them and switches models by subject."""
import pytest
from datasette.app import Datasette

from datasette_embeddings.files import loader
from tests.gallery_fixtures import fetch
from tests.helpers import make_records, write_parquet


@pytest.fixture(scope="module")
def painting_db(tmp_path_factory):
    """A painting's image under an image model and its title under a text model: two depictions, one subject."""
    folder = tmp_path_factory.mktemp("subjects")
    images = make_records(n=3, providers=("met",), models={"image-model": 4})
    titles = make_records(n=3, providers=("met",), models={"text/model": 6}, seed=1)
    for i, r in enumerate(images):
        r.update(depiction_id=f"DP{i}", subject_id=f"obj{i}")
    for i, r in enumerate(titles):
        r.update(depiction_id=f"obj{i}#title", subject_id=f"obj{i}")
        r["attributes"] = {"type": "text", "preview": f"Title of object {i}", "subject_title": f"Title of object {i}"}
    extra = dict(images[0], depiction_id="DP0-back")  # a second image of object 0
    write_parquet(folder / "p.parquet", images + titles + [extra])
    db = folder / "painting.db"
    loader.load(str(db), [str(folder / "p.parquet")])
    return db


def _ids(db):
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db))
    try:
        return {(d, m): i for i, d, m in conn.execute("select id, depiction_id, model from records")}
    finally:
        conn.close()


def test_record_page_lists_every_depiction_of_its_object(painting_db):
    ds = Datasette([str(painting_db)])
    ids = _ids(painting_db)
    data = fetch(ds, f"/painting/-/gallery/{ids[('DP0', 'image-model')]}.json").json()
    assert sorted((c["depiction_id"], c["model"]) for c in data["depictions"]) == [("DP0-back", "image-model"), ("obj0#title", "text/model")]
    # the model switch offers both models of the object, the text one leading to the title record
    switch = {m["model"]: m for m in data["models"]}
    assert switch["text/model"]["id"] == ids[("obj0#title", "text/model")] and switch["image-model"]["current"]
    html = fetch(ds, f"/painting/-/gallery/{ids[('DP0', 'image-model')]}").text
    assert "other depictions (2)" in html and f'href="/painting/-/gallery/{ids[("obj0#title", "text/model")]}' in html


def test_model_param_switches_by_subject(painting_db):
    ds = Datasette([str(painting_db)])
    ids = _ids(painting_db)
    data = fetch(ds, f"/painting/-/gallery/{ids[('obj1#title', 'text/model')]}.json?model=image-model").json()
    assert data["record"]["id"] == ids[("DP1", "image-model")]
    r = fetch(ds, f"/painting/-/gallery/{ids[('obj2#title', 'text/model')]}.json?model=nope")
    assert r.status_code == 404


def test_record_page_offers_only_providers_under_its_model(painting_db, tmp_path):
    other = make_records(n=2, providers=("nga",), models={"text/model": 6}, seed=3)
    write_parquet(tmp_path / "o.parquet", other)
    loader.load(str(painting_db), [str(tmp_path / "o.parquet")])
    ds = Datasette([str(painting_db)])
    ids = _ids(painting_db)
    image = fetch(ds, f"/painting/-/gallery/{ids[('DP0', 'image-model')]}.json").json()
    text = fetch(ds, f"/painting/-/gallery/{ids[('obj0#title', 'text/model')]}.json").json()
    assert image["providers"] == ["met"] and text["providers"] == ["met", "nga"]


def test_error_page_offers_ways_back(painting_db):
    ds = Datasette([str(painting_db)])
    r = fetch(ds, "/painting/-/gallery/99999", headers={"referer": "http://localhost/painting/-/gallery?model=image-model"})
    assert r.status_code == 404
    assert 'href="/painting/-/gallery?model=image-model">&#8592; Back to the page you came from' in r.text
    assert 'href="/painting/-/gallery">The gallery' in r.text and 'href="/painting/-/search">Search' in r.text
    other = fetch(ds, "/painting/-/gallery/99999", headers={"referer": "https://evil.example/x"})
    assert "evil.example" not in other.text and "Back to the page you came from" not in other.text
