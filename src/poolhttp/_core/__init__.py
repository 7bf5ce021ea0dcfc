"""The sans-I/O core: pool bookkeeping, HTTP/1.1 framing and the DNS cache.

Nothing here imports socket, ssl, asyncio, threading or time; the clock arrives as `now`.
Both clients drive these same objects.
"""
