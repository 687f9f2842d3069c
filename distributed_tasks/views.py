"""JSON views: the status of a name, cluster health, and cancelling a run.

Every answer is JSON, errors included (``{"error": code, "detail": message}``), so
a client never has to parse an HTML error page. The views expose results and
cluster internals, so they check permissions the way the admin does:

- ``status``: an authenticated user with ``distributed_tasks.view_taskrun``;
- ``cancel``: ``distributed_tasks.change_taskrun``, POST only, CSRF-checked; with
  ``force=1`` also ``distributed_tasks.force_cancel_taskrun``;
- ``health``: public, but only ``{"status": ...}``; the details (hosts, pids, leader)
  go to staff users with ``view_taskrun``, the rule of the admin cluster page
  (``health.may_see_cluster``);
- ``metrics``: Prometheus text for the same users, or a request bearing
  ``METRICS_TOKEN``; never public.

A task list is one path segment, so one holding "/" is named in the query instead:
``status?task_list=<task_list>&name=<name>`` (``cancel`` takes them as form fields or
in the query). A path under ``status/`` or ``cancel/`` that names no run (an empty task
list or name) answers a JSON 404 too, not Django's HTML page.

Names and task lists from the URL are only ever looked up, never resolved as
function paths.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from distributed_tasks import api, metrics
from distributed_tasks.conf import get_settings
from distributed_tasks.exceptions import (
    AlreadyRunning,
    ClusterUnavailable,
    DistributedTasksError,
    InvalidName,
    NotCancellable,
    TaskNotFound,
)
from distributed_tasks.health import (
    CHANGE_PERMISSION,
    VIEW_PERMISSION,
    Status,
    check_health,
    may_see_cluster,
)
from distributed_tasks.resilience import DB_ERRORS
from distributed_tasks.types import State

View = Callable[..., JsonResponse]
FORCE_PERMISSION = "distributed_tasks.force_cancel_taskrun"


def error(status: int, code: str, detail: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def allow(*methods: str) -> Callable[[View], View]:
    """Like ``require_http_methods``, but the 405 has a JSON body (and an Allow header)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = error(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; use {' or '.join(methods)}.",
                )
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def require_permission(perm: str, doing: str) -> Callable[[View], View]:
    """403 with a JSON body unless the user is logged in and holds ``perm``."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            user = request.user
            if not user.is_authenticated:
                return error(
                    403,
                    "not_authenticated",
                    f"{doing} needs a logged-in user with the permission {perm}; log in first.",
                )
            if not user.has_perm(perm):
                return error(
                    403,
                    "permission_denied",
                    f"{doing} needs the permission {perm}; ask an administrator to grant it "
                    "(directly or through a group).",
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def csrf_json(view: View) -> View:
    """Django's CSRF check, answered as JSON instead of the HTML failure page."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        check = _CsrfCheck(lambda _request: None)  # type: ignore[arg-type]
        check.process_request(request)
        reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            return error(
                403,
                "csrf_failed",
                f"CSRF verification failed: {reason} Send the csrftoken cookie's value in the "
                "X-CSRFToken header (and, over HTTPS, a matching Referer or Origin).",
            )
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def api_errors(view: View) -> View:
    """The API's exceptions as JSON answers; their messages already state the rule."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        try:
            return view(request, *args, **kwargs)
        except InvalidName as exc:
            return error(400, "invalid_name", str(exc))
        except TaskNotFound as exc:
            return error(404, "not_found", str(exc), name=exc.name, task_list=exc.task_list)
        except AlreadyRunning as exc:
            return error(409, "conflict", str(exc), state=str(exc.state), run_id=exc.run_id)
        except NotCancellable as exc:
            return error(409, "not_cancellable", str(exc), state=exc.state, run_id=exc.run_id)
        except ClusterUnavailable as exc:
            return error(503, "unavailable", str(exc))
        except DistributedTasksError as exc:
            return error(400, "bad_request", str(exc))
        except DB_ERRORS:
            return error(503, "unavailable", "The database does not answer; try again shortly.")

    return wrapper


@never_cache
@csrf_exempt  # read-only: any other method gets the JSON 405 before anything runs
@allow("GET", "HEAD")
@require_permission(VIEW_PERMISSION, "Reading the status of a run")
@api_errors
def task_status(
    request: HttpRequest, task_list: str | None = None, name: str | None = None
) -> JsonResponse:
    """``GET status/<task_list>/<name>`` (or ``status?task_list=...&name=...``): the newest
    run of a name, as ``get_status``."""
    if task_list is None or name is None:
        task_list, name = _named_in(request.GET)
        if task_list is None or name is None:
            return not_found(request)
    status = api.get_status(name, task_list)
    if status.state == State.NOT_FOUND:
        raise TaskNotFound(name, task_list)
    return JsonResponse(asdict(status))


@never_cache
@csrf_exempt  # read-only, as above
@allow("GET", "HEAD")
def health(request: HttpRequest) -> JsonResponse:
    """``GET health``: 200 while the cluster can work (healthy, degraded), 503 when down.

    Anyone gets ``{"status": ...}`` (for load balancers); staff users who may view runs
    get the nodes, leader, run counts and problems as well.
    """
    reading = check_health()
    code = 503 if reading.status is Status.DOWN else 200
    if may_see_cluster(request.user):
        return JsonResponse(reading.as_dict(), status=code)
    return JsonResponse({"status": reading.status.value}, status=code)


@never_cache
@allow("POST")
@csrf_json
@require_permission(CHANGE_PERMISSION, "Cancelling a run")
@api_errors
def cancel(
    request: HttpRequest, task_list: str | None = None, name: str | None = None
) -> JsonResponse:
    """``POST cancel/<task_list>/<name>`` (or ``cancel`` with ``task_list`` and ``name`` as
    form fields or in the query): end the QUEUED run of a name, or ask the RUNNING one to
    stop (``force=1``: killed after CANCEL_GRACE), in the user's name (409 if it finished,
    404 if it never ran)."""
    if task_list is None or name is None:
        task_list, name = _named_in(request.POST, request.GET)
        if task_list is None or name is None:
            return not_found(request)
    force = _given(request.POST, request.GET)("force").lower() in ("1", "true", "yes", "on")
    if force and not request.user.has_perm(FORCE_PERMISSION):
        return error(
            403,
            "permission_denied",
            f"A forced cancel needs the permission {FORCE_PERMISSION}; ask an administrator "
            "to grant it, or cancel without force (the run is asked to stop).",
        )
    by = request.user.get_username()
    return JsonResponse(asdict(api.cancel(name, task_list, force=force, by=by)))


def _given(*sources: Any) -> Callable[[str], str]:
    """A parameter's value from the first of ``sources`` (form, query) that has it."""
    return lambda key: next((source[key] for source in sources if source.get(key)), "")


def _named_in(*sources: Any) -> tuple[str | None, str | None]:
    """The task list and the name of the query form; None for one not given or empty
    (as an empty path segment: nothing defaults, so a typo never names another run)."""
    given = _given(*sources)
    return given("task_list") or None, given("name") or None


def _may_scrape(request: HttpRequest) -> bool:
    token = get_settings().METRICS_TOKEN
    auth = request.headers.get("Authorization", "")
    if token and auth.startswith("Bearer ") and constant_time_compare(auth[7:], token):
        return True
    return may_see_cluster(request.user)


@never_cache
@csrf_exempt  # read-only, as above
@allow("GET", "HEAD")
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET metrics``: this process's counters and the cluster's gauges, for Prometheus."""
    if not _may_scrape(request):
        return error(
            403,
            "permission_denied",
            "Metrics need a staff user with the permission "
            f"{VIEW_PERMISSION}, or 'Authorization: Bearer <METRICS_TOKEN>' with the token "
            "set in DISTRIBUTED_TASKS['METRICS_TOKEN'].",
        )
    if not metrics.enabled():
        return error(
            404,
            "metrics_off",
            "Metrics are off: install prometheus_client (pip install "
            "'django-distributed-tasks[metrics]') and leave DISTRIBUTED_TASKS['METRICS'] true.",
        )
    from distributed_tasks import scrape

    body = scrape.render(scrape.local_collector(), scrape.ClusterCollector())
    return HttpResponse(body, content_type=scrape.CONTENT_TYPE)


@never_cache
@csrf_exempt  # answers nothing but the 404
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """``status/…`` or ``cancel/…`` that names no run: an empty task list or name."""
    return error(
        404,
        "not_found",
        f"{request.path} names no run: use status/<task_list>/<name> or "
        "cancel/<task_list>/<name>, with a task list and a name that are not empty (for "
        "a task list holding '/': status?task_list=<task_list>&name=<name>, and cancel "
        "with task_list and name as form fields).",
    )
