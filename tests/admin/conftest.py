"""Fixtures of the admin tests: staff users with chosen permissions (helpers: support.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission
from django.test import Client


@pytest.fixture
def staff_client(django_user_model) -> Callable[..., Client]:
    """``staff_client("view", "change")``: a logged-in staff user with those run permissions."""

    def make(*actions: str, username: str = "operator") -> Client:
        user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
        codenames = [f"{action}_taskrun" for action in actions]
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label="distributed_tasks", codename__in=codenames
            )
        )
        client = Client()
        client.force_login(user)
        return client

    return make
