"""Search by text or by an uploaded image: request parsing, upload checks, results.

Query-time embedding belongs to :mod:`embedding.runtime`, and which llm model
embeds a stored label to :mod:`embedding.resolver`; this module never knows which
llm plugin does the work.  Request bodies are read by :mod:`uploads` (streaming,
limited, off the event loop), checked to be an image format we accept, and only
then handed to the model.  CSRF is Datasette's
(asgi-csrf): the HTML form carries the ``csrftoken`` field before the file.
"""
from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from datasette.utils.asgi import Forbidden

from ..config import EmbeddingConfig, IndexSettings
from ..embedding import resolver, runtime
from ..errors import (
    EmbeddingError, InvalidRequestError, ModelNotReadyError, NotFoundError, TooLargeError, UnsupportedMediaError,
)

from . import uploads
from .http_errors import HeaderFieldsTooLarge
from ..search import keywords
from ..search.filters import MAX_K, NeighbourFilter, check_k
from ..search.similarity import similar_to_vector, with_records
from .gallery import FacetCounts, card, check_filter, neighbour_cards
from ..storage.store import ModelInfo
from .gallery import FacetCounts, check_filter, neighbour_cards

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}


def llm_model_id(model: ModelInfo, config: EmbeddingConfig) -> str | None:
    """The llm model that embeds queries for a stored model, or None (not searchable)."""
    try:
        return resolver.query_model_id(config, model.label, stored=True, stored_llm_id=model.llm_model_id)
    except EmbeddingError:
        return None


def model_capabilities(model: ModelInfo, config: EmbeddingConfig) -> dict:
    """``{"label", "dimensions", "text", "image"}``: what a stored model can be searched with."""
    model_id = llm_model_id(model, config)
    caps = {"label": model.label, "dimensions": model.dimensions, "text": False, "image": False}
    if model_id is None:
        return caps
    try:
        if not runtime.is_available(model_id):
            caps["unavailable"] = f"the llm model '{model_id}' is not installed on this server"
            return caps
    except EmbeddingError:
        return caps
    for key, fn in (("text", runtime.supports_text), ("image", runtime.supports_images)):
        try:
            caps[key] = bool(fn(model_id))
        except EmbeddingError:  # an llm model that is not installed cannot be searched with
            caps[key] = False
    try:
        caps["load"] = runtime.load_state(model_id)  # a search with a model not loaded answers 503
    except EmbeddingError:
        pass
    return caps


def _too_large(limit: int) -> TooLargeError:
    return TooLargeError(f"upload too large: the limit is {limit:,} bytes ({limit / (1024 * 1024):.0f} MiB)")


# ---------------------------------------------------------------- uploads
@dataclass
class SearchForm:
    image: bytes | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


async def read_form(receive: Callable, headers: dict, limits: uploads.FormLimits) -> SearchForm:
    """The search form of a POST: a raw image body or multipart/form-data; 4xx beyond any of ``limits``."""
    try:
        body = await uploads.read_form(receive, headers, limits)
    except uploads.UploadError as ex:
        if ex.status == 413:
            raise TooLargeError(str(ex)) from None
        if ex.status == 415:
            raise UnsupportedMediaError(str(ex)) from None
        if ex.status == 431:
            raise HeaderFieldsTooLarge(str(ex)) from None
        raise InvalidRequestError(str(ex)) from None
    form = SearchForm(image=body.image, fields=body.fields)
    return form


def check_image(data: bytes, limit: int) -> str:
    """The image's format name from its header alone (no decoding), or an error naming what is wrong.

    The pixels are decoded once, later, by :func:`embedding.images.load_image`.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidRequestError("the uploaded image is empty")
    if len(data) > limit:
        raise _too_large(limit)
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as ex:
        raise UnsupportedMediaError(f"the upload is not a readable image ({ex.__class__.__name__}): use JPEG, PNG, GIF or WebP") from None
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedMediaError(f"image format {fmt} is not accepted: use JPEG, PNG, GIF or WebP")
    return fmt


def thumbnail_data_url(data: bytes, config: EmbeddingConfig, size: int = 240) -> str | None:
    """The uploaded image, shrunk and re-encoded by us as a ``data:`` URL to show it back.

    Re-encoding means the page never echoes the visitor's bytes as they came
    (only pixels PIL decoded), and the page stays small whatever was uploaded.
    The decode is :func:`embedding.images.load_image`'s, so it shares the process's
    ``max_concurrent_decodes`` slots and shrinks a large canvas a strip at a time
    (a plain ``thumbnail()`` decoded a 40-megapixel PNG whole, outside that bound).
    """
    import base64

    from ..embedding import images

    try:
        image = images.load_image(
            data, max_bytes=config.max_upload_bytes, max_pixels=config.max_image_pixels, max_side=size,
            max_concurrent_decodes=config.max_concurrent_decodes,
        )
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an image we cannot shrink is simply not shown back
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


# ---------------------------------------------------------------- CSRF for uploads
# asgi-csrf 0.11 cannot read multipart bodies with python-multipart >= 0.0.26 (the
# version with the CVE-2026-40347 fix): it crashes with a TypeError, see
# simonw/asgi-csrf#38.  So for multipart POSTs to the search page only, Datasette's
# skip_csrf hook hands the check to us, and we apply asgi-csrf's own rule to the form
# we parse anyway: a request that carries cookies must send the ``csrftoken`` field
# equal to the signed token asgi-csrf put in the scope (the value of its
# ``ds_csrftoken`` cookie once that cookie has a valid signature).
SEARCH_PATH = re.compile(r"^/[^/]+/-/search(\.json)?$")


def skips_asgi_csrf(scope: dict, base_url: str = "/") -> bool:
    """True for multipart POSTs to a search page: :func:`check_csrf` checks those."""
    if scope.get("type") != "http" or scope.get("method") != "POST":
        return False
    path = scope.get("path", "")
    prefix = base_url.rstrip("/")
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    headers = dict(scope.get("headers") or [])
    ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return ctype == b"multipart/form-data" and bool(SEARCH_PATH.match(path))


def check_csrf(scope: dict, headers: dict, form: SearchForm) -> None:
    """asgi-csrf's rule for a multipart form: no cookies, no ambient authority, no check."""
    if not headers.get("cookie"):
        return
    expected = scope.get("csrftoken")
    sent = form.get("csrftoken") or ""
    if expected is None or not secrets.compare_digest(sent.encode(), str(expected()).encode()):
        raise Forbidden("form submission failed the CSRF check: reload the search page and try again")


# ---------------------------------------------------------------- searching
def query_vector(model: ModelInfo, config: EmbeddingConfig, *, text: str | None, image: bytes | None) -> np.ndarray:
    """Embed the query with the llm model behind ``model``; the instance's switch and limits apply."""
    caps = model_capabilities(model, config)
    model_id = llm_model_id(model, config)
    if image is not None:
        if not caps["image"]:
            raise InvalidRequestError(f"model '{model.label}' cannot embed images")
        check_image(image, config.max_upload_bytes)
    elif not caps["text"]:
        raise InvalidRequestError(f"model '{model.label}' cannot embed text")
    try:
        if image is not None:
            return np.asarray(runtime.embed_image(model_id, image, config=config), dtype="<f4")
        return np.asarray(runtime.embed_text(model_id, text or "", config=config), dtype="<f4")
    except ModelNotReadyError:
        raise  # 503: loading (come back) or failed to load (the cause); http_errors maps it
    except EmbeddingError as ex:
        raise InvalidRequestError(f"could not embed the query with '{model.label}': {ex}") from None


MODES = ("vector", "keyword", "hybrid")
#: how many candidates each list contributes to a hybrid search before fusion
HYBRID_CANDIDATES = 100


def plan_search(
    models: list[dict],
    counts: FacetCounts,
    *,
    model_label: str | None,
    text: str | None,
    image: bytes | None,
    k: int,
    providers: tuple[str, ...],
    mode: str | None = None,
    keyword_index: bool = True,
) -> dict:
    """Validate a search and choose its model and mode; the returned dict is the page's data.

    With no model named, the first model that can embed this kind of query is
    used, so a visitor who only typed words still gets results.  Text queries
    default to ``hybrid`` (keywords and meaning fused) when a text model and the
    keyword index are there, to ``vector`` without the index, and to ``keyword``
    when no model can embed text (the demo without torch).  Images are ``vector``.
    """
    check_filter(counts, NeighbourFilter(providers=providers))
    check_k(k)
    text = (text or "").strip() or None
    if text and image is not None:
        raise InvalidRequestError("search by text or by image, not both at once")
    if model_label is not None and model_label not in {m["label"] for m in models}:
        raise NotFoundError(f"unknown model '{model_label}' (known: {', '.join(m['label'] for m in models) or 'none'})")
    if mode is not None and mode not in MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}, got '{mode[:40]}'")
    text_models = [m["label"] for m in models if m["text"]]
    if image is not None:
        if mode not in (None, "vector"):
            raise InvalidRequestError("an image search is always mode=vector")
        mode = "vector"
    elif text:
        if mode is None:
            if text_models and (model_label is None or model_label in text_models):
                mode = "hybrid" if keyword_index else "vector"
            else:
                mode = "keyword" if keyword_index else "vector"
        if mode == "keyword" and not keyword_index:
            raise InvalidRequestError("this database has no keyword index yet: run `datasette-embeddings load` on it once to add it")
        if mode in ("vector", "hybrid") and not text_models:
            raise InvalidRequestError(f"no model in this database can embed text queries, so mode={mode} cannot run: "
                              "use mode=keyword (words in titles, texts and credit lines)")
    wanted = "image" if image is not None else "text"
    if model_label is None and (text or image is not None) and mode != "keyword":
        usable = [m for m in models if m[wanted]]
        if not usable:
            raise InvalidRequestError(f"no model in this database can embed {wanted} queries")
        model_label = usable[0]["label"]
    return {
        "query": {"text": text, "image": image is not None, "model": model_label, "k": k, "provider": list(providers),
                  "mode": mode},
        "models": models,
        "modes": list(MODES),
        "text_search": {"meaning": bool(text_models), "keywords": keyword_index},
        "providers": counts.providers_under(model_label),
        "results": [],
    }


def run_keyword_search(conn, text: str, model_label: str | None, *, k: int, providers: tuple[str, ...], base_url: str) -> list[dict]:
    """The k best keyword matches (BM25), one card per depiction when no model is named."""
    flt = keywords.KeywordFilter(model=model_label, providers=providers)
    pairs = keywords.ranked_ids(conn, text, flt, limit=k if model_label else k * 4)
    seen, cards = set(), []
    for n in with_records(conn, [(rid, None) for rid, _ in pairs]):
        key = (n.record["provider"], n.record["depiction_id"])
        if key in seen:
            continue
        seen.add(key)
        cards.append(card(n.record, None, f"{base_url}/{n.id}"))
    return cards[:k]


def run_hybrid_search(
    conn, model_label: str, vector: np.ndarray, text: str, *, k: int, providers: tuple[str, ...], base_url: str,
    settings: IndexSettings = IndexSettings(),
) -> list[dict]:
    """Keyword and vector results under one model, fused by reciprocal rank (see search/keywords.py).

    Each card keeps its cosine similarity when the vector list found it, and
    carries ``score``, the fused score its place comes from.
    """
    n = max(k, HYBRID_CANDIDATES)
    near = similar_to_vector(conn, model_label, vector, min(n, MAX_K), NeighbourFilter(providers=providers), settings)
    words = keywords.ranked_ids(conn, text, keywords.KeywordFilter(model=model_label, providers=providers), limit=n)
    similarity = {x.id: x.similarity for x in near}
    fused = keywords.reciprocal_rank_fusion([x.id for x in near], [rid for rid, _ in words])[:k]
    cards = []
    for x in with_records(conn, [(rid, similarity.get(rid)) for rid, _ in fused]):
        c = card(x.record, x.similarity, f"{base_url}/{x.id}")
        cards.append(c)
    for c, (_, score) in zip(cards, fused):
        c["score"] = round(score, 6)
    return cards


def run_search(
    conn, model_label: str, vector: np.ndarray, *, k: int, providers: tuple[str, ...], base_url: str,
    settings: IndexSettings = IndexSettings(),
) -> list[dict]:
    """The k nearest records to a query vector, as cards, with the provider filter inside the KNN."""
    neighbours = similar_to_vector(conn, model_label, vector, k, NeighbourFilter(providers=providers), settings)
    return neighbour_cards(neighbours, base_url)
