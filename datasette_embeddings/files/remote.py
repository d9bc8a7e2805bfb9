"""A remote Parquet file read piecewise with HTTP range requests.

A Parquet file ends with its footer (schema, row counts, key/value metadata),
and the footer says where everything else is.  To describe a file on a web
server, only its last few kilobytes are needed; this module gives pyarrow a
seekable file object whose reads become ``Range`` requests, counting every
byte it receives so callers (and tests) can see how little was transferred.

A server that ignores ``Range`` (answers 200 with the whole file) is refused
rather than silently downloaded, with a :class:`RemoteReadError`: ``info`` reports
it, while ``load``, which checks a URL's columns from its footer before the
download, takes it as "cannot tell" and downloads as before.
"""
from __future__ import annotations

import io
import re
import urllib.error
import urllib.request

from ..errors import RecordError

TIMEOUT = 30
#: the first request takes this much of the file's end: pyarrow's own first read of a
#: footer is 64 KiB, so one request usually answers everything ``info`` needs
TAIL_BYTES = 64 * 1024
USER_AGENT = "datasette-embeddings (footer reader)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class RemoteReadError(RecordError):
    """The server, not the file: unreachable, an HTTP error, or no usable range support.

    Kept apart from problems with the file's content, so a caller that only wanted
    a look at the footer before downloading (``load URL``) can fall back to the
    download when the server is the obstacle.
    """


class RangeFile(io.RawIOBase):
    """Read-only, seekable view of ``url``; each uncached read is one HTTP range request."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT, tail_bytes: int = TAIL_BYTES):
        super().__init__()
        self.url = url
        self.timeout = timeout
        self.bytes_received = 0
        self.requests = 0
        self._pos = 0
        # the tail is fetched first: its Content-Range gives the file size, and it holds the footer
        start, data, size = self._get(f"bytes=-{tail_bytes}")
        self.size = size
        self._cache_start = start
        self._cache = data

    # ------------------------------------------------------------ HTTP
    def _get(self, range_header: str) -> tuple[int, bytes, int]:
        request = urllib.request.Request(self.url, headers={"Range": range_header, "User-Agent": USER_AGENT})
        self.requests += 1
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as ex:
            if ex.code == 416:
                raise RemoteReadError("the server refused the byte range (HTTP 416): is the file empty?", source=self.url) from None
            raise RemoteReadError(f"could not read (HTTP {ex.code} {ex.reason})", source=self.url) from None
        except (urllib.error.URLError, OSError, ValueError) as ex:
            raise RemoteReadError(f"could not read ({getattr(ex, 'reason', ex)})", source=self.url) from None
        with response:
            if response.status != 206:
                # reading on would download the whole file: refuse instead
                raise RemoteReadError(
                    f"the server does not support HTTP range requests (answered {response.status} to a Range request), "
                    "so the footer cannot be read alone; download the file and run info on the copy",
                    source=self.url,
                )
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or match.group(3) == "*":
                raise RemoteReadError("the server's range answer has no usable Content-Range header", source=self.url)
            start, end, size = int(match.group(1)), int(match.group(2)), int(match.group(3))
            try:
                data = response.read(end - start + 1)
            except OSError as ex:
                raise RemoteReadError(f"could not read ({ex})", source=self.url) from None
            self.bytes_received += len(data)
            if len(data) != end - start + 1:
                raise RemoteReadError(f"the server sent {len(data)} bytes for a range of {end - start + 1}", source=self.url)
        return start, data, size

    # ------------------------------------------------------------ file protocol
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        n = max(0, min(n, self.size - self._pos))
        if n == 0:
            return b""
        start, end = self._pos, self._pos + n
        cache_end = self._cache_start + len(self._cache)
        if start >= self._cache_start and end <= cache_end:
            data = self._cache[start - self._cache_start:end - self._cache_start]
        else:
            got_start, data, _size = self._get(f"bytes={start}-{end - 1}")
            if got_start != start:
                raise RemoteReadError(f"the server answered a range from byte {got_start}, not {start}", source=self.url)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
