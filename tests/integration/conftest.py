"""Fixtures of the integration tests that several modules use."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client


@pytest.fixture
def login(django_user_model):
    """A client logged in as a fresh user with the given permissions (and staff flag)."""

    def make(*codenames: str, staff: bool = False, superuser: bool = False) -> Client:
        user = django_user_model.objects.create_user(
            f"user{django_user_model.objects.count()}",
            password="pw",
            is_staff=staff or superuser,
            is_superuser=superuser,
        )
        for codename in codenames:
            user.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label="distributed_tasks", codename=codename
                )
            )
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make
