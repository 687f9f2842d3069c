"""The seed's example: compile an application on some node, store the artefact.

``compile`` stands in for real work (it sleeps for ``seconds``); the callback
``store_artefact`` keeps the result in Redis for 60 s under
``application-artefacts-<request id>``, as zlib-compressed JSON.
"""

from __future__ import annotations

import json
import socket
import time
import zlib

from distributed_tasks import PeriodicTask, distributed_task
from distributed_tasks.connection import get_redis

ARTEFACT_TTL = 60


def artefact_key(request_id: str) -> str:
    return f"application-artefacts-{request_id}"


@distributed_task
def compile(application_id: int, seconds: float = 1.0) -> dict:
    time.sleep(seconds)
    return {
        "application_id": application_id,
        "compiled_artefact": f"app-{application_id}.tar.gz",
        "host": socket.gethostname(),
    }


@distributed_task
def store_artefact(name: str, result: dict) -> None:
    payload = zlib.compress(json.dumps(result).encode())
    get_redis().set(artefact_key(name), payload, ex=ARTEFACT_TTL)


def load_artefact(request_id: str) -> dict | None:
    raw = get_redis().get(artefact_key(request_id))
    return json.loads(zlib.decompress(raw)) if raw else None


class BuildReport(PeriodicTask):
    """A report that carries its count along; declared in settings (every 2 s, the demo)."""

    def init(self, args: dict) -> dict:
        return {"reports": 0, "source": args["source"]}

    def execute(self, state: dict) -> dict:
        from distributed_tasks.nodes import current_node

        node = current_node()
        return {**state, "reports": state["reports"] + 1, "by": node.name if node else None}
