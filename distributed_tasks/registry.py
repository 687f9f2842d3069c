"""The allow-list of functions that may run by name.

A broker message or an admin action names a function by dotted path. Importing
whatever path arrives would let anyone who can write to the broker run any
code, so a path is only ever looked up here: functions land in the registry by
``@distributed_task`` (or by subclassing :class:`DistributedTask`) when their
module is imported at start-up, and ``resolve`` never imports anything.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, overload

from distributed_tasks.exceptions import InvalidConfiguration, NotRegistered

logger = logging.getLogger("distributed_tasks.registry")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """What a task instance and its hooks know about the run they serve."""

    run_id: str
    name: str
    task_list: str
    attempt: int
    node: str
    function: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


class DistributedTask:
    """Class form of a task, with GenTask's result hooks.

    Subclasses register themselves under ``module.QualName``; ``run`` does the
    work, and exactly one of ``on_success``/``on_failure``/``on_timeout`` is
    called once the outcome is known (in the worker). A hook that raises is
    logged: it never changes the recorded outcome of a failed run.
    """

    timeout: ClassVar[float | None] = None
    max_attempts: ClassVar[int | None] = None
    abstract: ClassVar[bool] = True
    info: RunInfo | None = None  # the run being served, set before ``run`` is called

    @property
    def data(self) -> dict[str, Any]:
        """The run's data key-values (see ``distributed_tasks.records.data_attr``)."""
        return self.info.data if self.info is not None else {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        if not cls.abstract:
            register(
                RegisteredTask(
                    path=path_of(cls),
                    factory=cls,
                    timeout=cls.timeout,
                    max_attempts=cls.max_attempts,
                )
            )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define run()")

    def report_progress(
        self, fraction: float | None = None, message: str | None = None, **data: Any
    ) -> None:
        """``distributed_tasks.report_progress``: how far the current run is."""
        from distributed_tasks.progress import report_progress

        report_progress(fraction, message, **data)

    def cancel_requested(self) -> bool:
        """``distributed_tasks.cancel_requested``: whether cancel() asked this run to stop."""
        from distributed_tasks.cancellation import cancel_requested

        return cancel_requested()

    def on_success(self, run: RunInfo, result: Any) -> None:
        """Called after ``run`` (and the callback) returned, before the run is DONE."""

    def on_failure(self, run: RunInfo, exc: BaseException) -> None:
        """Called after ``run`` raised, or its pool process died."""

    def on_timeout(self, run: RunInfo) -> None:
        """Called when the run exceeded its timeout."""


def invoke(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; an ``async def`` function runs to completion on a new event loop.

    The loop runs in this thread (``asyncio.run``), not in a helper thread as
    ``async_to_sync`` would, so a soft time limit interrupts the coroutine itself.
    """
    if inspect.iscoroutinefunction(func):
        from distributed_tasks import cancellation

        return asyncio.run(cancellation.watched(func(*args, **kwargs)))
    return func(*args, **kwargs)


# Integrations that wrap each call of a registered function: ``wrap(call, info)``
# returns the callable to use instead of ``call`` (the django.tasks backend passes a
# TaskContext and sends Django's signals this way). ``info`` is None for callbacks.
CallWrapper = Callable[[Callable[..., Any], "RunInfo | None"], Callable[..., Any]]
_call_wrappers: list[CallWrapper] = []


def add_call_wrapper(wrapper: CallWrapper) -> None:
    if wrapper not in _call_wrappers:
        _call_wrappers.append(wrapper)


class FunctionTask(DistributedTask):
    """Adapter that lets a plain decorated function run through the class protocol."""

    abstract = True

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def run(self, *args: Any, **kwargs: Any) -> Any:
        call: Callable[..., Any] = functools.partial(invoke, self.func)
        for wrap in _call_wrappers:
            call = wrap(call, self.info)
        return call(*args, **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredTask:
    """One allow-list entry: a path and how to build the object that runs it."""

    path: str
    factory: Callable[..., Any]
    timeout: float | None = None
    max_attempts: int | None = None
    is_function: bool = False

    def create(self) -> DistributedTask:
        if self.is_function:
            return FunctionTask(self.factory)
        return self.factory()


_registry: dict[str, RegisteredTask] = {}


def path_of(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def register(entry: RegisteredTask) -> RegisteredTask:
    if "<locals>" in entry.path:
        raise InvalidConfiguration(
            f"{entry.path} is defined inside a function; distributed tasks must be "
            "defined at module level so every worker can find them by path."
        )
    _registry[entry.path] = entry
    return entry


@overload
def distributed_task(func: F, /) -> F: ...
@overload
def distributed_task(
    *, timeout: float | None = None, max_attempts: int | None = None
) -> Callable[[F], F]: ...
def distributed_task(
    func: F | None = None,
    /,
    *,
    timeout: float | None = None,
    max_attempts: int | None = None,
) -> F | Callable[[F], F]:
    """Register ``func`` so it may be started (or used as a callback) by name.

    The function is returned unchanged (it can still be called directly), with
    its registered path in ``func.distributed_task_path``.
    """

    def decorate(f: F) -> F:
        entry = register(
            RegisteredTask(
                path=path_of(f),
                factory=f,
                timeout=timeout,
                max_attempts=max_attempts,
                is_function=True,
            )
        )
        f.distributed_task_path = entry.path  # type: ignore[attr-defined]
        return f

    return decorate(func) if func is not None else decorate


def resolve(ref: Any) -> RegisteredTask:
    """The entry for a registered callable, task class, or dotted path.

    Raises :class:`NotRegistered` for anything else; it never imports a path.
    """
    if isinstance(ref, str):
        path = ref
    elif isinstance(ref, type) and issubclass(ref, DistributedTask):
        path = path_of(ref)
    else:
        path = getattr(ref, "distributed_task_path", None)
    entry = _registry.get(path) if isinstance(path, str) else None
    if entry is None:
        raise NotRegistered(ref if isinstance(ref, str) else getattr(ref, "__qualname__", ref))
    return entry


def registered_paths() -> list[str]:
    return sorted(_registry)
