"""Bulk fetching: many requests through one client, bounded, lazily, results as they complete.

    async with poolhttp.AsyncClient() as client:
        async for result in poolhttp.fetch_many(client, urls, concurrency=64, per_host=8):
            ...

    with poolhttp.Client() as client:
        for result in poolhttp.fetch_many_sync(client, urls):
            ...

`fetch_distributed` spreads a run over a Dask cluster (the dask extra; docs/scale.md).

See docs/bulk.md for the design and the `poolhttp fetch` command built on it.
"""

from ._async import fetch_many
from ._distributed import DistributedFetch, fetch_distributed
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
    "DistributedFetch",
    "SyncResults",
    "fetch_distributed",
    "fetch_many",
    "fetch_many_sync",
]
