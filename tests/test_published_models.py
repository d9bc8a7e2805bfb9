"""The published-model adapters, run offline on tiny random-weight checkpoints of each architecture.

tests/tiny_models.py stages SigLIP, SigLIP 2 (fixed resolution and NaFlex), an OpenCLIP
checkpoint in transformers format and DINOv2 under their real repository names in the
test's Hugging Face cache; everything else is the real code path: llm's registry, the
adapters, transformers, SQL functions, vec0 and the search page.
"""
import csv
import functools
import http.server
import os
import shutil
import threading

import llm
import numpy as np
import pytest
from click.testing import CliRunner
from datasette.app import Datasette

from datasette_embeddings import cli
from datasette_embeddings.embedding import adapters, model_check
from datasette_embeddings.embedding import runtime
from datasette_embeddings.embedding.adapters import catalogue, transformers_models
from datasette_embeddings.config import EmbeddingConfig, PluginConfig
from datasette_embeddings.embedding import resolver
from datasette_embeddings.errors import EmbeddingError
from datasette_embeddings.files import harvest, loader
from datasette_embeddings.sql import functions as sql_functions
from datasette_embeddings.storage.connection import connect
from tests import tiny_models
from tests.conftest import TEST_DATA

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

CONTRASTIVE = [tiny_models.SIGLIP, tiny_models.SIGLIP2, tiny_models.NAFLEX, tiny_models.OPENCLIP]
IMAGES = TEST_DATA / "images"


@pytest.fixture(scope="module")
def staged():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    return tiny_models.stage_all(os.environ["HF_HOME"])


@pytest.fixture(scope="module")
def images():
    return IMAGES


def image_bytes(name: str = "SK-C-5.jpg") -> bytes:
    return (IMAGES / name).read_bytes()


# ---------------------------------------------------------------- labels

def test_publisher_spellings_and_short_aliases_reach_one_model():
    assert llm.get_embedding_model("apple/MobileCLIP-S1").model_id == "apple/mobileclip_s1"
    assert llm.get_embedding_model("mobileclip-s2").model_id == "apple/mobileclip_s2"
    assert llm.get_embedding_model("siglip2-so400m-naflex").model_id == "google/siglip2-so400m-patch16-naflex"
    assert llm.get_embedding_model("ViT-g-14/laion2b_s34b_b88k").model_id == "laion/CLIP-ViT-g-14-laion2B-s34B-b88K"
    assert runtime.get_model("apple/MobileCLIP-S1") is runtime.get_model("apple/mobileclip_s1")
    assert catalogue.find("APPLE/MOBILECLIP_S1").label == "apple/mobileclip_s1"
    # the checkpoint's repository name answers too
    assert llm.get_embedding_model("apple/MobileCLIP-S1-OpenCLIP").model_id == "apple/mobileclip_s1"


def test_every_label_and_alias_is_unique():
    names = [n for model, aliases in adapters.embedding_models() for n in (model.model_id, *aliases)]
    assert len(names) == len(set(names))


def test_a_stored_label_needs_no_mapping_but_metadata_still_wins():
    label = "google/siglip2-so400m-patch14-384"
    assert resolver.query_model_id(EmbeddingConfig(), label, stored=True) == label
    config = EmbeddingConfig(models={label: "colour-layout-v1"})
    assert resolver.query_model_id(config, label, stored=True) == "colour-layout-v1"


# ---------------------------------------------------------------- vectors

@pytest.mark.parametrize("label", CONTRASTIVE)
def test_text_and_image_vectors_have_the_same_length_and_unit_norm(staged, images, label):
    text = runtime.embed_text(label, "a ship at sea in a storm")
    image = runtime.embed_image(label, image_bytes())
    assert text.shape == image.shape and text.size > 0
    assert np.linalg.norm(text) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(image) == pytest.approx(1.0, abs=1e-5)
    # a different image gives a different vector: the pixels reach the model
    other = runtime.embed_image(label, image_bytes("DP259541.jpg"))
    assert not np.allclose(image, other, atol=1e-4)


def test_dinov2_embeds_images_and_refuses_text(staged, images):
    image = runtime.embed_image(tiny_models.DINOV2, image_bytes())
    assert np.linalg.norm(image) == pytest.approx(1.0, abs=1e-5)
    assert not runtime.supports_text(tiny_models.DINOV2)
    with pytest.raises(EmbeddingError, match="cannot embed text"):
        runtime.embed_text(tiny_models.DINOV2, "a ship")
    with pytest.raises(EmbeddingError, match="images only"):
        list(runtime.get_model(tiny_models.DINOV2).embed_batch(["a ship"]))


def test_siglip_texts_are_padded_to_64_tokens(staged):
    """SigLIP pools the last position: its vectors depend on padding to exactly 64 tokens."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(tiny_models.SIGLIP)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_models.SIGLIP)

    def reference(**padding):
        tokens = tokenizer(["a ship at sea"], return_tensors="pt", **padding)
        with torch.inference_mode():
            out = model.get_text_features(**{k: v for k, v in tokens.items() if k in ("input_ids", "attention_mask")})
        return torch.nn.functional.normalize(out.pooler_output, dim=-1)[0].numpy()

    ours = runtime.embed_texts(tiny_models.SIGLIP, ["a ship at sea"])[0]
    np.testing.assert_allclose(ours, reference(padding="max_length", max_length=64), atol=1e-5)
    assert not np.allclose(ours, reference(padding=True), atol=1e-3)
    assert transformers_models.SIGLIP_TEXT_LENGTH == 64


def test_naflex_keeps_the_aspect_ratio_in_its_patches(staged, images):
    """NaFlex's image processor (the checkpoint's own) patches a wide image into a wide grid."""
    model = runtime.get_model(tiny_models.NAFLEX)
    _, image_processor, _ = model.load()
    from PIL import Image

    wide = image_processor(images=[Image.new("RGB", (400, 100))], return_tensors="pt")
    rows, columns = wide["spatial_shapes"][0].tolist()
    assert columns > rows and rows * columns <= 16
    assert int(wide["pixel_attention_mask"][0].sum()) == rows * columns


# ---------------------------------------------------------------- weights

def test_a_missing_checkpoint_offline_is_a_clear_error_naming_it():
    with pytest.raises(EmbeddingError) as caught:
        runtime.embed_text("google/siglip2-so400m-patch16-naflex", "a ship")
    message = str(caught.value)
    assert "google/siglip2-so400m-patch16-naflex" in message and "HF_HUB_OFFLINE" in message
    assert "hf download" in message and "MB" in message


def test_availability_is_known_without_loading(staged):
    """Pages ask before offering search: a checkpoint missing offline, or MobileCLIP-S0, is not available."""
    assert runtime.is_available(tiny_models.NAFLEX)
    assert not runtime.is_available("google/siglip2-so400m-patch16-naflex")  # not in the cache
    assert not runtime.is_available("apple/mobileclip_s0")
    assert not runtime.get_model("google/siglip2-so400m-patch16-naflex").load.loaded


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, monkeypatch, staged):
    hf_home = tmp_path / "hf"
    snapshot = tiny_models.stage(tiny_models.DINOV2, str(hf_home))
    weights = snapshot / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    spec = catalogue.find(tiny_models.DINOV2)
    model = transformers_models.TransformersModel(spec)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    with pytest.raises(EmbeddingError, match="could not be loaded") as caught:
        model.embed(image_bytes())
    assert tiny_models.DINOV2 in str(caught.value)


def test_mobileclip_s0_says_why_it_cannot_run():
    with pytest.raises(EmbeddingError, match="MobileCLIP-S0.*open_clip"):
        runtime.embed_text("apple/mobileclip_s0", "a ship")


def test_mobileclip_without_open_clip_says_what_to_install():
    try:
        import open_clip  # noqa: F401
        pytest.skip("open_clip is importable here")
    except Exception:
        pass
    with pytest.raises(EmbeddingError, match=r"open_clip.*torchvision.*\[mobileclip\]"):
        runtime.embed_text("apple/MobileCLIP-S1", "a ship")


def test_building_the_model_objects_loads_no_weights():
    for model, aliases in adapters.embedding_models():
        assert not model.load.loaded


# ---------------------------------------------------------------- the whole path

@pytest.fixture(scope="module")
def preview_server(images):
    """A local http.server serving the shared images (the records' preview URLs)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(images))

    class Quiet(handler.func):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(images)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def published_db(staged, images, preview_server, tmp_path_factory):
    """The shared images embedded by NaFlex and DINOv2 under their labels, with preview URLs, loaded."""
    folder = tmp_path_factory.mktemp("published")
    manifest = folder / "manifest.csv"
    names = sorted(p.name for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with open(manifest, "w", newline="") as fp:
        writer = csv.writer(fp)
        writer.writerow(["image", "provider", "subject_title", "preview"])
        for name in names:
            shutil.copy(images / name, folder / name)
            writer.writerow([name, "shared", name, f"{preview_server}/{name}"])
    files = []
    for label in (tiny_models.NAFLEX, tiny_models.DINOV2):
        parquet = folder / (label.replace("/", "_") + ".parquet")
        report = harvest.embed_to_parquet(str(manifest), str(parquet), model_id=label, label=label)
        assert report.written == len(names)
        files.append(str(parquet))
    db = folder / "published.db"
    loader.load(str(db), files)
    return db


def vec_table(db, label: str) -> str:
    conn = connect(str(db))
    try:
        return conn.execute("select vec_table from models where label = ?", [label]).fetchone()[0]
    finally:
        conn.close()


def test_embed_text_and_embed_image_in_sql_feed_a_vec0_knn(published_db):
    conn = connect(str(published_db))
    sql_functions.register_functions(conn, PluginConfig())
    table = vec_table(published_db, tiny_models.NAFLEX)
    # as a server does at startup: SQL functions never load weights, the loader thread does
    runtime.load_in_background([tiny_models.NAFLEX])
    assert runtime.wait_for_loads([tiny_models.NAFLEX], timeout=300)
    rows = conn.execute(
        f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
        f"where v.embedding match embed_image('{tiny_models.NAFLEX}', ?) and k = 3 order by v.distance",
        [image_bytes("DP259541.jpg")],
    ).fetchall()
    assert rows[0][0] == "DP259541" and rows[0][1] == pytest.approx(0.0, abs=1e-3)
    rows = conn.execute(
        f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
        f"where v.embedding match embed_text('{tiny_models.NAFLEX}', 'a ship at sea') and k = 5",
    ).fetchall()
    assert len(rows) == 5 and [r[1] for r in rows] == sorted(r[1] for r in rows)
    with pytest.raises(Exception, match="cannot embed text"):
        conn.execute(f"select embed_text('{tiny_models.DINOV2}', 'a ship')").fetchone()
    conn.close()


def test_search_page_by_text_and_by_image(published_db):
    from tests.gallery_fixtures import fetch, upload

    ds = Datasette([str(published_db)])
    data = fetch(ds, "/published/-/search.json", params={"q": "a ship at sea", "model": tiny_models.NAFLEX}).json()
    assert data["query"]["model"] == tiny_models.NAFLEX
    assert len(data["results"]) > 0
    response = upload(ds, image_bytes("DP259541.jpg"), {"model": tiny_models.DINOV2, "k": "3"}, path="/published/-/search.json")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["depiction_id"] == "DP259541"
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    # an image-only model cannot search by meaning (without mode=vector, words are searched instead)
    refused = fetch(ds, "/published/-/search.json", params={"q": "a ship", "model": tiny_models.DINOV2, "mode": "vector"})
    assert refused.status_code == 400 and "text" in refused.text


# ---------------------------------------------------------------- check-model

def test_check_model_from_preview_urls_reports_cosine_one(published_db):
    result = CliRunner().invoke(cli.cli, ["check-model", str(published_db), tiny_models.NAFLEX, "--sample", "4"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    cosines = [float(line.split("\t")[1]) for line in lines if "\t" in line]
    assert len(cosines) == 4 and min(cosines) > 0.999
    assert lines[-1] == "PASS"


def test_check_model_from_a_local_folder_as_json(published_db, images):
    # an alias of the stored label's model finds it
    result = CliRunner().invoke(
        cli.cli, ["check-model", str(published_db), "dinov2-small", "--images", str(images), "--sample", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output)
    assert report["label"] == tiny_models.DINOV2
    assert report["compared"] == 3 and report["passed"] and report["min"] > 0.999
    assert all(os.path.dirname(i["source"]) == str(images) for i in report["images"])


def test_check_model_with_the_wrong_model_fails(published_db):
    """Vectors made by NaFlex, checked with DINOv2's tiny model of the same length: far from 1, exit 1."""
    result = CliRunner().invoke(
        cli.cli, ["check-model", str(published_db), tiny_models.NAFLEX, "--llm-model", tiny_models.DINOV2, "--sample", "3"]
    )
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_check_model_reports_a_dead_preview_link_and_goes_on(published_db):
    calls = []

    def fetch(url):
        calls.append(url)
        if len(calls) == 1:
            raise OSError("connection refused")
        return model_check.fetch_image(url)

    report = model_check.check_model(str(published_db), tiny_models.NAFLEX, sample=3, fetch=fetch)
    assert len(report.comparisons) == 3
    assert "connection refused" in report.comparisons[0].error
    assert len(report.cosines) == 2 and report.passed


def test_check_model_refuses_a_preview_that_is_not_http():
    with pytest.raises(ValueError, match="http"):
        model_check.fetch_image("file:///etc/passwd")


def test_check_model_names_a_label_no_model_answers_to(small_parquet, tmp_path):
    db = tmp_path / "small.db"
    loader.load(str(db), [str(small_parquet)])
    result = CliRunner().invoke(cli.cli, ["check-model", str(db), "m-8"])
    assert result.exit_code == 1
    assert "no embedding model answers to 'm-8'" in result.output and "--llm-model" in result.output
    result = CliRunner().invoke(cli.cli, ["check-model", str(db), "nope"])
    assert result.exit_code == 1 and "m-4, m-8" in result.output
