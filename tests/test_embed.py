import csv
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datasette_embeddings.files import harvest as embed
from datasette_embeddings.embedding import runtime as models
from datasette_embeddings.cli import cli
from datasette_embeddings.storage.connection import connect
from datasette_embeddings.storage.store import Store

RIJKS = ["RP-P-1906-1485.jpg", "RP-P-1906-1486.jpg", "RP-P-1906-1487.jpg"]


@pytest.fixture
def image_folder(tmp_path, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in RIJKS + ["DP159891.jpg"]:
        shutil.copy(data_dir / "images" / name, folder / name)
    return folder


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def rows_of(path):
    return pq.read_table(str(path)).to_pylist()


def test_folder_to_parquet_to_load(tmp_path, image_folder):
    out = tmp_path / "photos.parquet"
    result = run("embed", image_folder, "--provider", "rijks", "-o", out, "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert "Wrote 4 records (model colour-layout-v1)" in result.output
    db = tmp_path / "photos.db"
    result = run("load", db, out)
    assert result.exit_code == 0, result.output
    conn = connect(str(db))
    store = Store(conn)
    (model,) = store.models()
    assert model.label == "colour-layout-v1" and model.record_count == 4
    records = [store.record(i) for i, in conn.execute("select id from records order by depiction_id")]
    assert [r["depiction_id"] for r in records] == ["DP159891", "RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487"]
    assert all(r["attributes"] == {"type": "image"} and r["provider"] == "rijks" for r in records)
    # the stored vector is exactly what the model gives for the file
    expected = models.embed_image("colour-layout-v1", (image_folder / "DP159891.jpg").read_bytes())
    np.testing.assert_allclose(store.vector(records[0]["id"]), expected, rtol=1e-6)
    assert abs(int(conn.execute("select created from records limit 1").fetchone()[0]) - __import__("time").time()) < 600
    conn.close()


def test_unreadable_images_are_named_and_skipped(tmp_path, image_folder, data_dir):
    data = (data_dir / "images" / "SK-C-5.jpg").read_bytes()
    (image_folder / "half.jpg").write_bytes(data[: len(data) // 2])
    (image_folder / "notes.png").write_text("not a picture")
    out = tmp_path / "out.parquet"
    result = run("embed", image_folder, "--provider", "p", "-o", out)
    assert result.exit_code == 0, result.output
    assert "half.jpg" in result.output and "notes.png is not an image" in result.output
    assert "skipped 2 unreadable image(s)" in result.output
    assert sorted(r["depiction_id"] for r in rows_of(out)) == ["DP159891", "RP-P-1906-1485", "RP-P-1906-1486", "RP-P-1906-1487"]


def test_strict_aborts_nonzero_and_leaves_no_file(tmp_path, image_folder):
    (image_folder / "notes.png").write_text("not a picture")
    out = tmp_path / "out.parquet"
    result = run("embed", image_folder, "--provider", "p", "-o", out, "--strict")
    assert result.exit_code != 0
    assert "notes.png is not an image" in result.output
    assert not out.exists()


def test_shared_manifest_csv_with_image_paths(tmp_path, data_dir):
    # the real manifest, with one depiction_id left empty as some museums' rows are
    folder = tmp_path / "images"
    shutil.copytree(data_dir / "images", folder)
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as fp:
        manifest = list(csv.DictReader(fp))
    for row in manifest:
        if row["local_file"] == "DP259541.jpg":
            row["depiction_id"] = ""
    with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(manifest[0]))
        writer.writeheader()
        writer.writerows(manifest)
    out = tmp_path / "manifest.parquet"
    result = run("embed", folder / "manifest.csv", "-o", out, "--created", "1700000000")
    assert result.exit_code == 0, result.output
    rows = {r["depiction_id"]: r for r in rows_of(out)}
    assert len(rows) == 6
    watch = rows["SK-C-5"]
    attributes = dict(watch["attributes"])
    assert watch["provider"] == "Rijksmuseum" and watch["created"] == 1_700_000_000
    assert attributes == {
        "type": "image",
        "subject_title": "The Night Watch",
        "subject_url": "https://www.rijksmuseum.nl/en/collection/SK-C-5",
        "provider_url": "https://www.rijksmuseum.nl",
    }
    # rows with an empty depiction_id fall back to the file name
    assert rows["DP259541"]["subject_id"] == "37854"


@pytest.fixture
def fake_text_model():
    from tests.fake_model import FakeCountingModel, registered

    fake = FakeCountingModel("fake-embed-text-model")
    with registered(fake):
        yield fake


def test_csv_texts_with_sentences(tmp_path, fake_text_model):
    manifest = tmp_path / "texts.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["provider", "depiction_id", "subject_id", "text", "subject_title", "subject_url"])
        writer.writerow(["brooklyn", "1405-d", "1405", "A vase made ca. 1884 by Union Porcelain Works. It shows Mr. J. Smith's design! Is it gilded?", "Vase", "https://www.brooklynmuseum.org/opencollection/objects/1405"])
        writer.writerow(["brooklyn", "1557-d", "1557", "Cabinet by Herter Brothers.", "Cabinet", ""])
    out = tmp_path / "texts.parquet"
    result = run("embed", manifest, "--model", "fake-embed-text-model", "--sentences", "-o", out, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    by_id = {r["depiction_id"]: r for r in rows}
    assert sorted(by_id) == ["1405-d#s1", "1405-d#s2", "1405-d#s3", "1557-d#s1"]
    first = dict(by_id["1405-d#s1"]["attributes"])
    assert first["type"] == "text" and first["preview"] == "A vase made ca. 1884 by Union Porcelain Works."
    assert first["subject_url"].startswith("https://") and first["subject_title"] == "Vase"
    assert dict(by_id["1405-d#s2"]["attributes"])["preview"] == "It shows Mr. J. Smith's design!"
    assert by_id["1405-d#s3"]["subject_id"] == "1405"
    assert all(r["model"] == "fake-embed-text-model" and len(r["embeddings"]) == 8 for r in rows)
    assert all(len(batch) <= 2 and all(isinstance(i, str) for i in batch) for batch in fake_text_model.batches)


def test_jsonl_mixed_texts_and_images_batch_separately(tmp_path, data_dir):
    from tests.fake_model import FakeCountingModel, registered

    both = FakeCountingModel("fake-embed-both-model", text=True, binary=True)
    manifest = tmp_path / "items.jsonl"
    lines = [
        {"provider": "rijks", "depiction_id": "a", "image": str(data_dir / "images" / "RP-P-1906-1485.jpg")},
        {"provider": "rijks", "depiction_id": "b", "text": "A portrait print of Erasmus."},
        {"provider": "rijks", "depiction_id": "c", "image": str(data_dir / "images" / "RP-P-1906-1486.jpg"), "created": 5},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "mixed.parquet"
    with registered(both):
        result = run("embed", manifest, "--model", "fake-embed-both-model", "--label", "my/label", "-o", out)
    assert result.exit_code == 0, result.output
    rows = {r["depiction_id"]: r for r in rows_of(out)}
    assert dict(rows["a"]["attributes"])["type"] == "image" and dict(rows["b"]["attributes"])["type"] == "text"
    assert rows["c"]["created"] == 5 and {r["model"] for r in rows.values()} == {"my/label"}
    assert [{type(i) for i in batch} for batch in both.batches] == [{bytes}, {str}]


@pytest.mark.parametrize(
    "content,message",
    [
        ("provider,depiction_id\nx,1\n", "row 2: needs an image path"),
        ("depiction_id,text\n1,hello\n", "row 2: field 'provider' is empty and no --provider was given"),
        ("provider,depiction_id,text,created\nx,1,hello,yesterday\n", "field 'created' must be Unix seconds"),
    ],
)
def test_bad_manifest_rows_are_located(tmp_path, content, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    result = run("embed", manifest, "-o", tmp_path / "x.parquet")
    assert result.exit_code != 0
    assert "bad.csv" in result.output and message in result.output


def test_wrong_model_kind_and_unknown_model(tmp_path, image_folder):
    result = run("embed", image_folder, "--provider", "p", "--model", "no-such-model", "-o", tmp_path / "x.parquet")
    assert result.exit_code != 0 and "unknown embedding model 'no-such-model'" in result.output
    manifest = tmp_path / "t.csv"
    manifest.write_text("provider,depiction_id,text\np,1,hello\n")
    result = run("embed", manifest, "-o", tmp_path / "y.parquet")
    assert result.exit_code != 0 and "model 'colour-layout-v1' cannot embed text" in result.output
    assert not (tmp_path / "y.parquet").exists()


def test_folder_needs_provider(tmp_path, image_folder):
    result = run("embed", image_folder, "-o", tmp_path / "x.parquet")
    assert result.exit_code != 0 and "needs --provider" in result.output


@pytest.mark.parametrize(
    "text,expected",
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Made ca. 1880 in St. Louis. Gift of Mr. A. B. Jones.", ["Made ca. 1880 in St. Louis.", "Gift of Mr. A. B. Jones."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("Dated 1901. 1902 saw it sold.", ["Dated 1901.", "1902 saw it sold."]),
    ],
)
def test_split_sentences(text, expected):
    assert embed.split_sentences(text) == expected


def test_progress_reports_items_per_second(capsys):
    from datasette_embeddings.cli import _Progress

    progress = _Progress(enabled=True, unit="items")
    progress(7)
    progress.done()
    err = capsys.readouterr().err
    assert "7 items" in err and "items/s" in err
