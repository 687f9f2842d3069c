"""The node's Celery consumer: every message on a node queue is run, or logged and dropped.

Anyone who can write to the broker can put anything on ``dt.node.<node>``. Celery
handles most bad messages itself, but some make its handler raise (a protocol-1
body naming an unknown task has no ``id``: ``KeyError``). Celery takes any error
there for a lost connection, reconnects, gets the same unacknowledged message
back and, after five restarts in a second, the worker exits; restarted, it reads
the same message and exits again. Here such a message is logged once and
acknowledged, so it is gone, and the node goes on consuming. Errors of the
broker connection itself still go to Celery, which reconnects as before.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

logger = logging.getLogger("distributed_tasks.worker")


def describe(message: Any) -> str:
    """A short, safe description of a message for the log (never its whole body)."""
    props = getattr(message, "properties", {}) or {}
    headers = getattr(message, "headers", None)
    task = headers.get("task") if isinstance(headers, dict) else None
    body = getattr(message, "body", b"")
    return (
        f"content type {getattr(message, 'content_type', None)!r}, task {task!r}, "
        f"{len(body or b'')} bytes, correlation id {props.get('correlation_id')!r}"
    )


class NodeConsumer(Consumer):
    """Celery's consumer, with a task handler that no message can make raise."""

    def create_task_handler(self, *args: Any, **kwargs: Any):
        handle = super().create_task_handler(*args, **kwargs)
        # kombu's Redis transport counts KeyError as a connection error: here it comes
        # from a message's missing field, and reconnecting would only redeliver it.
        broker_errors = tuple(
            e for e in (*self.connection_errors, *self.channel_errors) if e is not KeyError
        )

        def on_task_received(message: Any) -> None:
            try:
                handle(message)
            except broker_errors:
                raise  # the connection failed: Celery reconnects and redelivers
            except Exception as exc:
                logger.error(
                    "Dropping a message Celery could not handle (%s: %s): %s. It was not "
                    "sent by this cluster; restrict who can write to the broker.",
                    type(exc).__name__, exc, describe(message), extra={"action": "poison"},
                )  # fmt: skip
                if not message.acknowledged:
                    message.ack_log_error(logger, self.connection_errors)

        return on_task_received
