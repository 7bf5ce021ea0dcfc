"""Trace hooks: a user's callback told what a request is doing, as it does it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Trace", "emit"]

Trace = Callable[[str, dict[str, Any]], None]


def emit(trace: Trace, event: str, **info: Any) -> None:
    """Call a user's trace hook; a failing hook is the user's bug and propagates."""
    info["time"] = time.monotonic()
    trace(event, info)
