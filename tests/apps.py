from django.apps import AppConfig


class TestsConfig(AppConfig):
    name = "tests"
    label = "dt_tests"
    verbose_name = "Test fixtures"
