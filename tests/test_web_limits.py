"""Plugin pages answer like Datasette to other methods, and stay small whatever the query string
or the number of providers (issue 12, item 12)."""
import asyncio

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasette_embeddings.files import loader
from datasette_embeddings.files.parquet_io import CANONICAL_SCHEMA
from datasette_embeddings.web import gallery
from tests.helpers import make_records, write_parquet

PROVIDERS = 50_000


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("methods")
    write_parquet(tmp / "s.parquet", make_records(n=10, providers=("met", "rijks")))
    loader.load(str(tmp / "small.db"), [str(tmp / "s.parquet")])
    return tmp / "small.db"


@pytest.fixture(scope="module")
def ds(small_db):
    from datasette.app import Datasette

    return Datasette([str(small_db)])


def call(ds, method, path, **kwargs):
    return asyncio.run(ds.client.request(method, path, **kwargs))


PAGES = ["/-/embeddings", "/small/-/gallery", "/small/-/gallery.json", "/small/-/gallery/1.json", "/small/-/search.json", "/small/-/clusters.json",
         "/small/-/links.json"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "BREW"])
@pytest.mark.parametrize("path", PAGES)
def test_other_methods_answer_405_like_datasette(ds, method, path):
    response = call(ds, method, path)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    if method != "BREW":  # Datasette's own pages answer the same (to an unknown method, 0.65 answers 500)
        assert call(ds, method, "/small/records.json").status_code == 405


@pytest.mark.parametrize("path", PAGES[:4])
def test_post_is_only_for_search(ds, path):
    assert call(ds, "POST", path).status_code == 405


@pytest.mark.parametrize("path", PAGES)
def test_head_and_options(ds, path):
    head = call(ds, "HEAD", path)
    assert head.status_code == call(ds, "GET", path).status_code and head.content == b""
    assert call(ds, "OPTIONS", path).status_code == 200


def test_unknown_query_parameters_are_not_echoed_into_links(ds):
    junk = "x" * 30_000  # twice (httpx refuses URLs over 64 KB; the server took 100 KB)
    page = call(ds, "GET", f"/small/-/gallery?junk={junk}&provider=met&more={junk}")
    assert page.status_code == 200
    assert junk not in page.text and len(page.text) < 60_000
    assert "provider=met" in page.text  # the page's own parameters still are
    data = call(ds, "GET", f"/small/-/gallery.json?junk={junk}&provider=met").json()
    assert all(junk not in item["url"] for items in data["facets"].values() for item in items)
    record = call(ds, "GET", f"/small/-/gallery/1.json?junk={junk}&k=3").json()
    assert junk not in record["json_url"] and "k=3" in record["json_url"]


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """50,000 providers of one record each."""
    from datasette.app import Datasette

    tmp = tmp_path_factory.mktemp("crowded")
    rng = np.random.default_rng(1)
    dims = 4
    vectors = rng.standard_normal((PROVIDERS, dims)).astype(np.float32) + 3
    table = pa.Table.from_arrays(
        [
            pa.array([f"provider-{i:05d}" for i in range(PROVIDERS)]),
            pa.array([f"d{i}" for i in range(PROVIDERS)]),
            pa.array([f"s{i}" for i in range(PROVIDERS)]),
            pa.array(["m"] * PROVIDERS),
            pa.ListArray.from_arrays(pa.array(np.arange(0, (PROVIDERS + 1) * dims, dims, dtype=np.int32)),
                                     pa.array(vectors.ravel())).cast(CANONICAL_SCHEMA.field("embeddings").type),
            pa.array(np.full(PROVIDERS, 1_700_000_000, dtype=np.int64)),
            pa.array([[("type", "image")]] * PROVIDERS, CANONICAL_SCHEMA.field("attributes").type),
        ],
        schema=CANONICAL_SCHEMA,
    )
    pq.write_table(table, str(tmp / "c.parquet"))
    loader.load(str(tmp / "crowded.db"), [str(tmp / "c.parquet")])
    return Datasette([str(tmp / "crowded.db")])


def test_fifty_thousand_providers_make_a_small_gallery_page(crowded):
    page = call(crowded, "GET", "/crowded/-/gallery")
    assert page.status_code == 200 and len(page.text) < 200_000  # was 5.7 MB
    assert "49,970 more" in page.text
    data = call(crowded, "GET", "/crowded/-/gallery.json").json()
    assert len(data["facets"]["provider"]) == gallery.DEFAULT_FACET_SIZE
    assert data["facets_more"]["provider"]["hidden"] == PROVIDERS - gallery.DEFAULT_FACET_SIZE
    more = call(crowded, "GET", data["facets_more"]["provider"]["url"].replace("/-/gallery?", "/-/gallery.json?")).json()
    assert len(more["facets"]["provider"]) == gallery.DEFAULT_FACET_SIZE * 10


def test_a_chosen_provider_is_always_listed(crowded):
    data = call(crowded, "GET", "/crowded/-/gallery.json?provider=provider-49999").json()
    assert any(item["value"] == "provider-49999" and item["selected"] for item in data["facets"]["provider"])


def test_record_and_search_pages_list_a_bounded_number_of_providers(crowded):
    record = call(crowded, "GET", "/crowded/-/gallery/1.json?k=3")
    assert record.status_code == 200 and len(record.text) < 50_000
    assert record.json()["providers_total"] == PROVIDERS and len(record.json()["providers"]) <= gallery.DEFAULT_FACET_SIZE
    html = call(crowded, "GET", "/crowded/-/gallery/1?k=3")
    assert html.status_code == 200 and len(html.text) < 100_000 and "49,9" in html.text
    search = call(crowded, "GET", "/crowded/-/search")
    assert search.status_code == 200 and len(search.text) < 100_000
