from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "testproject.builds"
    label = "builds"
    verbose_name = "Builds (the seed's example)"
