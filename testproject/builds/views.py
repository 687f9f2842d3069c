"""The seed's controller: compile an application on the cluster, poll it by request id.

``POST /applications/<id>/compile`` starts ``tasks.compile`` under a fresh uuid4
hex name (the request id) with ``tasks.store_artefact`` as its callback, and
answers ``{"id": ..., "status": "building"}``. ``GET .../compile/<request id>``
answers from ``get_status``: building while QUEUED/RUNNING, the artefact the
callback stored in Redis once DONE, failed with the error once FAILED, 404 when
the name is unknown (never started, or finished more than CLEANUP_TIMEOUT ago).

The POST is exempt from CSRF: it is a machine-to-machine JSON API with no
session or cookie authentication, like the seed's Phoenix ``:api`` pipeline,
and nothing it receives becomes a function path. A service that authenticates
with cookies must keep Django's CSRF protection instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from distributed_tasks import ClusterUnavailable, State, get_status, start_async
from distributed_tasks.conf import get_settings
from testproject.builds import tasks

APPLICATION_ID = re.compile(r"[1-9][0-9]{0,17}")  # a positive integer that fits a bigint
REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as POST hands them out


def _reply(code: int = 200, /, **body: Any) -> JsonResponse:
    return JsonResponse(body, status=code)


def _not_allowed(request: HttpRequest, *allowed: str) -> JsonResponse | None:
    if request.method in allowed:
        return None
    use = " or ".join(allowed)
    response = _reply(405, error=f"{request.method} is not allowed here; use {use}.")
    response["Allow"] = ", ".join(allowed)
    return response


def _bad_application_id(application_id: str) -> JsonResponse | None:
    if APPLICATION_ID.fullmatch(application_id):
        return None
    return _reply(
        400, error=f"Application id {application_id!r} is not valid: use a positive whole number."
    )


@csrf_exempt
def start_compile(request: HttpRequest, application_id: str) -> JsonResponse:
    """Start a compile of the application; the answer's id is the name to poll."""
    error = _not_allowed(request, "POST") or _bad_application_id(application_id)
    if error:
        return error
    request_id = uuid.uuid4().hex
    try:
        start_async(
            tasks.compile,
            args=[int(application_id)],
            name=request_id,
            callback=tasks.store_artefact,
        )
    except ClusterUnavailable as exc:
        return _reply(503, status="unavailable", error=str(exc))
    return _reply(id=request_id, status="building")


def compile_status(request: HttpRequest, application_id: str, request_id: str) -> JsonResponse:
    """Where the compile ``request_id`` is: building, its artefact, failed, or unknown."""
    error = _not_allowed(request, "GET", "HEAD") or _bad_application_id(application_id)
    if error:
        return error
    if not REQUEST_ID.fullmatch(request_id):
        return _reply(
            400,
            error=f"Request id {request_id!r} is not valid: use the 32 hex digits "
            "that POST .../compile answered with.",
        )
    status = get_status(request_id)
    if status.state in (State.QUEUED, State.RUNNING):
        return _reply(id=request_id, status="building", data=None)
    if status.state == State.FAILED:
        return _reply(id=request_id, status="failed", error=status.error or status.reason)
    if status.state == State.DONE:
        return _artefact(request_id)
    return _reply(
        404,
        id=request_id,
        status="not_found",
        error=f"No compile {request_id} is known: it was never started, or it finished "
        f"more than {get_settings().CLEANUP_TIMEOUT:g} s ago. Start a new one with POST.",
    )


def _artefact(request_id: str) -> JsonResponse:
    try:
        artefact = tasks.load_artefact(request_id)
    except RedisError as exc:
        return _reply(503, id=request_id, status="unavailable", error=f"Redis: {exc}")
    if artefact is None:
        return _reply(
            410,
            id=request_id,
            status="expired",
            error=f"The artefact of {request_id} is kept for {tasks.ARTEFACT_TTL} s and has "
            "expired. Start a new compile with POST.",
        )
    return JsonResponse(artefact, safe=False)
