"""Making shared-format Parquet from a museum's own images and texts.

Input is a folder of images or a manifest (CSV or JSON Lines) with one row per
depiction: ``provider``, ``depiction_id``, ``subject_id``, an image path (``image``)
or a text (``text``), and any OEmbeddings attributes (``subject_title``,
``subject_url``, ``preview``, ``depiction_url``, ``subject_creditline``,
``provider_name``, ``provider_url``).  Each item is embedded with an llm
embedding model and written as one record of the shared format; texts and images
are batched separately (sentence-transformers refuses mixed batches).

An image may also be an http(s) URL, including a IIIF Image API URL, or a IIIF
image service given in an ``iiif`` column: those are fetched by
:mod:`.downloads` (a sized rendition for IIIF; bounded, retried, a few at a
time, optionally cached so an interrupted harvest resumes), and the URL fetched
becomes the record's ``preview`` unless the manifest gives one.
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from ..embedding import runtime as models
from ..config import EmbeddingConfig
from ..errors import EmbeddingError
from . import downloads
from .downloads import Fetcher, FetchSettings
from .parquet_io import ParquetRecordWriter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp")
OEMBEDDINGS_KEYS = (
    "subject_title", "subject_url", "preview", "depiction_url",
    "subject_creditline", "provider_name", "provider_url",
)
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "local_file")
TEXT_COLUMNS = ("text", "description")
IIIF_COLUMNS = ("iiif", "iiif_service", "iiif_image")
#: offline embedding reads a museum's own masters: far larger than a web upload may be
OFFLINE_LIMITS = EmbeddingConfig(max_upload_bytes=512 * 1024 * 1024, max_image_pixels=150_000_000)
# words after which a full stop does not end a sentence
_ABBREVIATIONS = {"ca", "c", "mr", "mrs", "ms", "dr", "st", "no", "nos", "vol", "fig", "figs", "pl", "e.g", "i.e", "etc", "approx", "inv", "cf"}


class EmbedError(Exception):
    """The run cannot go on; the message names the file and row (or item)."""


@dataclass
class Item:
    """One thing to embed, as read from a folder or a manifest row."""

    provider: str
    depiction_id: str
    subject_id: str
    kind: str  # "image" or "text"
    content: str  # image path, or the text itself
    attributes: dict = field(default_factory=dict)
    created: int | None = None
    where: str = ""  # "file.csv row 3" or a path, for messages
    remote: bool = False  # ``content`` is a URL to fetch
    data: bytes | None = None  # the fetched image, until it is embedded
    error: str | None = None  # why the fetch failed


@dataclass
class EmbedReport:
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason naming it)
    label: str = ""
    downloaded: int = 0  # images fetched over the network
    cached: int = 0  # images read from the --cache folder


# ---------------------------------------------------------------- reading inputs

def items_from_folder(folder: str, provider: str) -> Iterator[Item]:
    """Every image file directly in ``folder``, sorted by name; the file stem is the id."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise EmbedError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    for name in names:
        stem = os.path.splitext(name)[0]
        path = os.path.join(folder, name)
        yield Item(provider, stem, stem, "image", path, where=path)


def _manifest_rows(path: str) -> Iterator[tuple[int, dict]]:
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        with open(path, encoding="utf-8") as fp:
            for number, line in enumerate(fp, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as ex:
                    raise EmbedError(f"{path} line {number}: not JSON ({ex})") from None
                if not isinstance(row, dict):
                    raise EmbedError(f"{path} line {number}: must be a JSON object")
                yield number, row
    else:
        with open(path, encoding="utf-8-sig", newline="") as fp:
            for number, row in enumerate(csv.DictReader(fp), start=2):  # line 1 is the header
                yield number, row


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def items_from_manifest(path: str, provider: str | None = None, *, iiif_size: int = downloads.DEFAULT_IIIF_SIZE) -> Iterator[Item]:
    """Rows of a CSV or JSONL manifest; image paths are relative to the manifest's folder, or URLs."""
    base = os.path.dirname(os.path.abspath(path))
    unit = "line" if path.lower().endswith((".jsonl", ".ndjson", ".json")) else "row"
    for number, row in _manifest_rows(path):
        where = f"{path} {unit} {number}"
        image = next((_text(row[c]) for c in IMAGE_COLUMNS if _text(row.get(c))), "")
        text = next((_text(row[c]) for c in TEXT_COLUMNS if _text(row.get(c))), "")
        iiif = next((_text(row[c]) for c in IIIF_COLUMNS if _text(row.get(c))), "")
        url = ""
        if image and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", image):
            if not downloads.is_url(image):
                raise EmbedError(f"{where}: image URL {image!r} is not http(s)")
            url = downloads.iiif_sized(image, iiif_size) or image
        elif not image and iiif:
            if not downloads.is_url(iiif):
                raise EmbedError(f"{where}: IIIF image service {iiif!r} is not an http(s) URL")
            url = downloads.iiif_service_url(iiif, iiif_size)
            image = iiif
        if not image and not text:
            raise EmbedError(
                f"{where}: needs an image path or URL ({', '.join(IMAGE_COLUMNS)}), a IIIF image service "
                f"({', '.join(IIIF_COLUMNS)}) or a text ({', '.join(TEXT_COLUMNS)})")
        row_provider = _text(row.get("provider")) or provider
        if not row_provider:
            raise EmbedError(f"{where}: field 'provider' is empty and no --provider was given")
        if url:
            default_id = downloads.iiif_identifier(url) or os.path.splitext(
                os.path.basename(urllib.parse.urlparse(url).path.rstrip("/")))[0]
        else:
            default_id = os.path.splitext(os.path.basename(image))[0] if image else _text(row.get("subject_id"))
        depiction_id = _text(row.get("depiction_id")) or default_id
        if not depiction_id:
            raise EmbedError(f"{where}: field 'depiction_id' is empty")
        attributes = {k: _text(row.get(k)) for k in OEMBEDDINGS_KEYS if _text(row.get(k))}
        if "subject_title" not in attributes and _text(row.get("title")):
            attributes["subject_title"] = _text(row.get("title"))
        if url and "preview" not in attributes:
            attributes["preview"] = url
        created = _text(row.get("created"))
        if created and not created.isdigit():
            raise EmbedError(f"{where}: field 'created' must be Unix seconds, got {created!r}")
        yield Item(
            provider=row_provider,
            depiction_id=depiction_id,
            subject_id=_text(row.get("subject_id")) or depiction_id,
            kind="image" if image else "text",
            content=url or (os.path.join(base, image) if image else text),
            attributes=attributes,
            created=int(created) if created else None,
            where=where,
            remote=bool(url),
        )


def split_sentences(text: str) -> list[str]:
    """Sentences of a description (as the Heritage Weaver study embedded them), abbreviation-aware."""
    pieces = re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", text.strip())
    sentences: list[str] = []
    for piece in pieces:
        previous = sentences[-1] if sentences else ""
        last_word = previous.rsplit(None, 1)[-1].rstrip(".").lower() if previous else ""
        if previous and (last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())):
            sentences[-1] = f"{previous} {piece}"
        else:
            sentences.append(piece)
    return [s for s in (s.strip() for s in sentences) if s]


def with_sentences(items: Iterable[Item]) -> Iterator[Item]:
    """Text items split into one item per sentence, ids suffixed ``#s1``, ``#s2``..."""
    for item in items:
        if item.kind != "text":
            yield item
            continue
        for n, sentence in enumerate(split_sentences(item.content), start=1):
            yield Item(
                item.provider, f"{item.depiction_id}#s{n}", item.subject_id, "text", sentence,
                dict(item.attributes), item.created, f"{item.where} sentence {n}",
            )


# ---------------------------------------------------------------- embedding

def _record(item: Item, label: str, vector, created: int) -> dict:
    attributes = dict(item.attributes)
    attributes["type"] = item.kind
    if item.kind == "text":
        attributes["preview"] = item.content
    return {
        "provider": item.provider,
        "depiction_id": item.depiction_id,
        "subject_id": item.subject_id,
        "model": label,
        "embeddings": vector,
        "created": item.created if item.created is not None else created,
        "attributes": attributes,
    }


def embed_items(
    items: Iterable[Item],
    model_id: str,
    *,
    label: str | None = None,
    batch_size: int = 32,
    strict: bool = False,
    created: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    report: EmbedReport | None = None,
) -> Iterator[dict]:
    """Records for ``items``; unreadable images are skipped (reported) or, if ``strict``, fatal."""
    model = models.get_model(model_id)  # unknown model: fail before reading anything
    label = label or model.model_id
    created = int(time.time()) if created is None else created
    report = report if report is not None else EmbedReport()
    report.label = label
    pending: dict[str, list[tuple[Item, str | bytes]]] = {"image": [], "text": []}

    def flush(kind: str) -> Iterator[dict]:
        batch = pending[kind]
        if not batch:
            return
        pending[kind] = []
        contents = [content for _item, content in batch]
        try:
            if kind == "image":
                vectors = models.embed_images(model_id, contents)
            else:
                vectors = models.embed_texts(model_id, contents)
        except EmbeddingError as ex:
            raise EmbedError(f"{batch[0][0].where}: {ex}") from None
        for (item, _content), vector in zip(batch, vectors):
            yield _record(item, label, vector, created)
        if progress:
            progress(len(batch))

    for item in items:
        if item.kind == "image":
            if not model.supports_binary:
                raise EmbedError(f"{item.where}: model '{model_id}' cannot embed images (it embeds text only)")
            try:
                if item.error:
                    raise EmbeddingError(item.error)
                if item.data is not None:
                    data, item.data = item.data, None
                else:
                    with open(item.content, "rb") as fp:
                        data = fp.read(OFFLINE_LIMITS.max_upload_bytes + 1)
                content: str | bytes = models.prepare_image(data, OFFLINE_LIMITS, name=item.content)
            except (OSError, EmbeddingError) as ex:
                reason = f"{item.content}: {ex.strerror or ex}" if isinstance(ex, OSError) else str(ex)
                if strict:
                    raise EmbedError(reason if item.where == item.content else f"{item.where}: {reason}") from None
                report.skipped.append((item.content, reason))
                if on_skip:
                    on_skip(item.content, reason)
                continue
        else:
            if not model.supports_text:
                raise EmbedError(f"{item.where}: model '{model_id}' cannot embed text (it embeds images only)")
            content = item.content
        pending[item.kind].append((item, content))
        if len(pending[item.kind]) >= batch_size:
            yield from flush(item.kind)
    yield from flush("image")
    yield from flush("text")


def embed_to_parquet(
    source: str,
    output: str,
    *,
    model_id: str = models.BUILTIN_IMAGE_MODEL,
    provider: str | None = None,
    label: str | None = None,
    batch_size: int = 32,
    sentences: bool = False,
    strict: bool = False,
    created: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    fetch: FetchSettings | None = None,
    iiif_size: int = downloads.DEFAULT_IIIF_SIZE,
) -> EmbedReport:
    """Embed a folder or manifest into ``output``; on failure, or when nothing was embedded, no file is left.

    Remote images are fetched under ``fetch`` (:class:`~.downloads.FetchSettings`):
    a few at a time, ahead of the model, in manifest order.
    """
    if os.path.isdir(source):
        if not provider:
            raise EmbedError(f"{source}: a folder of images needs --provider")
        items: Iterable[Item] = items_from_folder(source, provider)
    elif os.path.isfile(source):
        items = items_from_manifest(source, provider, iiif_size=iiif_size)
    else:
        raise EmbedError(f"{source}: no such file or folder")
    if sentences:
        items = with_sentences(items)
    if batch_size < 1:
        raise EmbedError("--batch-size must be at least 1")
    if iiif_size < 1:
        raise EmbedError("--iiif-size must be at least 1")
    fetcher = Fetcher(fetch or FetchSettings())

    def with_downloads(items: Iterable[Item]) -> Iterator[Item]:
        for item, data, error in downloads.fetch_in_order(items, lambda it: it.content if it.remote else None, fetcher):
            item.data, item.error = data, error
            yield item

    items = with_downloads(items)
    report = EmbedReport()
    try:
        with ParquetRecordWriter(output) as writer:
            for record in embed_items(
                items, model_id, label=label, batch_size=batch_size, strict=strict, created=created,
                on_skip=on_skip, progress=progress, report=report,
            ):
                writer.write(record)
        report.written = writer.count
        report.downloaded, report.cached = fetcher.downloaded, fetcher.cache_hits
        if report.written == 0:
            skipped = f"; {len(report.skipped):,} image(s) skipped" if report.skipped else ""
            raise EmbedError(f"{source}: nothing was embedded{skipped}, so no file was written")
    except (EmbedError, EmbeddingError) as ex:
        _remove(output)
        raise EmbedError(str(ex)) from None
    except BaseException:
        _remove(output)
        raise
    finally:
        # a run stopped early (--strict, an error) leaves the download generator suspended inside its
        # thread pool; closed here, the pool shuts down in this thread.  Left to the garbage collector it
        # was shut down from whichever thread collected it, once from inside threading's own bookkeeping
        # while it held the lock that joining a thread takes: the process hung for good.
        items.close()
    return report


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

