"""Reading a search request's body: a streaming multipart parser with limits, off the event loop.

The search page accepts an image either as the raw request body (``image/jpeg`` ...,
for API clients) or in a ``multipart/form-data`` form (the HTML page).  Both are
read as they arrive, chunk by chunk, and refused with a 4xx the moment a limit is
passed, before anything is decoded or embedded:

* the whole body: ``Content-Length`` is checked before a byte is read, and the
  bytes actually received are counted (413);
* parts: at most :attr:`FormLimits.max_parts` (400); a part's headers: at most
  :attr:`FormLimits.max_headers_per_part` lines of :attr:`FormLimits.max_header_bytes`
  each (431), which also bounds the parameters a header can carry;
* nesting: a part that is itself ``multipart/*`` is refused (400), so depth is one
  (fixed: the search form has no use for nested parts);
* text fields: :attr:`FormLimits.max_field_bytes` each (413); the image part:
  the upload limit (413); at most one image.

The limits are the instance's configuration (``uploads:`` and ``max_upload_bytes``
in :mod:`config`), handed in as a :class:`FormLimits`; every refusal names the key
that sets the limit it passed.

Why not the ``email`` package, which parsed these forms before: it parses the whole
body at once, on the event loop, with costs that grow faster than the body (a
200 KB header of 40,000 parameters stalled every other request for 6.5 s, a 7.5 MB
body for minutes, and deep nesting recursed into a 500).  ``python-multipart``
(already installed: asgi-csrf depends on it) is a state machine fed one chunk at a
time; each chunk is parsed in a worker thread so the event loop keeps serving other
requests even while a hostile body is being refused.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from ..config import DEFAULT_MAX_UPLOAD_BYTES, PLUGIN_NAME, PluginConfig, UploadSettings


class UploadError(ValueError):
    """A request body refused; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FormLimits:
    """What one search request's body may hold: the configuration's ``uploads:`` and ``max_upload_bytes``."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_overhead_bytes: int = UploadSettings.max_overhead_bytes
    max_parts: int = UploadSettings.max_parts
    max_headers_per_part: int = UploadSettings.max_headers_per_part
    max_header_bytes: int = UploadSettings.max_header_bytes
    max_field_bytes: int = UploadSettings.max_field_bytes

    @classmethod
    def from_config(cls, config: PluginConfig) -> "FormLimits":
        u = config.uploads
        return cls(
            max_upload_bytes=config.embedding.max_upload_bytes, max_overhead_bytes=u.max_overhead_bytes,
            max_parts=u.max_parts, max_headers_per_part=u.max_headers_per_part,
            max_header_bytes=u.max_header_bytes, max_field_bytes=u.max_field_bytes,
        )

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + self.max_overhead_bytes


def _key(name: str) -> str:
    """Where a limit is set, for the refusal's message."""
    return f"plugins: {PLUGIN_NAME}: " + (name if name == "max_upload_bytes" else f"uploads: {name}")


@dataclass
class Form:
    image: bytes | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)


class _FormBuilder:
    """The parser's callbacks: collect fields and the image, enforcing the per-part limits."""

    def __init__(self, limits: FormLimits):
        self.limits = limits
        self.form = Form()
        self.parts = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._name = bytearray()
        self._value = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._kind = "skip"  # field | image | skip
        self._field_name = ""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise UploadError(
                f"the form has more than {self.limits.max_parts} parts (send one image and the search fields; "
                f"limit: {_key('max_parts')})"
            )
        self.headers = []
        self._data = []
        self._size = 0

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.headers.append((bytes(self._name).strip().lower(), bytes(self._value).strip()))
        self._name.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        disposition = b""
        ctype = b""
        for name, value in self.headers:
            if name == b"content-disposition":
                disposition = value
            elif name == b"content-type":
                ctype = value
        if ctype.split(b";", 1)[0].strip().lower().startswith(b"multipart/"):
            raise UploadError("a form part may not itself be multipart (nested forms are not accepted)")
        _, params = parse_options_header(disposition.decode("latin-1"))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            self._kind = "skip"
        elif name == "image" or b"filename" in params:
            if name != "image":
                self._kind = "skip"  # other files are ignored (and bounded by the body limit)
            elif self.form.image is not None:
                raise UploadError("send one image per search, not several")
            else:
                self._kind = "image"
        else:
            self._kind = "field"
            self._field_name = name

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "skip":
            return
        self._size += end - start
        image = self._kind == "image"
        limit = self.limits.max_upload_bytes if image else self.limits.max_field_bytes
        if self._size > limit:
            what = "the image" if image else f"form field '{self._field_name[:40]}'"
            key = _key("max_upload_bytes" if image else "max_field_bytes")
            raise UploadError(f"{what} is larger than {_size(limit)} (limit: {key})", status=413)
        self._data.append(data[start:end])

    def part_end(self) -> None:
        value = b"".join(self._data)
        self._data = []
        if self._kind == "image":
            if value:
                self.form.image = value
        elif self._kind == "field":
            self.form.fields.setdefault(self._field_name, []).append(value.decode("utf-8", "replace"))
        self._kind = "skip"


def _size(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KB"
    return f"{n:,} bytes"


def _body_too_large(limits: FormLimits) -> str:
    return (
        f"upload too large: the limit is {_size(limits.max_upload_bytes)} for the image plus "
        f"{_size(limits.max_overhead_bytes)} for the form ({_key('max_upload_bytes')}, {_key('max_overhead_bytes')})"
    )


def media_type(content_type: str) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_form(receive: Callable, headers: dict, limits: FormLimits = FormLimits()) -> Form:
    """The image (and form fields) of a POST body; 4xx :class:`UploadError` beyond any limit.

    ``headers`` are the request's (lower-case names).  A raw ``image/*`` body is the image;
    a ``multipart/form-data`` body is parsed as it streams in; anything else is a 415,
    refused before the body is read.
    """
    content_type = headers.get("content-type", "")
    kind = media_type(content_type)
    if not (kind.startswith("image/") or kind == "multipart/form-data"):
        raise UploadError(
            f"unsupported Content-Type '{kind[:80] or 'none'}': send multipart/form-data with an 'image' file, "
            "or the image bytes as image/jpeg, image/png, image/gif or image/webp",
            status=415,
        )
    declared = headers.get("content-length")
    body_limit = limits.max_body_bytes
    if declared is not None and declared.strip().isdigit() and int(declared) > body_limit:
        raise UploadError(_body_too_large(limits), status=413)
    if kind.startswith("image/"):
        body = await _read_all(receive, limits)
        return Form(image=body)
    if len(content_type) > limits.max_header_bytes:
        raise UploadError(f"the Content-Type header is longer than {_size(limits.max_header_bytes)} (limit: {_key('max_header_bytes')})", status=431)
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise UploadError("malformed multipart/form-data: missing or invalid boundary")
    builder = _FormBuilder(limits)
    parser = MultipartParser(
        boundary, builder.callbacks(),
        max_header_count=limits.max_headers_per_part, max_header_size=limits.max_header_bytes,
    )
    async for chunk in _body_chunks(receive, body_limit, lambda: _body_too_large(limits)):
        # parsing runs in a worker thread: however hostile a chunk is, the event loop keeps serving
        await asyncio.to_thread(_write, parser, chunk)
    if parser.state != MultipartState.END:
        raise UploadError("malformed multipart/form-data body: it ends before its closing boundary")
    return builder.form


def _write(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except UploadError:
        raise
    except MultipartParseError as ex:
        message = str(ex)
        if "header" in message.lower() and ("exceed" in message.lower() or "too" in message.lower()):
            raise UploadError(
                f"a form part's headers are too large or too many ({message}; limits: {_key('max_header_bytes')}, "
                f"{_key('max_headers_per_part')})", status=431,
            ) from None
        raise UploadError(f"malformed multipart/form-data body ({message})") from None


async def _body_chunks(receive: Callable, limit: int, too_large: Callable[[], str]) -> AsyncIterator[bytes]:
    """The request body's non-empty chunks as they arrive; a 413 as soon as they pass ``limit`` bytes.

    Counted as received, whatever ``Content-Length`` claimed: the header is only an early refusal.
    """
    size = 0
    more = True
    while more:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise UploadError("the client went away before the body was complete")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise UploadError(too_large(), status=413)
        if chunk:
            yield chunk


async def _read_all(receive: Callable, limits: FormLimits) -> bytes:
    def too_large() -> str:
        return f"upload too large: the limit is {_size(limits.max_upload_bytes)} ({_key('max_upload_bytes')})"

    return b"".join([chunk async for chunk in _body_chunks(receive, limits.max_upload_bytes, too_large)])
