"""``<html lang="en">`` on every HTML page, Datasette's own included.

Datasette 0.65's ``base.html`` opens with a bare ``<html>``; screen readers then
guess the page language.  Rather than replace Datasette's base template, an ASGI
wrapper adds the attribute to the first ``<html>`` of each HTML response (the tag
is in the first body chunk Datasette sends) and corrects ``content-length``.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

BARE = b"<html>"


def with_lang(app: Callable, lang: str = "en") -> Callable:
    """Wrap an ASGI app so its HTML responses declare ``lang``."""
    tag = f'<html lang="{lang}">'.encode("ascii")

    async def wrapped(scope: dict, receive: Callable, send: Callable[[dict], Awaitable[Any]]) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        held: dict = {}

        async def patched_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.lower().startswith(b"text/html"):
                    held["start"] = message  # sent with the first body chunk, once we know its length
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                start = held.pop("start")
                body = message.get("body", b"")
                at = body.find(BARE, 0, 4096)
                if at != -1:
                    body = body[:at] + tag + body[at + len(BARE):]
                    grown = len(tag) - len(BARE)
                    start = {**start, "headers": [
                        (k, str(int(v) + grown).encode() if k.lower() == b"content-length" else v)
                        for k, v in start.get("headers") or []
                    ]}
                    message = {**message, "body": body}
                await send(start)
            await send(message)

        await app(scope, receive, patched_send)

    return wrapped
