"""Task records (the Ruby ``task`` gem): data key-values and their accessors.

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

from typing import Any

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
