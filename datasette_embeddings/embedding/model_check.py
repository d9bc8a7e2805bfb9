"""``check-model``: does the model we would embed queries with reproduce a file's vectors?

A published vector is only searchable by text or by image if the query is embedded
with the same weights *and* the same preprocessing.  This re-embeds a sample of the
stored images (fetched from their ``preview`` URLs, or read from a local folder where
files are named after their depiction id) and compares each fresh vector with the
stored one by cosine similarity.  With the right model, every cosine is above 0.99;
a wrong crop, resolution or normalisation typically gives 0.8-0.95, a wrong model ~0.
"""
from __future__ import annotations

import os
import statistics
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import EmbeddingConfig
from ..errors import InvalidRequestError, NotFoundError
from ..storage.store import Store
from . import resolver, runtime

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp")
#: one preview download at most this long and this large
FETCH_TIMEOUT = 20.0
FETCH_MAX_BYTES = 20_000_000
DEFAULT_THRESHOLD = 0.99


@dataclass
class Comparison:
    record_id: int
    depiction_id: str
    source: str
    cosine: float | None = None
    error: str | None = None


@dataclass
class CheckReport:
    label: str
    llm_model_id: str
    threshold: float
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def cosines(self) -> list[float]:
        return [c.cosine for c in self.comparisons if c.cosine is not None]

    @property
    def passed(self) -> bool:
        """At least one image compared, and every compared image at or above the threshold."""
        return bool(self.cosines) and min(self.cosines) >= self.threshold

    def summary(self) -> dict:
        cosines = self.cosines
        return {
            "label": self.label,
            "llm_model_id": self.llm_model_id,
            "compared": len(cosines),
            "failed": sum(1 for c in self.comparisons if c.error),
            "min": min(cosines) if cosines else None,
            "median": statistics.median(cosines) if cosines else None,
            "mean": statistics.fmean(cosines) if cosines else None,
            "threshold": self.threshold,
            "passed": self.passed,
        }


def fetch_image(url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = FETCH_MAX_BYTES) -> bytes:
    """One preview image over http(s), bounded in time and size."""
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidRequestError(f"preview is not an http(s) URL: {url[:80]}")
    request = urllib.request.Request(url, headers={"User-Agent": "datasette-embeddings check-model"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidRequestError(f"{url}: larger than {max_bytes:,} bytes")
    return data


def _folder_index(folder: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise NotFoundError(f"{folder}: no such folder")
    index = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(stem, os.path.join(folder, name))
    return index


def _candidates(conn, label: str, sample: int, folder_index: dict[str, str] | None) -> list[tuple[int, str, str]]:
    """Up to ``sample`` (record id, depiction id, image source), spread over the table, same every run."""
    rows = conn.execute(
        "select id, depiction_id, json_extract(attributes, '$.preview') from records where model = ? "
        # a fixed multiplicative hash: a spread-out sample that is the same on every run
        "order by (id * 2654435761) % 4294967296",
        [label],
    )
    chosen = []
    for record_id, depiction_id, preview in rows:
        if folder_index is not None:
            source = folder_index.get(depiction_id)
        else:
            source = preview if isinstance(preview, str) and preview.lower().startswith(("http://", "https://")) else None
        if source:
            chosen.append((record_id, depiction_id, source))
            if len(chosen) >= sample:
                break
    return chosen


def check_model(
    db_path: str,
    label: str,
    *,
    sample: int = 20,
    images: str | None = None,
    llm_model_id: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    fetch: Callable[[str], bytes] = fetch_image,
    on_result: Callable[[Comparison], None] | None = None,
) -> CheckReport:
    """Re-embed up to ``sample`` stored images of ``label`` and compare with the stored vectors."""
    if sample < 1:
        raise InvalidRequestError("--sample must be at least 1")
    store = Store.open(db_path)
    conn = store.conn
    try:
        model = store.model(label) or _same_published_model(store, label)
        if model is None:
            known = ", ".join(m.label for m in store.models()) or "none"
            raise NotFoundError(f"{db_path} holds no model '{label}' (it holds: {known})")
        label = model.label
        model_id = llm_model_id or resolver.query_model_id(
            EmbeddingConfig(), model.label, stored=True, stored_llm_id=model.llm_model_id
        )
        if model_id is None:
            raise NotFoundError(
                f"no embedding model answers to '{label}': pass --llm-model, or install the model "
                "(pip install 'datasette-museum-embeddings[models]' covers MobileCLIP, SigLIP, OpenCLIP, DINOv2)"
            )
        if not runtime.supports_images(model_id):
            raise InvalidRequestError(f"model '{model_id}' cannot embed images, so it cannot be checked against images")
        folder_index = _folder_index(images) if images else None
        candidates = _candidates(conn, label, sample, folder_index)
        if not candidates:
            where = f"named after a depiction id in {images}" if images else "with an http(s) preview URL"
            raise NotFoundError(f"no record of '{label}' has an image {where}")
        # load the model once up front: a missing library or checkpoint is one error, not one per image
        runtime.embed_image(model_id, _grey_square())
        report = CheckReport(label=label, llm_model_id=model_id, threshold=threshold)
        for record_id, depiction_id, source in candidates:
            comparison = Comparison(record_id, depiction_id, source)
            try:
                if folder_index is not None:
                    with open(source, "rb") as fp:
                        data = fp.read()
                else:
                    data = fetch(source)
                fresh = runtime.embed_image(model_id, data)
                stored = store.vector(record_id)
                comparison.cosine = _cosine(fresh, stored)
            except Exception as ex:  # a dead link or a broken image: reported, the rest go on
                comparison.error = f"{type(ex).__name__}: {ex}"
            report.comparisons.append(comparison)
            if on_result:
                on_result(comparison)
        return report
    finally:
        conn.close()


def _same_published_model(store: Store, name: str):
    """The one stored model that is the same published model as ``name`` (another spelling or alias)."""
    from .adapters import find

    spec = find(name)
    if spec is None:
        return None
    matches = [m for m in store.models() if find(m.label) == spec]
    return matches[0] if len(matches) == 1 else None


def _grey_square() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()


def _cosine(fresh: np.ndarray, stored: np.ndarray) -> float:
    if stored is None:
        raise NotFoundError("the stored vector is missing")
    if fresh.shape != stored.shape:
        raise InvalidRequestError(
            f"the model makes {fresh.size}-dimensional vectors; the stored ones have {stored.size}"
        )
    a = fresh.astype(np.float64)
    b = stored.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
