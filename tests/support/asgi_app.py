"""A small ASGI application for the hypercorn test server (tests/support/hypercorn.py).

It tells a test which protocol really carried the request (`scope["http_version"]`: "2"
for HTTP/2, "1.1" for HTTP/1.1) and what arrived, and serves bodies of any size. Only the
standard library is used: hypercorn imports it in its own process.

    /echo         200 JSON {"http_version", "method", "path" (with the query string),
                  "headers" ([name, value], as the server passed them), "body_length"}
    /bytes/N      200, N bytes, byte i = i % 251 (streamed in 64 KiB pieces)
    /delay/MS     /echo, answered after MS milliseconds
    anything else 404
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNK = 64 * 1024
_PATTERN = bytes(i % 251 for i in range(CHUNK + 251))
_NUMBERED = re.compile(r"/(bytes|delay)/([0-9]{1,10})")


async def _read_body(receive: Receive) -> int:
    """Consume the request body; its length."""
    length = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return length
        length += len(message.get("body", b""))
        if not message.get("more_body", False):
            return length


async def _start(send: Send, status: int, content_type: str, length: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(length).encode()),
            ],
        }
    )


async def _send_pattern(send: Send, size: int) -> None:
    offset = 0
    while offset < size:
        count = min(CHUNK, size - offset)
        start = offset % 251
        offset += count
        await send(
            {
                "type": "http.response.body",
                "body": _PATTERN[start : start + count],
                "more_body": offset < size,
            }
        )
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    body_length = await _read_body(receive)
    match = _NUMBERED.fullmatch(path)
    if match is not None and match[1] == "bytes":
        size = int(match[2])
        await _start(send, 200, "application/octet-stream", size)
        await _send_pattern(send, 0 if scope["method"] == "HEAD" else size)
        return
    if path != "/echo" and match is None:
        await _start(send, 404, "text/plain", 9)
        await send({"type": "http.response.body", "body": b"not found"})
        return
    if match is not None:  # /delay/MS
        await asyncio.sleep(int(match[2]) / 1000)
    query: bytes = scope.get("query_string", b"")
    full_path = path + ("?" + query.decode("latin-1") if query else "")
    body = json.dumps(
        {
            "http_version": scope["http_version"],
            "method": scope["method"],
            "path": full_path,
            "headers": [
                [name.decode("latin-1"), value.decode("latin-1")]
                for name, value in scope["headers"]
            ],
            "body_length": body_length,
        }
    ).encode()
    await _start(send, 200, "application/json", len(body))
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
