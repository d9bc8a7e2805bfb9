"""A small real museum database for the web tests, built from real Parquet.

* ``colour-layout-v1`` (the package's real built-in image model, through llm) embeds
  the six real CC0 collection images in ``tests/data/images``;
* ``fake-words-8`` is a FAKE llm text embedding model registered for tests only
  (bag of hashed words, 8 dimensions): titles that share words are close, so text
  search has a knowable answer;
* hostile records: a ``javascript:`` preview, a ``data:`` preview, ``<script>`` in
  titles and credit lines, non-http subject and provider URLs;
* one text record (type=text), shown as its text.
"""
from __future__ import annotations

import csv
import hashlib
import pathlib
import re

import llm
import numpy as np

from datasette_embeddings.files import loader
from datasette_embeddings.embedding import runtime as models
from tests.helpers import write_parquet

IMAGES = pathlib.Path(__file__).resolve().parent / "data" / "images"
FAKE_TEXT_MODEL = "fake-words-8"
IMAGE_MODEL = "colour-layout-v1"
EVIL_TITLE = "<script>alert('title')</script>Evil"
EVIL_PREVIEW = "javascript:alert(1)"
DATA_PREVIEW = "data:text/html,<script>alert(3)</script>"
EVIL_DEPICTION = "evil-1"
CREATED = 1_700_000_000


def fake_words_vector(text: str) -> np.ndarray:
    """FAKE embedding for tests: each lower-cased word adds a hashed unit direction."""
    vector = np.zeros(8, dtype=np.float64)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        vector += np.random.default_rng(seed).standard_normal(8)
    if not vector.any():
        vector[0] = 1.0
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class FakeWordsEmbedding(llm.EmbeddingModel):
    """FAKE llm embedding model for tests only (no weights, no meaning beyond shared words)."""

    model_id = FAKE_TEXT_MODEL
    supports_text = True
    supports_binary = False
    loads_weights = False  # a fake: no weights, so requests need not wait for a background load

    def embed_batch(self, items, *, key=None):
        for item in items:
            yield fake_words_vector(item).tolist()


class _FakePlugin:
    __name__ = "datasette_embeddings_tests_fake_words"

    @llm.hookimpl
    def register_embedding_models(self, register):
        register(FakeWordsEmbedding())


def register_fake_model() -> None:
    """Register the fake model with llm once per process; the models module re-reads llm."""
    if not llm.plugins.pm.has_plugin(_FakePlugin.__name__):
        llm.plugins.pm.register(_FakePlugin(), name=_FakePlugin.__name__)
    models.reset()


def manifest() -> list[dict]:
    with open(IMAGES / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _provider_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def build_records(image_base_url: str = "https://images.example.org/", test_records: bool = True) -> list[dict]:
    """The collection under both models; ``test_records=False`` leaves out the fake-model, text and hostile records (real images, real model only)."""
    records = []
    for row in manifest():
        provider = _provider_key(row["provider"])
        depiction = row["depiction_id"] or pathlib.Path(row["local_file"]).stem
        attributes = {
            "type": "image",
            "preview": image_base_url + row["local_file"],
            "subject_url": row["subject_url"],
            "subject_title": row["title"],
            "subject_creditline": row["creator"] or "",
            "provider_name": row["provider"],
            "provider_url": row["provider_url"],
        }
        # through the llm registry, as search uploads are: the real plugin path
        image_vector = models.embed_image(IMAGE_MODEL, (IMAGES / row["local_file"]).read_bytes())
        base = {"provider": provider, "depiction_id": depiction, "subject_id": row["subject_id"], "created": CREATED, "attributes": attributes}
        records.append({**base, "model": IMAGE_MODEL, "embeddings": image_vector})
        if test_records:
            records.append({**base, "model": FAKE_TEXT_MODEL, "embeddings": fake_words_vector(row["title"])})
    if not test_records:
        return records
    text = "Color postcard; QSL card for KW6HF (Herb Wright) at Wake Island; includes aerial photographic image of island."
    records.append({
        "provider": "sfo-museum", "depiction_id": "1846754371-description", "subject_id": "1846754371",
        "model": FAKE_TEXT_MODEL, "created": CREATED, "embeddings": fake_words_vector(text),
        "attributes": {"type": "text", "preview": text, "subject_title": "postcard: QSL card, Wake Island",
                       "subject_url": "https://collection.sfomuseum.org/objects/1846754371",
                       "provider_name": "SFO Museum"},
    })
    evil = {"type": "image", "preview": EVIL_PREVIEW, "subject_title": EVIL_TITLE,
            "subject_url": "javascript:alert(2)", "provider_url": "data:text/html,hi",
            "depiction_url": " javascript:alert(5)", "subject_creditline": "<img src=x onerror=alert(4)>",
            "provider_name": "<b>Evil</b> Museum"}
    for model, vector in ((IMAGE_MODEL, records[0]["embeddings"]), (FAKE_TEXT_MODEL, fake_words_vector("Evil Night Watch"))):
        records.append({"provider": "evil", "depiction_id": EVIL_DEPICTION, "subject_id": "evil-s",
                        "model": model, "created": CREATED, "embeddings": vector, "attributes": evil})
    records.append({"provider": "evil", "depiction_id": "evil-2", "subject_id": "evil-s2", "model": FAKE_TEXT_MODEL,
                    "created": CREATED, "embeddings": fake_words_vector("data preview"),
                    "attributes": {"type": "image", "preview": DATA_PREVIEW, "subject_title": "Data preview"}})
    return records


def build_database(
    directory: pathlib.Path, image_base_url: str = "https://images.example.org/", *, test_records: bool = True, name: str = "museum"
) -> pathlib.Path:
    """Write the records to a real Parquet file and load it with the real loader."""
    parquet = directory / f"{name}.parquet"
    write_parquet(parquet, build_records(image_base_url, test_records))
    db = directory / f"{name}.db"
    loader.load(str(db), [str(parquet)])
    return db


def record_id(db_path, provider: str, depiction_id: str, model: str) -> int:
    from datasette_embeddings.storage.connection import connect

    conn = connect(str(db_path))
    try:
        return conn.execute(
            "select id from records where provider = ? and depiction_id = ? and model = ?", [provider, depiction_id, model]
        ).fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------- fixtures and client helpers
import asyncio  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def museum_db(tmp_path_factory) -> pathlib.Path:
    register_fake_model()
    return build_database(tmp_path_factory.mktemp("museum"))


@pytest.fixture(scope="module")
def ds(museum_db):
    from datasette.app import Datasette

    return Datasette([str(museum_db)])


def fetch(ds, path: str, method: str = "get", **kwargs):
    """One request through Datasette's in-process client (the real ASGI app)."""
    return asyncio.run(getattr(ds.client, method)(path, **kwargs))


def rid(db_path, provider: str, depiction_id: str, model: str = IMAGE_MODEL) -> int:
    return record_id(db_path, provider, depiction_id, model)


def csrf(ds, path: str = "/museum/-/search") -> tuple[str, dict]:
    """The form's csrftoken and the cookie asgi-csrf set with it, as a browser would have them."""
    r = fetch(ds, path)
    token = re.search(r'name="csrftoken" value="([^"]+)"', r.text).group(1)
    return token, {"ds_csrftoken": r.cookies["ds_csrftoken"]}


def upload(ds, data: bytes, fields: dict | None = None, token: bool = True, path="/museum/-/search"):
    """POST ``data`` as the search form's image, with the form's CSRF token unless ``token`` is False."""
    form = dict(fields or {})
    cookies = {}
    if token:
        value, cookies = csrf(ds, path.split("/-/")[0] + "/-/search")  # the same database's form
        form = {"csrftoken": value, **form}
    return fetch(ds, path, "post", data=form, files={"image": ("query.jpg", data, "image/jpeg")}, cookies=cookies)
