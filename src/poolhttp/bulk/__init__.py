"""Bulk fetching: many requests through one client, bounded, lazily, results as they complete.

    async with poolhttp.AsyncClient() as client:
        async for result in poolhttp.fetch_many(client, urls, concurrency=64, per_host=8):
            ...

    with poolhttp.Client() as client:
        for result in poolhttp.fetch_many_sync(client, urls):
            ...

See docs/bulk.md for the design and the `poolhttp fetch` command built on it.
"""

from ._async import fetch_many
from ._options import DEFAULT_BACKLOG, DEFAULT_CONCURRENCY, DEFAULT_PER_HOST
from ._sync import SyncResults, fetch_many_sync
from ._types import BulkItem, BulkRequest, BulkResult

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PER_HOST",
    "BulkItem",
    "BulkRequest",
    "BulkResult",
    "SyncResults",
    "fetch_many",
    "fetch_many_sync",
]
