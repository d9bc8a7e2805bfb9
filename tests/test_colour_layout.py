import io

import llm
import numpy as np
import pytest
from PIL import Image

from datasette_embeddings.embedding import colour_layout
from datasette_embeddings.embedding import runtime as models
RIJKS_PRINTS = ("RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487")


@pytest.fixture(scope="module")
def image_vectors():
    """The built-in model's vectors for all six real images, through the llm registry."""
    from tests.conftest import TEST_DATA

    folder = TEST_DATA / "images"
    paths = sorted(folder.glob("*.jpg"))
    vectors = np.stack([models.embed_image("colour-layout-v1", p.read_bytes()) for p in paths])
    return [p.stem for p in paths], vectors


def nearest(names, vectors, query):
    similarities = vectors @ query
    return [names[i] for i in np.argsort(-similarities)]


def test_registered_through_llm_entry_point():
    model = llm.get_embedding_model("colour-layout-v1")
    assert model.supports_binary and not model.supports_text
    assert not models.supports_text("colour-layout-v1")
    assert models.supports_images("colour-layout-v1")


def test_unit_length_float32_of_fixed_size(image_vectors):
    _names, vectors = image_vectors
    assert vectors.dtype == np.float32
    assert vectors.shape == (6, colour_layout.DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_deterministic(data_dir):
    data = (data_dir / "images" / "DP159891.jpg").read_bytes()
    first = llm.get_embedding_model("colour-layout-v1").embed(data)
    second = llm.get_embedding_model("colour-layout-v1").embed(data)  # a fresh model object
    assert first == second


def test_rijksmuseum_prints_are_each_others_nearest_neighbours(image_vectors):
    names, vectors = image_vectors
    similarity = vectors @ vectors.T
    for name in RIJKS_PRINTS:
        i = names.index(name)
        others = [n for n in nearest(names, vectors, vectors[i]) if n != name]
        assert set(others[:2]) == set(RIJKS_PRINTS) - {name}, (name, others[:3])
        # by a clear margin, not a coin toss
        worst_print = min(similarity[i, names.index(p)] for p in RIJKS_PRINTS if p != name)
        best_other = max(similarity[i, j] for j, n in enumerate(names) if n not in RIJKS_PRINTS)
        assert worst_print - best_other > 0.2


def test_a_recompressed_cropped_copy_still_finds_the_prints(image_vectors, data_dir):
    names, vectors = image_vectors
    original = Image.open(data_dir / "images" / "RP-P-1906-1486.jpg").convert("RGB")
    w, h = original.size
    copy = original.crop((w // 25, h // 25, w - w // 30, h - h // 30)).resize((w // 2, h // 2))
    out = io.BytesIO()
    copy.save(out, format="JPEG", quality=40)
    query = models.embed_image("colour-layout-v1", out.getvalue())
    assert set(nearest(names, vectors, query)[:3]) == set(RIJKS_PRINTS)


def test_colour_and_layout_both_matter():
    def vector(image):
        out = io.BytesIO()
        image.save(out, format="PNG")
        return models.embed_image("colour-layout-v1", out.getvalue())

    left_red = Image.new("RGB", (60, 60), (0, 0, 200))
    left_red.paste((220, 0, 0), (0, 0, 30, 60))
    right_red = left_red.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # same colours, mirrored layout
    green = Image.new("RGB", (60, 60), (0, 0, 200))
    green.paste((0, 200, 0), (0, 0, 30, 60))  # same layout, another colour
    a, b, c = vector(left_red), vector(right_red), vector(green)
    assert float(a @ b) < 0.95  # layout moved
    assert float(a @ c) < 0.95  # colour changed
    assert float(a @ a) == pytest.approx(1.0, abs=1e-6)
