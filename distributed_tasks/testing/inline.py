"""The inline client: a started run executes at once, in-process, through the registry.

For tests that want the real work done without Redis, a database, a broker or
workers (Oban's ``testing: :inline``). Each run goes through the worker's guard,
so the function, ``callback(name, result)`` and the class hooks run and the
outcome is the one a worker would record; ``get_status`` then reports DONE or
FAILED (with the result, or the error type and message) for ``CLEANUP_TIMEOUT``.

What it does not do: it ignores ``countdown`` and does not enforce ``timeout``
(there is no pool process to stop), and it runs inside the caller's transaction
rather than after its commit. A run that starts other runs executes them before
its own start returns.
"""

from __future__ import annotations

from distributed_tasks.testing.recording import RecordingClient
from distributed_tasks.testing.records import Run


class InlineClient(RecordingClient):
    """Executes every run synchronously during ``start_async``/``start_many``."""

    default_node = "inline@testing"

    def _dispatch(self, runs: list[Run]) -> None:
        # A batch claims all its names first (so duplicates inside it are refused, as in
        # the real client), then runs them in order.
        for run in runs:
            self._execute(run)
