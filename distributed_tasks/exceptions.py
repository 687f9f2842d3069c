"""The exception family of the public API.

Every error a caller can see is a :class:`DistributedTasksError`, named for the
condition (no ``Error`` suffix, as Django 6's ``InvalidTask``), and its message
states the rule that was broken and the way out. Each also subclasses the
built-in exception a Python programmer would reach for (``ValueError`` for bad
input, ``LookupError`` for a missing thing), so generic handlers keep working.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ImproperlyConfigured


class DistributedTasksError(Exception):
    """Base class of every error raised by ``distributed_tasks``."""


class AlreadyRunning(DistributedTasksError):
    """A run of this name is already active (QUEUED or RUNNING) in the cluster.

    The seed's ``{:error, {:running, pid}}``: the caller learns which run holds
    the name and where, and can poll it or pass ``on_conflict="return_existing"``.
    """

    def __init__(
        self,
        name: str,
        run_id: str | None,
        node: str | None,
        *,
        task_list: str = "default",
        state: str = "RUNNING",
    ) -> None:
        self.name = name
        self.run_id = run_id
        self.node = node
        self.task_list = task_list
        self.state = state
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" on node {self.node!r}" if self.node else ""
        return (
            f"A run of {self.name!r} in task list {self.task_list!r} is already "
            f"{self.state}{where} (run {self.run_id}). Only one run of a name may be "
            "active at a time: poll get_status(name), or pass "
            "on_conflict='return_existing' to get its handle."
        )

    def __reduce__(self):  # keep it picklable for multiprocessing test helpers
        return (
            _rebuild_already_running,
            (type(self), self.name, self.run_id, self.node, self.task_list, self.state),
        )


def _rebuild_already_running(cls, name, run_id, node, task_list, state):
    return cls(name, run_id, node, task_list=task_list, state=state)


class NameReserved(AlreadyRunning):
    """A finished run still holds the name inside the cleanup window and ``reuse`` forbids reuse."""

    def _message(self) -> str:
        return (
            f"{self.name!r} in task list {self.task_list!r} finished {self.state} "
            f"(run {self.run_id}) and is kept for CLEANUP_TIMEOUT; the reuse policy "
            "forbids starting it again until then. Pass reuse='allow' to restart "
            "finished names at once."
        )


class NotCancellable(DistributedTasksError):
    """The run of this name cannot be cancelled: it already finished.

    The message says how and when it finished and what the caller can do instead.
    """

    def __init__(
        self,
        name: str,
        *,
        task_list: str = "default",
        run_id: str | None = None,
        node: str | None = None,
        state: str,
        finished_at: dt.datetime | None = None,
    ) -> None:
        self.name = name
        self.task_list = task_list
        self.run_id = run_id
        self.node = node
        self.state = str(state)
        self.finished_at = finished_at
        super().__init__(self._message())

    def _message(self) -> str:
        which = f"{self.name!r} in task list {self.task_list!r}"
        if self.state in ("DONE", "FAILED"):
            when = f" at {self.finished_at:%Y-%m-%d %H:%M:%S %Z}" if self.finished_at else ""
            return (
                f"{which} already finished {self.state}{when} (run {self.run_id}): there is "
                "nothing to cancel. get_status(name) (or dt_status) shows its outcome; "
                "start_async() runs the name again."
            )
        where = f" on node {self.node!r}" if self.node else ""
        return (
            f"{which} is {self.state}{where} (run {self.run_id}) and changed state while "
            "it was being cancelled; call cancel() again."
        )

    def __reduce__(self):  # picklable, as AlreadyRunning, for multiprocessing test helpers
        return (
            _rebuild_not_cancellable,
            (type(self), self.name, self.task_list, self.run_id, self.node, self.state,
             self.finished_at),
        )  # fmt: skip


def _rebuild_not_cancellable(cls, name, task_list, run_id, node, state, finished_at):
    return cls(name, task_list=task_list, run_id=run_id, node=node, state=state,
               finished_at=finished_at)  # fmt: skip


class Cancelled(DistributedTasksError):
    """The run was cancelled while it ran (``cancel()``).

    What ``on_failure`` receives for a cancelled run; a task that sees
    ``cancel_requested()`` may also raise it to stop at once.
    """


class NotRegistered(DistributedTasksError, LookupError):
    """The function or callback is not on the allow-list of registered tasks."""

    def __init__(self, ref: object) -> None:
        self.ref = ref
        super().__init__(
            f"{ref!r} is not a registered distributed task. Only functions decorated "
            "with @distributed_task (or DistributedTask subclasses) in a module that "
            "is imported at start-up (an installed app's tasks.py) may be run by name."
        )


class InvalidName(DistributedTasksError, ValueError):
    """A run name or task list is empty, too long, or holds non-printable characters."""


class InvalidOption(DistributedTasksError, ValueError):
    """An option of start_async()/start_many() has a value outside its allowed set."""


class InvalidState(DistributedTasksError, ValueError):
    """The run is in a state that does not allow the operation (retrying a DONE run)."""


class PayloadTooLarge(DistributedTasksError, ValueError):
    """The JSON of args and kwargs is larger than ``MAX_PAYLOAD_BYTES``."""


class NotSerializable(DistributedTasksError, TypeError):
    """Args, kwargs or a result cannot be encoded as strict JSON."""


class ClusterUnavailable(DistributedTasksError):
    """No live node can take the run, or Redis or the broker does not answer.

    The seed's ``{:error, {:distributed_tasks_not_available, :orchestrator_not_running}}``.
    ``started`` holds the handles of a batch's entries that went out before the failure
    (they run; the message names them); it is empty when nothing was started.
    """

    def __init__(self, *args: object, started: list | tuple = ()) -> None:
        super().__init__(*args)
        self.started = list(started)


class TaskNotFound(DistributedTasksError, LookupError):
    """No run of this name is known (it never ran, or its history was reaped)."""

    def __init__(self, name: str, task_list: str = "default") -> None:
        self.name = name
        self.task_list = task_list
        super().__init__(
            f"No run of {name!r} in task list {task_list!r} is known: it never ran, "
            "or its record is older than HISTORY_RETENTION."
        )


class InvalidConfiguration(DistributedTasksError, ImproperlyConfigured):
    """``DISTRIBUTED_TASKS`` (or a task declaration) cannot work as written."""
