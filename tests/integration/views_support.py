"""What the JSON views' tests share: the views' URLs and a POST carrying a CSRF token
(the ``login`` fixture is in ``conftest``)."""

from django.test import Client
from django.urls import reverse

TOKEN = "a" * 32  # a CSRF secret in the cookie, echoed in the header


def status_url(name: str, task_list: str = "default") -> str:
    return reverse("distributed_tasks:status", args=[task_list, name])


def cancel_url(name: str, task_list: str = "default") -> str:
    return reverse("distributed_tasks:cancel", args=[task_list, name])


def post_with_csrf(client: Client, url: str, data: dict | None = None):
    client.cookies["csrftoken"] = TOKEN
    return client.post(url, data or {}, HTTP_X_CSRFTOKEN=TOKEN)
