"""MobileCLIP and MobileCLIP2 through open_clip + timm, offline, on random-weight checkpoints.

These need open_clip, timm and a torchvision built for the installed torch, which the
main virtualenv cannot have (PyPI's torchvision does not import beside the CPU torch
2.13); ``make test-vision`` runs them in a second virtualenv with a matching pair
(torch 2.14.1 + torchvision 0.29.1), and ``make test`` runs that lane after the main suite.

The setup builds each architecture with open_clip's own configuration and random
weights, and writes its state dict as ``open_clip_model.safetensors`` into the test's
Hugging Face cache under the repository open_clip's pretrained table names
(``apple/MobileCLIP-S1-OpenCLIP``...), so the adapter's real path runs: open_clip
resolves the pretrained tag, finds the weights offline in the hub layout, loads them
strictly and returns the tag's published preprocessing.  Everything after is the
real code too: llm's registry, SQL functions, vec0 and the search page.
"""
import csv
import gc
import importlib.util
import io
import os
import pathlib
import shutil

import llm
import numpy as np
import pytest
from datasette.app import Datasette

from datasette_embeddings.config import PluginConfig
from datasette_embeddings.embedding import runtime
from datasette_embeddings.embedding.adapters import catalogue, checkpoints, open_clip_models
from datasette_embeddings.errors import EmbeddingError
from datasette_embeddings.files import harvest, loader
from datasette_embeddings.sql import functions as sql_functions
from datasette_embeddings.storage.connection import connect
from tests.conftest import TEST_DATA


def _vision_stack_error() -> str | None:
    """Why open_clip cannot run here (None when it can); found without importing when a package is absent."""
    for name in ("torch", "torchvision", "timm", "open_clip"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed"
    try:
        import open_clip  # noqa: F401  (imports torchvision and timm)
    except Exception as ex:  # torchvision's extension built for another torch fails with RuntimeError
        return f"open_clip does not import ({type(ex).__name__}: {ex})"
    return None


_WHY_NOT = _vision_stack_error()
if _WHY_NOT and os.environ.get("DATASETTE_EMBEDDINGS_VISION_LANE") == "1":
    # `make test-vision` sets this: in the virtualenv made for the lane, a skip would hide a broken install
    raise RuntimeError(f"the MobileCLIP lane's virtualenv cannot run open_clip: {_WHY_NOT}")
if _WHY_NOT:
    pytest.skip(
        f"MobileCLIP lane skipped: {_WHY_NOT}; run `make test-vision` (a virtualenv with a matching "
        "torch + torchvision, open_clip and timm)",
        allow_module_level=True,
    )

import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.vision

IMAGES = TEST_DATA / "images"
REVISION = "0" * 39 + "3"
#: the variants staged: MobileCLIP v1 at both resolutions, and a MobileCLIP2
STAGED = ["apple/mobileclip_s1", "apple/mobileclip_s2", "apple/mobileclip_b", "apple/mobileclip2_s0"]
MOBILECLIP_SPECS = [s for s in catalogue.SPECS if s.family == catalogue.MOBILECLIP]


def image_bytes(name: str = "SK-C-5.jpg") -> bytes:
    return (IMAGES / name).read_bytes()


def weights_path(spec: catalogue.ModelSpec, hf_home: str) -> pathlib.Path:
    """Where the hub cache keeps ``spec``'s weights, with the repository's ``main`` pointing at that snapshot."""
    repo = pathlib.Path(hf_home) / "hub" / ("models--" + spec.checkpoint.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION, encoding="utf-8")
    (repo / "snapshots" / REVISION).mkdir(parents=True, exist_ok=True)
    return repo / "snapshots" / REVISION / "open_clip_model.safetensors"


def stage(spec: catalogue.ModelSpec, hf_home: str) -> pathlib.Path:
    """A random-weight ``spec`` in open_clip's hub layout under its repository name in ``hf_home``."""
    from safetensors.torch import save_file

    weights = weights_path(spec, hf_home)
    if not weights.exists():
        torch.manual_seed(sum(map(ord, spec.label)))
        model = open_clip.create_model(spec.open_clip_name, pretrained=None)
        # FastViT's layer scales start at 1e-5 (so training starts near identity): with random
        # weights every picture would then give nearly the same vector (cosine 0.9999 between any
        # two).  At 1 the blocks pass the pixels on and the test images are told apart.
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "layer_scale" in name or name.endswith("gamma"):
                    parameter.fill_(1.0)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        del model
        gc.collect()
    return weights


@pytest.fixture(scope="module")
def staged():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    weights = {label: stage(catalogue.find(label), os.environ["HF_HOME"]) for label in STAGED}
    yield weights
    for path in weights.values():  # 1.6 GB of random weights: not left behind in /tmp
        shutil.rmtree(path.parents[2], ignore_errors=True)


def reference(spec: catalogue.ModelSpec, picture: bytes, text: str) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own pipeline, as its README runs a pretrained model: no adapter, no reparameterisation."""
    model, _, preprocess = open_clip.create_model_and_transforms(spec.open_clip_name, pretrained=spec.open_clip_pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.open_clip_name)
    with torch.inference_mode():
        image = model.encode_image(preprocess(Image.open(io.BytesIO(picture)).convert("RGB")).unsqueeze(0), normalize=True)
        words = model.encode_text(tokenizer([text]), normalize=True)
    del model
    gc.collect()
    return image[0].numpy(), words[0].numpy()


# ---------------------------------------------------------------- what open_clip has

@pytest.mark.parametrize("spec", MOBILECLIP_SPECS, ids=lambda s: s.label)
def test_every_registered_variant_matches_open_clips_tables(spec):
    """The catalogue's repository, width and tag are open_clip's own (S0 excepted: open_clip has no S0)."""
    if spec.unavailable:
        assert "MobileCLIP-S0" in spec.unavailable
        assert not any(m.lower() == "mobileclip-s0" for m in open_clip.list_models())
        return
    assert spec.open_clip_name in open_clip.list_models()
    cfg = open_clip.get_pretrained_cfg(spec.open_clip_name, spec.open_clip_pretrained)
    assert cfg["hf_hub"].rstrip("/") == spec.checkpoint
    assert open_clip.get_model_config(spec.open_clip_name)["embed_dim"] == spec.dimensions


def test_the_publishers_spellings_reach_one_model():
    assert llm.get_embedding_model("apple/MobileCLIP-S1").model_id == "apple/mobileclip_s1"
    assert llm.get_embedding_model("mobileclip-s2").model_id == "apple/mobileclip_s2"
    assert llm.get_embedding_model("apple/MobileCLIP2-S0").model_id == "apple/mobileclip2_s0"
    assert llm.get_embedding_model("timm/MobileCLIP2-S0-OpenCLIP").model_id == "apple/mobileclip2_s0"
    assert runtime.get_model("apple/MobileCLIP-S1") is runtime.get_model("apple/mobileclip_s1")


# ---------------------------------------------------------------- vectors and preprocessing

@pytest.mark.parametrize("label", STAGED)
def test_vectors_are_open_clips_own_and_text_and_image_share_a_length(staged, label):
    spec = catalogue.find(label)
    picture = runtime.prepare_image(image_bytes())  # what the runtime hands a model
    text = "a ship at sea in a storm"
    image = runtime.embed_image(label, image_bytes())
    words = runtime.embed_text(label, text)
    assert image.shape == words.shape == (spec.dimensions,)
    assert np.linalg.norm(image) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(words) == pytest.approx(1.0, abs=1e-5)
    # the same vectors as open_clip's reference pipeline (the reparameterised towers agree with it)
    ref_image, ref_words = reference(spec, picture, text)
    np.testing.assert_allclose(image, ref_image, atol=2e-4)
    np.testing.assert_allclose(words, ref_words, atol=2e-4)
    # the pixels reach the model: another picture gives another vector (random MobileCLIP2-S0 keeps
    # pictures closest together, cosine 0.9995; S1, used for the searches below, about 0.8)
    assert float(image @ runtime.embed_image(label, image_bytes("DP259541.jpg"))) < 0.9999


@pytest.mark.parametrize("label, side", [
    ("apple/mobileclip_s1", 256), ("apple/mobileclip_s2", 256), ("apple/mobileclip_b", 224), ("apple/mobileclip2_s0", 256),
])
def test_preprocessing_is_the_published_one(staged, label, side):
    """Shortest side to ``side`` (bilinear), centre crop, 0-1 pixels, no mean/std: computed here with Pillow alone."""
    _, preprocess, _ = runtime.get_model(label).load()
    picture = Image.open(IMAGES / "SK-C-5.jpg").convert("RGB")  # landscape, 1000x814
    width, height = picture.size
    short, long = min(width, height), max(width, height)
    resized_long = int(side * long / short)
    size = (resized_long, side) if width >= height else (side, resized_long)
    resized = picture.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - side) / 2.0)), int(round((size[1] - side) / 2.0))
    cropped = resized.crop((left, top, left + side, top + side))
    expected = np.asarray(cropped, dtype=np.float32).transpose(2, 0, 1) / 255.0
    ours = preprocess(picture).numpy()
    assert ours.shape == (3, side, side)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


# ---------------------------------------------------------------- weights

def test_a_missing_checkpoint_offline_is_a_clear_error_naming_it(staged):
    label = "apple/mobileclip2_s4"  # registered, never staged
    assert runtime.is_available("apple/mobileclip_s1")
    assert not runtime.is_available(label)
    with pytest.raises(EmbeddingError) as caught:
        runtime.embed_text(label, "a ship")
    message = str(caught.value)
    assert "timm/MobileCLIP2-S4-OpenCLIP" in message and "HF_HUB_OFFLINE" in message and "hf download" in message
    assert not runtime.get_model(label).load.loaded


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    spec = catalogue.find("apple/mobileclip_s1")
    hf_home = tmp_path / "hf"
    weights_path(spec, str(hf_home)).write_bytes(b"not a safetensors file")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    model = open_clip_models.OpenClipModel(spec)
    with pytest.raises(EmbeddingError, match="could not be loaded") as caught:
        model.embed("a ship")
    assert spec.checkpoint in str(caught.value)
    assert not model.load.loaded


def test_mobileclip_s0_is_refused_saying_why():
    assert not runtime.is_available("apple/mobileclip_s0")
    with pytest.raises(EmbeddingError, match=r"MobileCLIP-S0.*open_clip.*#958"):
        runtime.embed_image("apple/mobileclip_s0", image_bytes())


# ---------------------------------------------------------------- the whole path

@pytest.fixture(scope="module")
def mobileclip_db(staged, tmp_path_factory):
    """The shared images embedded by MobileCLIP-S1 under SFO Museum's label, loaded into a database."""
    folder = tmp_path_factory.mktemp("mobileclip")
    manifest = folder / "manifest.csv"
    names = sorted(p.name for p in IMAGES.iterdir() if p.suffix.lower() == ".jpg")
    with open(manifest, "w", newline="") as fp:
        writer = csv.writer(fp)
        writer.writerow(["image", "provider", "subject_title"])
        for name in names:
            shutil.copy(IMAGES / name, folder / name)
            writer.writerow([name, "shared", name])
    parquet = folder / "mobileclip_s1.parquet"
    report = harvest.embed_to_parquet(str(manifest), str(parquet), model_id="apple/mobileclip_s1", label="apple/mobileclip_s1")
    assert report.written == len(names)
    db = folder / "mobileclip.db"
    loader.load(str(db), [str(parquet)])
    # as a server does at startup: requests and SQL functions never load weights, the loader thread does
    runtime.load_in_background(["apple/mobileclip_s1"])
    assert runtime.wait_for_loads(["apple/mobileclip_s1"], timeout=300)
    assert runtime.load_state("apple/mobileclip_s1")["state"] == "ready"
    return db


def test_embed_text_and_embed_image_in_sql_feed_a_vec0_knn(mobileclip_db):
    conn = connect(str(mobileclip_db))
    try:
        sql_functions.register_functions(conn, PluginConfig())
        table = conn.execute("select vec_table from models where label = 'apple/mobileclip_s1'").fetchone()[0]
        rows = conn.execute(
            f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
            "where v.embedding match embed_image('apple/mobileclip_s1', ?) and k = 3 order by v.distance",
            [image_bytes("DP259541.jpg")],
        ).fetchall()
        assert rows[0][0] == "DP259541" and rows[0][1] == pytest.approx(0.0, abs=1e-3)
        assert len(rows) == 3 and rows[1][1] > 1e-3
        rows = conn.execute(
            f"select r.depiction_id, v.distance from {table} v join records r on r.id = v.id "
            "where v.embedding match embed_text('apple/mobileclip_s1', 'a ship at sea') and k = 5",
        ).fetchall()
        assert len(rows) == 5 and [r[1] for r in rows] == sorted(r[1] for r in rows)
    finally:
        conn.close()


def test_search_page_by_text_and_by_image(mobileclip_db):
    from tests.gallery_fixtures import fetch, upload

    ds = Datasette([str(mobileclip_db)])
    data = fetch(ds, "/mobileclip/-/search.json", params={"q": "a ship at sea", "model": "apple/mobileclip_s1", "mode": "vector"}).json()
    assert data["query"]["model"] == "apple/mobileclip_s1"
    assert len(data["results"]) > 0
    response = upload(ds, image_bytes("DP259541.jpg"), {"model": "apple/mobileclip_s1", "k": "3"}, path="/mobileclip/-/search.json")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["depiction_id"] == "DP259541"
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-3)


def test_check_model_on_the_mobileclip_file_passes(mobileclip_db):
    """The publisher's check: stored MobileCLIP-S1 vectors re-made from the images agree (cosine > 0.999)."""
    import json

    from click.testing import CliRunner

    from datasette_embeddings import cli

    result = CliRunner().invoke(
        cli.cli, ["check-model", str(mobileclip_db), "apple/MobileCLIP-S1", "--images", str(IMAGES), "--sample", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["label"] == "apple/mobileclip_s1"
    assert report["compared"] == 4 and report["passed"] and report["min"] > 0.999
