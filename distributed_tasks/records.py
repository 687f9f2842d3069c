"""Task records (the Ruby ``task`` gem): data key-values, their accessors, and the
record's find / all / as_dict / from_dict.

A run carries ``data``: free JSON key-values given at start (``start_async(...,
data={...})``), kept on its ``TaskRun`` row and handed to the task. ``data_attr``
is the gem's ``data_attr_reader``: a class attribute that reads (and, on a row,
writes) one key, so ``task.external_host`` means ``task.data["external_host"]``.

```python
class FetchFile(DistributedTask):
    external_host = data_attr("external_host")
    filename = data_attr("filename", default="index.html")

    def run(self):
        download(self.external_host, self.filename)
```
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Self

from django.db import models

if TYPE_CHECKING:
    from distributed_tasks.models import TaskRun

_MISSING = object()


class data_attr:  # named like the gem's data_attr_reader, used like a field
    """Read ``instance.data[key]`` as an attribute; writable where ``data`` is (rows)."""

    def __init__(self, key: str | None = None, *, default: Any = _MISSING) -> None:
        self.key = key
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = self.key or name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        data = instance.data or {}
        if self.key in data:
            return data[self.key]
        if self.default is not _MISSING:
            return self.default
        raise AttributeError(
            f"{type(instance).__name__} has no data key {self.key!r} "
            f"(its data holds {sorted(data)}); pass it in start_async(..., data={{...}})."
        )

    def __set__(self, instance: Any, value: Any) -> None:
        if instance.data is None:
            instance.data = {}
        instance.data[self.key] = value


class TaskRecord:
    """The gem's record interface on ``TaskRun``: look a run up, list a task list's runs,
    and move a run to and from JSON-ready values (export, import, fixtures)."""

    if TYPE_CHECKING:  # what the model it is mixed into brings
        objects: Any
        _meta: Any

    @classmethod
    def find(cls, task_list: str, name: str) -> TaskRun:
        """The newest run of ``name`` (its active one, else the one queued last, as
        ``get_status`` reads it); raises ``TaskNotFound`` when there is none."""
        from distributed_tasks.exceptions import TaskNotFound
        from distributed_tasks.store import get_store

        run = get_store().newest(task_list, name)  # on DATABASE_ALIAS, as get_status reads
        if run is None:
            raise TaskNotFound(name, task_list)
        return run

    @classmethod
    def all(cls, task_list: str = "default") -> Iterator[TaskRun]:
        """Every run of a task list (on ``DATABASE_ALIAS``), streamed in chunks rather
        than loaded at once."""
        from distributed_tasks.store import get_store

        runs = get_store().runs.filter(task_list=task_list).order_by("queued_at")
        return runs.iterator(chunk_size=500)

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (ids as hex, times as ISO 8601)."""
        out: dict[str, Any] = {}
        for f in self._meta.concrete_fields:
            value = getattr(self, f.attname)
            if isinstance(value, uuid.UUID):
                value = value.hex
            elif isinstance(value, dt.datetime):
                value = value.isoformat()
            out[f.attname] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The unsaved run ``as_dict`` described (``save()`` stores it)."""
        fields = {f.attname: f for f in cls._meta.concrete_fields}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"Unknown TaskRun fields: {sorted(unknown)}")
        values = {}
        for name, value in data.items():
            if value is not None and isinstance(fields[name], models.DateTimeField):
                value = dt.datetime.fromisoformat(value)
            elif value is not None and isinstance(fields[name], models.UUIDField):
                value = uuid.UUID(value)
            values[name] = value
        return cls(**values)
