"""Fetching images for ``embed`` from the web: bounded, retried, a few at a time, cached.

A harvest may name thousands of remote images.  Each download here is bounded
in size (``Content-Length`` is checked first, and reading stops past the limit)
and in time (a timeout per network wait and a deadline for the whole
transfer), retried on the failures that pass (connection errors, 5xx, 429),
and at most ``concurrency`` run at once.  With a cache folder every finished
download is kept under a name derived from its URL, written beside and renamed
into place, so an interrupted harvest resumes with what it already has and a
half-written file is never mistaken for an image.

IIIF Image API URLs are asked for a sized rendition: an image service's base
URI or ``info.json``, or a full-size image request, becomes
``{base}/full/!N,N/0/default.jpg`` (best fit within N x N), so a museum's
multi-hundred-megapixel master is never downloaded to be shrunk to 384 px.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

DEFAULT_IIIF_SIZE = 512
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_CONCURRENCY = 4
USER_AGENT = "datasette-embeddings harvest (+https://github.com/simonw/datasette)"
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
#: longest Retry-After honoured, in seconds: a server asking for more gets a skipped item, not a stuck run
MAX_RETRY_AFTER = 30.0

# {base}/{region}/{size}/{rotation}/{quality}.{format}, IIIF Image API 2 and 3
_IIIF_REQUEST = re.compile(
    r"^(?P<base>https?://.+?)/(?P<region>full|square|\d+,\d+,\d+,\d+|pct:[\d.]+,[\d.]+,[\d.]+,[\d.]+)"
    r"/(?P<size>\^?(?:full|max|!?\d*,\d*|pct:[\d.]+))/(?P<rotation>!?\d+(?:\.\d+)?)"
    r"/(?P<quality>default|color|colour|gray|grey|bitonal|native)\.(?P<format>jpg|jpeg|png|webp|tif|tiff|gif)$"
)
_SIZE_WH = re.compile(r"^\^?!?(\d*),(\d*)$")


def is_url(value: str) -> bool:
    return value.startswith("http://") or value.startswith("https://")


def iiif_sized(url: str, size: int = DEFAULT_IIIF_SIZE) -> str | None:
    """The URL of a rendition at most ``size`` pixels a side, if ``url`` is a IIIF Image API URL.

    Handles an image request (its size replaced when larger than ``size`` or
    unbounded) and an ``info.json`` URL.  Other URLs give ``None``.
    """
    if url.endswith("/info.json"):
        return f"{url[:-len('/info.json')]}/full/!{size},{size}/0/default.jpg"
    match = _IIIF_REQUEST.match(url)
    if not match:
        return None
    requested = match.group("size")
    wh = _SIZE_WH.match(requested)
    if wh and wh.group(1) and wh.group(2) and int(wh.group(1)) <= size and int(wh.group(2)) <= size:
        return url  # already small enough
    if wh and (wh.group(1) or wh.group(2)) and not (wh.group(1) and wh.group(2)):
        one = int(wh.group(1) or wh.group(2))
        if one <= size:
            return url
    return f"{match.group('base')}/{match.group('region')}/!{size},{size}/{match.group('rotation')}/{match.group('quality')}.{match.group('format')}"


def iiif_service_url(base: str, size: int = DEFAULT_IIIF_SIZE) -> str:
    """A sized rendition of an image service given by its base URI (a manifest's ``iiif`` column)."""
    base = base.rstrip("/")
    if base.endswith("/info.json"):
        base = base[:-len("/info.json")]
    return f"{base}/full/!{size},{size}/0/default.jpg"


def iiif_identifier(url: str) -> str | None:
    """The image identifier of a IIIF URL (the last segment of its base), for a default id."""
    if url.endswith("/info.json"):
        base = url[:-len("/info.json")]
    else:
        match = _IIIF_REQUEST.match(url)
        if not match:
            return None
        base = match.group("base")
    return urllib.parse.unquote(base.rstrip("/").rsplit("/", 1)[-1]) or None


class DownloadError(Exception):
    """One image could not be had; the message names the URL and why."""


@dataclass
class FetchSettings:
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout: float = DEFAULT_TIMEOUT  # per network wait, and (x4) for the whole transfer
    retries: int = DEFAULT_RETRIES
    concurrency: int = DEFAULT_CONCURRENCY
    cache: str | None = None  # a folder; created if missing
    backoff: float = 0.5  # seconds before the first retry, doubled each time


class Fetcher:
    """Downloads images under :class:`FetchSettings`; thread-safe (one request per call)."""

    def __init__(self, settings: FetchSettings | None = None, *, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings or FetchSettings()
        self.sleep = sleep
        self.network_requests = 0  # every attempt, retries included
        self.downloaded = 0  # images fetched over the network
        self.cache_hits = 0
        self._lock = threading.Lock()
        if self.settings.cache:
            os.makedirs(self.settings.cache, exist_ok=True)

    # ------------------------------------------------------------ cache
    def cache_path(self, url: str) -> str | None:
        if not self.settings.cache:
            return None
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:40]
        return os.path.join(self.settings.cache, digest)

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``, from the cache when there; raises :class:`DownloadError`."""
        path = self.cache_path(url)
        if path and os.path.exists(path):
            with open(path, "rb") as fp:
                data = fp.read()
            with self._lock:
                self.cache_hits += 1
            return data
        data = self._download_with_retries(url)
        with self._lock:
            self.downloaded += 1
        if path:
            partial = f"{path}.{os.getpid()}.{id(data)}.part"
            with open(partial, "wb") as fp:
                fp.write(data)
            os.replace(partial, path)  # complete or absent: an interrupted run leaves no half image
        return data

    # ------------------------------------------------------------ network
    def _download_with_retries(self, url: str) -> bytes:
        delay = self.settings.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._download(url)
            except _Retryable as ex:
                if attempt > self.settings.retries:
                    tries = "try" if attempt == 1 else "tries"
                    raise DownloadError(f"{url}: {ex.reason} (gave up after {attempt} {tries})") from None
                wait = delay if ex.retry_after is None else min(ex.retry_after, MAX_RETRY_AFTER)
                self.sleep(wait)
                delay *= 2

    def _download(self, url: str) -> bytes:
        settings = self.settings
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        with self._lock:
            self.network_requests += 1
        started = time.monotonic()
        try:
            response = urllib.request.urlopen(request, timeout=settings.timeout)
        except urllib.error.HTTPError as ex:
            if ex.code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {ex.code} {ex.reason}", _retry_after(ex.headers.get("Retry-After"))) from None
            raise DownloadError(f"{url}: HTTP {ex.code} {ex.reason}") from None
        except (urllib.error.URLError, OSError) as ex:
            reason = getattr(ex, "reason", ex)
            raise _Retryable(f"could not connect ({reason})") from None
        except ValueError as ex:
            raise DownloadError(f"{url}: {ex}") from None
        with response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > settings.max_bytes:
                raise DownloadError(f"{url}: {int(length):,} bytes, more than the limit of {settings.max_bytes:,}")
            chunks: list[bytes] = []
            total = 0
            deadline = started + 4 * settings.timeout
            while True:
                if time.monotonic() > deadline:
                    raise _Retryable(f"took longer than {4 * settings.timeout:g}s")
                try:
                    chunk = response.read(64 * 1024)
                except (TimeoutError, OSError) as ex:
                    raise _Retryable(f"transfer stalled ({ex or 'timed out'})") from None
                if not chunk:
                    break
                total += len(chunk)
                if total > settings.max_bytes:
                    raise DownloadError(f"{url}: more than the limit of {settings.max_bytes:,} bytes")
                chunks.append(chunk)
            if length and length.isdigit() and total < int(length):
                raise _Retryable(f"connection closed after {total:,} of {int(length):,} bytes")
        return b"".join(chunks)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


T = TypeVar("T")


def fetch_in_order(
    items: Iterable[T],
    url_of: Callable[[T], str | None],
    fetcher: Fetcher,
) -> Iterator[tuple[T, bytes | None, str | None]]:
    """``(item, data, error)`` for each item, in input order, downloading ``concurrency`` at a time.

    Items without a URL pass through with ``(item, None, None)``.  At most
    ``2 x concurrency`` downloads are in flight or waiting to be consumed, so
    memory stays bounded however long the manifest.
    """
    concurrency = max(1, fetcher.settings.concurrency)
    window = 2 * concurrency
    pending: list[tuple[T, object]] = []

    def result(item: T, future) -> tuple[T, bytes | None, str | None]:
        if future is None:
            return item, None, None
        try:
            return item, future.result(), None
        except DownloadError as ex:
            return item, None, str(ex)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="datasette-embeddings-fetch") as pool:
        for item in items:
            url = url_of(item)
            pending.append((item, pool.submit(fetcher.fetch, url) if url else None))
            if len(pending) >= window:
                yield result(*pending.pop(0))
        while pending:
            yield result(*pending.pop(0))
