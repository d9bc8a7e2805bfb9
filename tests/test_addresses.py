"""Stable addresses: /<db>/-/record/<provider>/<depiction_id>, whatever characters the ids hold."""
import pytest
from datasette.app import Datasette

from datasette_embeddings.files import loader
from datasette_embeddings.web.gallery import decode_address_part, record_address
from tests.gallery_fixtures import IMAGE_MODEL, FAKE_TEXT_MODEL, ds, fetch, museum_db, rid  # noqa: F401
from tests.helpers import make_records, write_parquet

AWKWARD = [
    ("rijks/nl", "SK-C-5/detail"),
    ("met", "a.json"),
    ("met", "x?y=1&z#frag"),
    ("met", "100% ~tilde~ +plus+ space here"),
    ("the met", "..%2F.."),
    ("sfo", "日本語/ünï"),
    ("p", ".json"),
    ("p", "~2F"),
]


@pytest.fixture(scope="module")
def awkward_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    records = []
    for (provider, depiction), base in zip(AWKWARD, make_records(n=len(AWKWARD), providers=("x",), models={"m": 4})):
        for model in ("m", "n/2"):
            records.append({**base, "provider": provider, "depiction_id": depiction, "model": model})
    write_parquet(folder / "a.parquet", records)
    db = folder / "awkward.db"
    loader.load(str(db), [str(folder / "a.parquet")])
    return db


def _id(db, provider, depiction, model):
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db))
    try:
        return conn.execute("select id from records where provider = ? and depiction_id = ? and model = ?",
                            [provider, depiction, model]).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("provider, depiction", AWKWARD)
def test_every_awkward_id_round_trips(awkward_db, provider, depiction):
    ds_ = Datasette([str(awkward_db)])
    address = record_address("/awkward", provider, depiction)
    segments = address.split("/")
    assert len(segments) == 6 and "." not in segments[-1] and "%" not in address
    assert [decode_address_part(s) for s in segments[-2:]] == [provider, depiction]
    for model in ("m", "n/2"):
        expected = _id(awkward_db, provider, depiction, model)
        r = fetch(ds_, record_address("/awkward", provider, depiction, model))
        assert r.status_code == 302 and r.headers["location"] == f"/awkward/-/gallery/{expected}"
        data = fetch(ds_, r.headers["location"] + ".json").json()
        assert (data["record"]["provider"], data["record"]["depiction_id"], data["record"]["model"]) == (provider, depiction, model)
        # the JSON record carries its address, and following it comes back to the same record
        assert data["record"]["address"] == record_address("/awkward", provider, depiction, model)
        again = fetch(ds_, data["record"]["address"])
        assert again.headers["location"] == f"/awkward/-/gallery/{expected}"
    path, _, query = record_address("/awkward", provider, depiction, "n/2").partition("?")
    r = fetch(ds_, f"{path}.json?{query}&k=3")
    assert r.status_code == 302 and r.headers["location"] == f"/awkward/-/gallery/{_id(awkward_db, provider, depiction, 'n/2')}.json?k=3"


def test_percent_encoded_addresses_from_clients_work_too(awkward_db):
    ds_ = Datasette([str(awkward_db)])
    r = fetch(ds_, "/awkward/-/record/met/100%25+~7Etilde~7E+~2Bplus~2B+space+here?model=m")
    assert r.status_code == 302


def test_without_a_model_the_image_record_is_chosen(ds, museum_db):
    r = fetch(ds, "/museum/-/record/rijksmuseum/SK-C-5")
    assert r.headers["location"] == f"/museum/-/gallery/{rid(museum_db, 'rijksmuseum', 'SK-C-5', IMAGE_MODEL)}"
    r = fetch(ds, f"/museum/-/record/rijksmuseum/SK-C-5?model={FAKE_TEXT_MODEL}")
    assert r.headers["location"] == f"/museum/-/gallery/{rid(museum_db, 'rijksmuseum', 'SK-C-5', FAKE_TEXT_MODEL)}"


def test_gallery_and_search_json_records_carry_their_address(ds):
    for url in ["/museum/-/gallery.json?size=3", "/museum/-/search.json?q=night+watch&k=3"]:
        data = fetch(ds, url).json()
        items = data.get("items") or data["results"]
        assert items and all(c["address"].startswith("/museum/-/record/") and "model=" in c["address"] for c in items)


@pytest.mark.parametrize("path, status, message", [
    ("/museum/-/record/rijksmuseum/nothing-here", 404, "no record with provider 'rijksmuseum' and depiction_id 'nothing-here'"),
    ("/museum/-/record/rijksmuseum/SK-C-5?model=nope", 404, "has no record under model 'nope'"),
    ("/nowhere/-/record/a/b", 404, "no database"),
])
def test_unknown_addresses_are_404_with_a_reason(ds, path, status, message):
    base, _, query = path.partition("?")
    r = fetch(ds, f"{base}.json" + (f"?{query}" if query else ""))
    assert r.status_code == status and message in r.json()["error"]
    assert fetch(ds, path).status_code == status
