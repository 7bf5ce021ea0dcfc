"""The one exception the command line turns into a message and an exit status."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_MALFORMED", "EXIT_USAGE", "CliError"]

EXIT_FAILED = 1  # the run broke down (database write failed, ...)
EXIT_USAGE = 2  # bad flags or unusable input: nothing was done
EXIT_MALFORMED = 3  # the run finished, but some input lines were malformed and skipped
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: stopped cleanly, results so far are saved


class CliError(Exception):
    """A problem the user can fix; its message is shown as is, without a traceback."""

    def __init__(self, message: str, *, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status
